"""The data a study produces: one Row per (model, recipe), and results.json."""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import numbers
import os
import tempfile
from typing import Any

from tfcompress.measure.latency import LatencyStats
from tfcompress.recipes.base import BASELINE

SCHEMA_VERSION = 1


class Status(str, enum.Enum):
    OK = "ok"
    FAILED = "failed"  # the reason is in Row.error
    NOT_APPLICABLE = "not_applicable"  # the reason is in Row.error


@dataclasses.dataclass
class Row:
    """One compressed model and its measurements.

    Sizes are of the .tflite file; ``metric`` is computed by running that file
    in the interpreter on the whole test split; ``agreement`` is the fraction
    of test examples whose top-1 equals the fp32 model's. ``macs`` are the
    multiply-accumulates of one invoke, counted from the .tflite graph
    (tfcompress.measure.macs). ``metric_ci`` and ``metric_delta_ci`` are 95%
    bootstrap intervals over the test examples (Task.intervals): of the
    metric, and of its difference to the fp32 row's on the same resampled
    examples, in percentage points for fractions (as the report shows the
    difference) and in the metric's units otherwise; ``delta_within_noise``
    says the latter holds 0, so the test split cannot tell the row from fp32.
    ``extras`` holds recipe- and task-specific fields (their columns),
    written flat into the row's JSON. ``key`` is a
    digest of everything that decides the row's result (tfcompress.study.runner):
    --resume keeps a finished row only when its key is unchanged.
    """

    task: str
    model: str
    recipe: str
    status: Status = Status.OK
    error: str | None = None
    tflite_path: str | None = None  # relative to the study's output directory
    size_bytes: int | None = None
    gzip_bytes: int | None = None
    params: int | None = None
    bytes_per_param: float | None = None
    macs: int | None = None
    compute_dtype: str | None = None  # the data type most MACs run in (tfcompress.measure.macs.compute_dtype)
    metric_name: str | None = None
    metric: float | None = None
    agreement: float | None = None
    metric_ci: list[float] | None = None  # [low, high]: the metric's 95% bootstrap interval, in its units
    metric_delta_ci: list[float] | None = None  # of metric - fp32's, paired; points for fractions
    delta_within_noise: bool | None = None  # whether metric_delta_ci holds 0
    latency: list[LatencyStats] = dataclasses.field(default_factory=list)
    convert_s: float | None = None
    key: str | None = None
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    def latency_at(self, threads: int, runtime: str | None = None) -> LatencyStats | None:
        """The latency at a thread count and runtime (None: the first runtime measured at that count)."""
        return next((s for s in self.latency if s.threads == threads and runtime in (None, s.runtime)), None)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extras"}
        d["status"] = self.status.value
        d["latency"] = [s.to_dict() for s in self.latency]
        d.update(self.extras)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Row:
        names = {f.name for f in dataclasses.fields(cls)} - {"extras"}
        kwargs = {k: v for k, v in d.items() if k in names}
        kwargs["status"] = Status(kwargs.get("status", "ok"))
        kwargs["latency"] = [LatencyStats.from_dict(s) for s in kwargs.get("latency") or []]
        return cls(**kwargs, extras={k: v for k, v in d.items() if k not in names})


def _not_finite(value: Any) -> bool:
    """A real number (Python or numpy, not an int or bool) that is NaN or infinite."""
    return isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral) and not math.isfinite(value)


def _nulled(value: Any, name: str, reasons: list[str]) -> Any:
    """``value`` with every non-finite number in it (nested in dicts and lists too) as None, each named."""
    if _not_finite(value):
        reasons.append(f"{name} is {float(value)} (not finite)")
        return None
    if isinstance(value, dict):
        return {k: _nulled(v, f"{name}.{k}", reasons) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_nulled(v, f"{name}[{i}]", reasons) for i, v in enumerate(value))
    return value


