"""What the user asks of the file to ship: limits on quality loss, size and latency, and what to optimize.

A trial's figures come from its study row, measured on the .tflite: ``drop``
is how much worse its metric is than fp32's, in points for fractions
(accuracy, mAP) and in percent of fp32's value otherwise (bits per char,
PSNR); positive is worse, whichever way the metric points.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from tfcompress.tasks.base import Metric

OBJECTIVES = ("size", "gzip", "latency", "metric")


class AdviseError(ValueError):
    """An advisor that cannot start: bad constraints or options."""


@dataclasses.dataclass(frozen=True)
class Constraints:
    """Limits (None: no limit) and the objective among the feasible.

    Attributes:
      max_drop: the most the metric may get worse than fp32's (points for fractions, percent otherwise).
      max_size_kb: the .tflite file's size limit, in KB (1024 bytes).
      max_gzip_kb: the gzipped file's size limit, in KB.
      max_latency_ms: the median latency limit at the study's first thread count and runtime.
      objective: what to minimize among the feasible: size, gzip, latency; or metric (the smallest drop).
    """

    max_drop: float | None = None
    max_size_kb: float | None = None
    max_gzip_kb: float | None = None
    max_latency_ms: float | None = None
    objective: str = "size"

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise AdviseError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}.")
        for name in ("max_size_kb", "max_gzip_kb", "max_latency_ms"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise AdviseError(f"{name} must be > 0, got {value}; leave it out for no limit.")
        if self.max_drop is not None and not math.isfinite(self.max_drop):
            raise AdviseError(f"max_drop must be a finite number, got {self.max_drop}.")

    def limits(self) -> dict[str, float]:
        """{figure: limit} of the limits given, in a fixed order."""
        pairs = [("drop", self.max_drop), ("size_kb", self.max_size_kb), ("gzip_kb", self.max_gzip_kb),
                 ("latency_ms", self.max_latency_ms)]  # fmt: skip
        return {k: v for k, v in pairs if v is not None}

    def describe(self) -> str:
        words = {"drop": "metric drop <= {}", "size_kb": "size <= {} KB", "gzip_kb": "gzip <= {} KB",
                 "latency_ms": "latency <= {} ms"}  # fmt: skip
        return ", ".join(words[k].format(f"{v:g}") for k, v in self.limits().items()) or "no limits"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def drop_unit(metric: dict) -> str:
    return "pt" if metric.get("fraction") else "%"


def drop(value: float, base: float, metric: dict) -> float:
    """How much worse ``value`` is than ``base``: points for fractions, percent of |base| otherwise."""
    return Metric(metric["name"], metric.get("higher_is_better", True), metric.get("fraction", False), "").drop(
        value, base
    )


def figures(row: dict, base: dict, metric: dict, threads: int, runtime: str) -> dict[str, Any]:
    """A row's figures (a results.json row dict against the fp32 row's): metric, drop, sizes, latency."""
    latency = next((s for s in row.get("latency") or [] if s["threads"] == threads and s["runtime"] == runtime), None)
    out = {
        "metric": row.get("metric"),
        "drop": drop(row["metric"], base["metric"], metric) if row.get("metric") is not None else None,
        "size_kb": row["size_bytes"] / 1024 if row.get("size_bytes") else None,
        "gzip_kb": row["gzip_bytes"] / 1024 if row.get("gzip_bytes") else None,
        "size_x": row["size_bytes"] / base["size_bytes"] if row.get("size_bytes") else None,
        "gzip_x": row["gzip_bytes"] / base["gzip_bytes"] if row.get("gzip_bytes") else None,
        "latency_ms": latency["median_ms"] if latency else None,
        "latency_ci_ms": [latency.get("ci_low_ms"), latency.get("ci_high_ms")] if latency else None,
        "overhead_bound": latency.get("overhead_bound") if latency else None,
    }
    delta = row.get("metric_delta_ci")
    if delta and row.get("metric") is not None:  # the drop's interval, in the drop's units
        scale = 1.0 if metric.get("fraction") else 100.0 / abs(base["metric"] or 1.0)
        sign = -1.0 if metric.get("higher_is_better", True) else 1.0
        out["drop_ci"] = sorted([sign * delta[0] * scale, sign * delta[1] * scale])
    return out


def misses(fig: dict, c: Constraints) -> dict[str, float]:
    """{figure: how far over its limit} for each limit the figures break (a figure missing breaks it)."""
    out = {}
    for key, limit in c.limits().items():
        value = fig.get(key)
        if value is None:
            out[key] = math.inf
        elif value > limit:
            out[key] = value - limit
    return out


def violations(fig: dict, c: Constraints) -> list[float]:
    """Optuna's constraint values (feasible when all <= 0), one per limit, scaled by the limit."""
    out = []
    for key, limit in c.limits().items():
        value = fig.get(key)
        scale = max(abs(limit), 1.0) if key == "drop" else limit
        out.append(1e6 if value is None else (value - limit) / scale)
    return out


def objective_values(fig: dict, c: Constraints) -> list[float]:
    """The two values Optuna minimizes: the objective's figure, then the drop (or size, when metric is the goal)."""
    key = {"size": "size_kb", "gzip": "gzip_kb", "latency": "latency_ms", "metric": "drop"}[c.objective]
    second = "size_kb" if c.objective == "metric" else "drop"
    return [_value(fig.get(key)), _value(fig.get(second))]


def _value(v) -> float:
    return float(v) if v is not None and math.isfinite(v) else 1e12


def better(a: dict, b: dict, c: Constraints) -> bool:
    """Whether figures ``a`` beat ``b`` on the objective (ties: the smaller drop, then the smaller file)."""
    return (objective_values(a, c), _value(a.get("size_kb"))) < (objective_values(b, c), _value(b.get("size_kb")))


def closeness(fig: dict, c: Constraints) -> float:
    """How far a trial is from feasible: its misses, each relative to its limit, summed (0 feasible)."""
    total = 0.0
    for key, amount in misses(fig, c).items():
        limit = c.limits()[key]
        total += amount / (max(abs(limit), 1.0) if key == "drop" else limit)
    return total


def describe_misses(fig: dict, c: Constraints, unit: str) -> str:
    units = {"drop": f" {unit}", "size_kb": " KB", "gzip_kb": " KB", "latency_ms": " ms"}
    names = {"drop": "metric drop", "size_kb": "size", "gzip_kb": "gzip size", "latency_ms": "latency"}
    parts = []
    for key, amount in misses(fig, c).items():
        if math.isinf(amount):
            parts.append(f"{names[key]} not measured")
        else:
            parts.append(f"{names[key]} {fig[key]:.4g}{units[key]} is {amount:.3g}{units[key]} over")
    return "; ".join(parts)
