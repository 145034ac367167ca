"""What a task family is: its data, built-in model, loss and metric; and the registry of tasks.

A study runs the same path for every task (recipe -> .tflite -> metric on the
.tflite -> latency -> report); a ``Task`` supplies the parts that differ:

- ``load_data(setup, model=None)``: the task's Dataset (x = the model's input,
  y = the training target of fine-tuning recipes);
- ``build(setup, dataset, verbose)``: a trained built-in model (the study
  caches it), or, for a task whose model lives in another cache entry
  (``caches_own_model``), ``(model, loaded_from_cache)``;
- ``score(outputs, dataset)``: the metric and its companions from the
  .tflite's outputs on the test split, and the metric's per-example
  contributions (``Examples``);
- ``resampled(examples, counts)``: the metric recomputed on bootstrap draws
  of the test examples (default: the mean of per-example values), from which
  every row's metric and its difference to fp32's get 95% intervals
  (``Task.intervals``, tfcompress.measure.bootstrap);
- ``loss`` and ``batch_size`` for fine-tuning recipes;
- ``options``: a frozen dataclass of the task's own settings (fields made with
  tfcompress.fields.param, so the script's flags derive from it);
- ``columns``: the extra columns its rows carry (e.g. detection's mAP@[.5:.95]).

Each family registers itself in its own module of this package. A task's
callables get a ``TaskSetup``: the study's choices that concern the task and
a ``ModelCache``, through which a task reaches another task's built-in model
(the generative task's judging classifier, lora's pretrained language model)
without knowing the study.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from tfcompress import data as data_lib
from tfcompress.fields import Column, by_flag, content_hash, resolved
from tfcompress.measure import bootstrap


@dataclasses.dataclass(frozen=True)
class Metric:
    """A task's headline metric: how it is shown and compared.

    Attributes:
      name: the row's metric_name.
      higher_is_better: False for losses such as bits per character.
      fraction: a fraction in [0, 1] (changes are shown in percentage points,
        and a tolerance is in points; otherwise in percent).
      description: one line for the report.
      notes: more lines for the report's "how to read it".
    """

    name: str
    higher_is_better: bool
    fraction: bool
    description: str
    notes: tuple[str, ...] = ()

    def drop(self, value: float, reference: float) -> float:
        """How much worse ``value`` is than ``reference``: in points for fractions, else percent of |reference|."""
        worse = (reference - value) if self.higher_is_better else (value - reference)
        if self.fraction:
            return 100.0 * worse
        return 100.0 * worse / abs(reference) if reference else (float("inf") if worse > 0 else 0.0)

    def tolerance(self, reference: float, points: float = 1.0, percent: float = 1.0) -> float:
        """How much worse than ``reference`` is within tolerance, in the metric's units: 1 point or 1%."""
        return points / 100 if self.fraction else abs(reference) * percent / 100

    def within(self, value: float, reference: float, points: float = 1.0, percent: float = 1.0) -> bool:
        """Whether ``value`` is no worse than ``reference`` by more than 1 point (fractions) or 1% (others)."""
        worse = reference - value if self.higher_is_better else value - reference
        return worse <= self.tolerance(reference, points, percent) + 1e-12

    @property
    def delta_scale(self) -> float:
        """What a difference is multiplied by in a row's ``metric_delta_ci``: 100 (points) for fractions, else 1."""
        return 100.0 if self.fraction else 1.0

    def delta(self, value: float, reference: float, interval: tuple[float, float] | None = None) -> str:
        """The change from the reference as the report shows it: '+0.30 pt' (fractions) or '-1.20%'.

        ``interval``: the difference's [low, high] as a row's ``metric_delta_ci`` holds it (points for
        fractions, else the metric's units), shown after it in the same units: '+0.30 pt [-0.20, +0.80]'.
        """
        scale, unit, spec = (100, " pt", "+.2f") if self.fraction else (1, "", "+.4g")
        if not self.fraction and reference:
            scale, unit, spec = 100 / abs(reference), "%", "+.2f"
        text = f"{(value - reference) * scale:{spec}}{unit}"
        if interval is None:
            return text
        low, high = (bound / self.delta_scale * scale for bound in interval)
        return f"{text} [{low:{spec}}, {high:{spec}}]"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"notes": list(self.notes)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Metric:
        return cls(d["name"], d["higher_is_better"], d["fraction"], d.get("description", ""), tuple(d.get("notes", ())))


