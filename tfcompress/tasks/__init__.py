"""The study's task families, one module each; importing this package registers them all.

base.py            Task, Metric, Score, Examples, TaskSetup, the registry
classification.py  image classifiers; top-1 accuracy
language.py        a character-level transformer; bits per character
detection.py       digits on canvases; COCO mAP (detector.py: the CenterNet-style model)
generative.py      a VAE's decoder; reconstruction PSNR
adaptation.py      lora: the language model adapted to another corpus
"""

from tfcompress.tasks.base import (
    Examples,
    Metric,
    Score,
    Task,
    TaskSetup,
    all_columns,
    get,
    metric,
    names,
    register,
)

# Registration order: the order of names().
# isort: off
from tfcompress.tasks import classification  # noqa: E402, F401
from tfcompress.tasks import language  # noqa: E402, F401
from tfcompress.tasks import detection  # noqa: E402, F401
from tfcompress.tasks import generative  # noqa: E402, F401
from tfcompress.tasks import adaptation  # noqa: E402, F401

# isort: on

__all__ = ["Examples", "Metric", "Score", "Task", "TaskSetup", "all_columns", "get", "metric", "names", "register"]
