"""A row's per-example outputs on the test split, and what the other rows compute from the fp32 row's.

Agreement (top-1 equal to fp32's) and the paired bootstrap interval of the metric's difference need the
baseline's outputs. A recipe process computes them itself when the baseline ran before it
(job.measure_row); a study that runs its baseline beside the other rows computes them with ``compare``
once the baseline is done, from the outputs each row's process sends back. Both give the same numbers.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from tfcompress import tasks
from tfcompress.measure.evaluate import accuracy
from tfcompress.recipes.base import BASELINE
from tfcompress.study.results import Row


@dataclasses.dataclass(frozen=True, eq=False)  # arrays do not compare as one value
class Reference:
    """A row's per-example outputs on the test split; the fp32 row's are what the other rows compare with.

    Attributes:
      top1: top-1 predictions, for agreement (None where they have no meaning).
      examples: the metric's per-example contributions, for the paired bootstrap of the difference.
    """

    top1: np.ndarray | None = None
    examples: tasks.Examples | None = None

    @classmethod
    def of(cls, score: tasks.Score) -> Reference:
        return cls(score.predictions, score.examples)

    @property
    def empty(self) -> bool:
        return self.top1 is None and self.examples is None

    def save(self, path: str) -> None:
        """Writes an .npz (atomically) that ``load`` reads back, for another process."""
        arrays = {} if self.top1 is None else {"top1": self.top1}
        if self.examples is not None:
            arrays["examples_count"] = np.asarray(self.examples.count)
            arrays |= {f"examples.{name}": array for name, array in self.examples.arrays.items()}
        with open(path + ".tmp", "wb") as f:
            np.savez(f, **arrays)
        os.replace(path + ".tmp", path)

    @classmethod
    def load(cls, path: str) -> Reference:
        with np.load(path, allow_pickle=False) as f:
            top1 = f["top1"] if "top1" in f.files else None
            examples = None
            if "examples_count" in f.files:
                arrays = {k.removeprefix("examples."): f[k] for k in f.files if k.startswith("examples.")}
                examples = tasks.Examples(int(f["examples_count"]), arrays)
        return cls(top1, examples)


def compare(row: Row, own: Reference, reference: Reference, task_name: str, seed: int) -> None:
    """Fills a row's agreement and metric difference from its own outputs and ``reference`` (fp32's).

    Nothing to do for the baseline itself, or where either has no outputs (a row that failed before its
    metric, or fp32's); a row failed afterwards (a metric that is not finite) still gets what is finite.
    """
    if reference.empty or own.empty or row.recipe == BASELINE:
        return
    if own.top1 is not None and reference.top1 is not None:
        row.agreement = accuracy(own.top1, reference.top1)
    if own.examples is not None and reference.examples is not None:
        fill_intervals(row, tasks.get(task_name), own.examples, reference.examples, seed)


def fill_intervals(row: Row, task, examples: tasks.Examples, reference: tasks.Examples | None, seed: int) -> None:
    """The row's metric interval and, with fp32's examples, its difference's (the same bootstrap draws)."""
    intervals = task.intervals(examples, reference, seed=seed)
    row.metric_ci = None if intervals.metric is None else intervals.metric.to_list()
    if intervals.delta is not None:
        row.metric_delta_ci = intervals.delta.to_list()
        row.delta_within_noise = intervals.delta.contains(0.0)