@dataclasses.dataclass(frozen=True)
class Examples:
    """A metric's per-example contributions: what it is recomputed from on a resample of the test examples.

    Attributes:
      count: the test examples a resample draws from (images, text windows).
      arrays: named arrays the task's ``resampled`` reads; for a mean metric,
        ``values`` (count,). They travel between processes as .npz files.
    """

    count: int
    arrays: dict[str, np.ndarray]

    @classmethod
    def of_mean(cls, values: np.ndarray) -> Examples:
        """The contributions of a metric that is the mean of ``values`` (one per example)."""
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        return cls(len(values), {"values": values})


def resampled_mean(examples: Examples, counts: np.ndarray) -> np.ndarray:
    """A mean metric on bootstrap draws: ``counts`` (B, count) -> (B,) means of ``examples.arrays['values']``."""
    return bootstrap.mean_statistic(examples.arrays["values"])(counts)


@dataclasses.dataclass(frozen=True)
class Score:
    """What a task reads off a .tflite's outputs on the test split.

    Attributes:
      metric: the headline value.
      extras: more values for the row (e.g. perplexity, mAP@[.5:.95]).
      predictions: per-example discrete predictions that agreement with fp32
        is computed on; None where agreement has no meaning (boxes, images).
      examples: the metric's per-example contributions, for its bootstrap
        intervals; None where the task gives none.
    """

    metric: float
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)
    predictions: np.ndarray | None = None
    examples: Examples | None = None


@dataclasses.dataclass(frozen=True)
class Intervals:
    """A row's 95% bootstrap intervals (tfcompress.measure.bootstrap); None where they are not finite.

    Attributes:
      metric: of the row's metric, in its units.
      delta: of the row's metric minus the reference's, paired (the same
        draws of the test examples for both), in points for fractions and in
        the metric's units otherwise; None without a reference.
    """

    metric: bootstrap.Interval | None
    delta: bootstrap.Interval | None = None


class ModelCache(Protocol):
    """Trained built-in models, kept on disk (implemented by tfcompress.study.cache)."""

    folder: str

    def builtin(self, task: str, setup: TaskSetup, verbose: int = 0) -> tuple[Any, bool]:
        """The trained built-in model ``setup.model`` of ``task``, and whether it came from the cache."""
        ...


@dataclasses.dataclass(frozen=True)
class TaskSetup:
    """What a task's callables receive.

    Attributes:
      model: the built-in model's name (or the user's model path).
      dataset: the built-in dataset's name, used when ``data`` is None.
      data: the user's data file or folder, or None.
      seed: seeds the split, training and anything random.
      epochs: training epochs of a built-in model.
      options: the task's Options instance (None for a task without options).
      cache: the model cache, for a task that needs another task's model.
    """

    model: str = ""
    dataset: str = "mnist5k"
    data: str | None = None
    seed: int = 0
    epochs: int = 10
    options: Any = None
    cache: ModelCache | None = None


