"""A test-only task, loaded with from_flat(plugins=("tests.plugin_tasks",)).

`nan_metric_for_test` is the classification task (same models, data and recipes) whose metric is always NaN,
as a diverged fine-tune's loss would be, so the tests can check that a study writes such a row as failed.
"""

import dataclasses

from tfcompress import tasks
from tfcompress.measure.evaluate import top1
from tfcompress.tasks.base import Metric, Score

NAME = "nan_metric_for_test"


def _score(outputs, dataset):
    return Score(float("nan"), {"nan_extra": float("nan")}, predictions=top1(outputs))


if NAME not in tasks.names():
    tasks.base.register(
        dataclasses.replace(
            tasks.get("classification"),
            name=NAME,
            description="test only: classification whose metric is NaN",
            metric=Metric("nan_accuracy", True, True, "test only: always NaN"),
            score=_score,
        )
    )