def fail_non_finite(row: Row) -> Row:
    """Writes every metric, extra column value and latency figure of ``row`` that is NaN or inf as None.

    Such a value (a diverged fine-tune's loss, the PSNR of an exact copy) has
    no place in results.json, which is strict JSON. The row becomes FAILED,
    its error naming each value ("metric accuracy is nan (not finite)") after
    any error it already had. Every row passes through here: when a job
    finishes (in whichever process), when the study records it, and when
    results.json is saved; a second call finds nothing. Returns the row.
    """
    reasons: list[str] = []
    for field in dataclasses.fields(row):
        if field.name not in ("extras", "latency"):
            name = f"metric {row.metric_name}" if field.name == "metric" and row.metric_name else field.name
            setattr(row, field.name, _nulled(getattr(row, field.name), name, reasons))
    row.extras = {key: _nulled(value, key, reasons) for key, value in row.extras.items()}
    latency = []
    for stats in row.latency:
        found = len(reasons)
        where = f"latency at {stats.threads} thread(s): "
        values = {f.name: _nulled(getattr(stats, f.name), where + f.name, reasons) for f in dataclasses.fields(stats)}
        latency.append(dataclasses.replace(stats, **values) if len(reasons) > found else stats)
    row.latency = latency
    if reasons:
        row.status = Status.FAILED
        row.error = "; ".join([row.error, *reasons] if row.error else reasons)
    return row


@dataclasses.dataclass
class Results:
    """Everything results.json holds.

    ``columns`` (the extra columns the rows' recipes and task declare, as
    tfcompress.fields.Column dicts) and ``metrics`` (metric name -> how it is
    shown and compared, tfcompress.tasks.Metric dicts) let a report render the
    file without the registries: a plugin's columns included. Files written
    before they existed have neither; readers fall back to the registries.
    """

    config: dict[str, Any]
    environment: dict[str, Any]
    rows: list[Row] = dataclasses.field(default_factory=list)
    schema_version: int = SCHEMA_VERSION
    columns: list[dict[str, Any]] | None = None
    metrics: dict[str, dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {
            "schema_version": self.schema_version,
            "config": self.config,
            "environment": self.environment,
        }
        if self.columns is not None:
            d["columns"] = self.columns
        if self.metrics is not None:
            d["metrics"] = self.metrics
        return d | {"rows": [r.to_dict() for r in self.rows]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Results:
        version = d.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(f"results.json has schema_version {version!r}; this tfcompress reads {SCHEMA_VERSION}.")
        rows = [Row.from_dict(r) for r in d["rows"]]
        return cls(d.get("config", {}), d.get("environment", {}), rows, version, d.get("columns"), d.get("metrics"))

    def baseline(self, model: str | None = None, task: str | None = None) -> Row | None:
        """The fp32 row of a model (the reference for ratios and agreement)."""
        for row in self.rows:
            if row.recipe == BASELINE and (model is None or row.model == model) and (task is None or row.task == task):
                return row
        return None


def write_atomic(path: str, data: bytes | str) -> None:
    """Writes a file so that readers see the old content or the new, never a part.

    The data goes to a temporary file in the same folder, is flushed to disk,
    and is renamed over the target.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    mode = "wb" if isinstance(data, (bytes, bytearray)) else "w"
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(fd, mode) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save(results: Results, path: str) -> None:
    """Writes results.json atomically; a row holding a NaN or inf is first failed (``fail_non_finite``)."""
    for row in results.rows:
        fail_non_finite(row)
    write_atomic(path, json.dumps(results.to_dict(), indent=2, allow_nan=False) + "\n")


def load(path: str) -> Results:
    try:
        with open(path, encoding="utf-8") as f:
            return Results.from_dict(json.load(f))
    except FileNotFoundError:
        raise ValueError(f"Results file {path!r} does not exist; run a study first or give its results.json.") from None
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path!r} is not a tfcompress results.json ({type(e).__name__}: {e}).") from None