@dataclasses.dataclass(frozen=True)
class Task:
    """One task family. See the module docstring for the roles of the callables."""

    name: str
    description: str
    metric: Metric
    default_model: str
    builtin_models: tuple[str, ...]
    load_data: Callable[..., data_lib.Dataset]
    build: Callable[[TaskSetup, data_lib.Dataset, int], Any]
    score: Callable[[np.ndarray, data_lib.Dataset], Score]
    default_recipes: tuple[str, ...] = ()  # empty: every recipe of the default study
    loss: Callable[[], Any] | None = None  # None: sparse categorical cross-entropy
    batch_size: int = 64
    user_models: bool = True  # whether --model may be the user's own file
    caches_own_model: bool = False  # build caches its model itself and returns (model, loaded_from_cache)
    labels_are_classes: bool = False  # y are class ids the model's outputs must cover
    options: type | None = None  # the task's Options dataclass
    columns: tuple[Column, ...] = ()
    # (fp32 metric, dataset) -> a one-line warning when the baseline's metric looks wrong, else None
    check_baseline: Callable[[float, data_lib.Dataset], str | None] | None = None
    # (examples, counts (B, examples.count)) -> the metric on B bootstrap draws of the test examples
    resampled: Callable[[Examples, np.ndarray], np.ndarray] = resampled_mean

    def intervals(self, examples: Examples, reference: Examples | None = None, seed: int = 0) -> Intervals:
        """The metric's 95% interval and, paired with ``reference`` (fp32's), its difference's.

        Both come from the same bootstrap.RESAMPLES draws of the test examples, seeded by ``seed``.

        Raises:
          ValueError: ``reference`` counts other examples than ``examples``.
        """
        sources = [examples] if reference is None else [examples, reference]
        if reference is not None and reference.count != examples.count:
            raise ValueError(f"The reference has {reference.count} test examples; the row has {examples.count}.")
        statistics = [functools.partial(self.resampled, e) for e in sources]
        with np.errstate(invalid="ignore"):  # an infinite value (an exact image's PSNR) gives no interval
            values = bootstrap.resampled(statistics, examples.count, seed=seed)
            delta = None if reference is None else (values[0] - values[1]) * self.metric.delta_scale
        return Intervals(_finite_interval(values[0]), None if delta is None else _finite_interval(delta))

    def make_options(self, overrides: dict[str, Any] | None = None) -> Any:
        """The task's Options with ``overrides`` applied (None for a task without options).

        Raises:
          ValueError: an override names no option of this task, or has a bad value.
        """
        if self.options is None:
            if overrides:
                raise ValueError(f"Task {self.name!r} takes no options, got {', '.join(sorted(overrides))}.")
            return None
        names = {f.name for f in dataclasses.fields(self.options)}
        unknown = sorted(set(overrides or {}) - names)
        if unknown:
            raise ValueError(f"Task {self.name!r} has no option {unknown[0]!r}; its options are: {', '.join(names)}.")
        return self.options(**(overrides or {}))

    def cache_name(self, model: str, dataset: data_lib.Dataset, setup: TaskSetup) -> str:
        """The cache file stem of a trained built-in model: everything that changes its weights.

        The user's data file and any file option (a corpus) count by content,
        so editing one in place trains a new model.
        """
        shape = "x".join(str(d) for d in dataset.input_shape)
        data_name = re.sub(r"[^\w.-]+", "_", dataset.name)
        stem = f"{model}-{data_name}-{shape}-c{dataset.num_classes}-e{setup.epochs}-s{setup.seed}"
        return f"{stem}-{fingerprint(setup)[:10]}"


def _finite_interval(values: np.ndarray) -> bootstrap.Interval | None:
    """The percentile interval of bootstrap values, or None when any is NaN or infinite (an exact image's PSNR)."""
    return bootstrap.percentile_interval(values) if np.all(np.isfinite(values)) else None


def fingerprint(setup: TaskSetup) -> str:
    """A digest of the task's data: the user's data by content, or the built-in set's name; and its options."""
    source = {"data_sha256": content_hash(setup.data)} if setup.data else {"dataset": setup.dataset}
    text = json.dumps({"source": source, "options": resolved(setup.options)}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


_TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    if task.name in _TASKS:
        raise ValueError(f"Task {task.name!r} is already registered.")
    _TASKS[task.name] = task
    return task


def names() -> tuple[str, ...]:
    return tuple(_TASKS)


def get(name: str) -> Task:
    try:
        return _TASKS[name]
    except KeyError:
        raise ValueError(f"Unknown task {name!r}; choose one of: {', '.join(_TASKS)}.") from None


def metric(name: str | None) -> Metric | None:
    """The Metric of a row's metric_name, or None for a name no task uses."""
    return next((t.metric for t in _TASKS.values() if t.metric.name == name), None)


def all_columns() -> list[Column]:
    """Every column a registered task declares, in registration order."""
    return list(dict((c.key, c) for t in _TASKS.values() for c in t.columns).values())


def option_flags() -> dict[str, list[tuple[str, dataclasses.Field]]]:
    """Flag name -> [(task name, Options field)] for every option of every registered task."""
    return by_flag((task.name, task.options) for task in _TASKS.values())
