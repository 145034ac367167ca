"""The data a study produces: one Row per (model, recipe), and results.json."""

from __future__ import annotations

import dataclasses
import enum
import json
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
    (tfcompress.measure.macs). ``extras`` holds recipe- and task-specific
    fields (their columns), written flat into the row's JSON. ``key`` is a
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
    metric_name: str | None = None
    metric: float | None = None
    agreement: float | None = None
    latency: list[LatencyStats] = dataclasses.field(default_factory=list)
    convert_s: float | None = None
    key: str | None = None
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    def latency_at(self, threads: int) -> LatencyStats | None:
        return next((s for s in self.latency if s.threads == threads), None)

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
    write_atomic(path, json.dumps(results.to_dict(), indent=2, allow_nan=False) + "\n")


def load(path: str) -> Results:
    try:
        with open(path, encoding="utf-8") as f:
            return Results.from_dict(json.load(f))
    except FileNotFoundError:
        raise ValueError(f"Results file {path!r} does not exist; run a study first or give its results.json.") from None
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path!r} is not a tfcompress results.json ({type(e).__name__}: {e}).") from None
