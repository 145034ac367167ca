"""Sparsity sweep: the same study at several target sparsities, gathered into one table and plot.

Each sparsity is an ordinary study (``tfcompress.study.run``) in its own sub-folder; the
built-in model is trained once and shared through one cache folder.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os

from tabulate import tabulate

from tfcompress.recipes.base import param_flags
from tfcompress.study import runner
from tfcompress.study.cache import prepare_output_dir
from tfcompress.study.config import StudyConfig, StudyError
from tfcompress.study.results import Results, write_atomic


@dataclasses.dataclass(frozen=True)
class SweepPoint:
    """One recipe at one target sparsity."""

    target: float
    recipe: str
    status: str
    sparsity: float | None  # measured in the .tflite
    metric: float | None
    gzip_bytes: int | None
    gzip_ratio: float | None  # vs the fp32 row of the same study
    error: str | None = None


def run(base: StudyConfig, sparsities: list[float], progress=None) -> tuple[list[SweepPoint], dict[float, Results]]:
    """Runs ``base`` once per target sparsity and writes sweep.json, sweep.md and sweep.png.

    ``base.recipes`` are the recipes swept (their sparsity comes from each
    point's target); files go under ``base.output_dir``.
    """
    if not sparsities:
        raise StudyError("Give at least one sparsity to sweep.")
    for s in sparsities:
        if not 0 <= s < 1:
            raise StudyError(f"Sparsity {s} is out of range; sparsities must be in [0, 1).")
    prepare_output_dir(base.output_dir)
    cache_dir = base.run.models_dir
    points, all_results = [], {}
    for target in sparsities:
        if progress:
            progress(f"== sparsity {target:g} ==")
        defaults = {name: dict(values) for name, values in base.recipe_defaults.items()}
        for owner, _ in param_flags()["sparsity"]:  # every recipe with a sparsity parameter
            defaults.setdefault(owner, {})["sparsity"] = target
        config = base.replace(
            recipe_defaults=defaults,
            cache_dir=cache_dir,
            output_dir=os.path.join(base.output_dir, f"sparsity_{target:g}"),
        )
        results = runner.run(config, progress)
        all_results[target] = results
        fp32 = results.baseline()
        for row in results.rows:
            if row is fp32:
                continue
            ratio = row.gzip_bytes / fp32.gzip_bytes if row.gzip_bytes and fp32 and fp32.gzip_bytes else None
            points.append(
                SweepPoint(
                    target,
                    row.recipe,
                    row.status.value,
                    row.extras.get("sparsity"),
                    row.metric,
                    row.gzip_bytes,
                    ratio,
                    row.error,
                )  # fmt: skip
            )
    write(points, all_results, base.output_dir)
    return points, all_results


def table_cells(points: list[SweepPoint]) -> tuple[list[str], list[list[str]]]:
    """The sweep table's headers and cells, one row per (target, recipe)."""
    headers = ["target", "recipe", "status", "sparsity", "accuracy", "gzip KB", "gzip x fp32"]
    rows = [
        [f"{p.target:g}", p.recipe, p.status, _f(p.sparsity, ".3f"), _f(p.metric, ".4f"),
         _f(p.gzip_bytes and p.gzip_bytes / 1024, ".1f"), _f(p.gzip_ratio, ".3f")]
        for p in points
    ]  # fmt: skip
    return headers, rows


def table(points: list[SweepPoint], fmt: str = "github") -> str:
    headers, rows = table_cells(points)
    return tabulate(rows, headers=headers, tablefmt=fmt, disable_numparse=True)


def _f(value, spec):
    return "" if value is None else f"{value:{spec}}"


def plot(points: list[SweepPoint], baseline_metric: float | None, path: str) -> None:
    """Accuracy vs sparsity and gzip KB vs sparsity, one line per recipe."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for recipe in dict.fromkeys(p.recipe for p in points):
        ok = [p for p in points if p.recipe == recipe and p.status == "ok"]
        if not ok:
            continue
        left.plot([p.target for p in ok], [p.metric for p in ok], "o-", label=recipe)
        right.plot([p.target for p in ok], [p.gzip_bytes / 1024 for p in ok], "o-", label=recipe)
    if baseline_metric is not None:
        left.axhline(baseline_metric, color="gray", linestyle="--", label="fp32")
    left.set_xlabel("target sparsity")
    left.set_ylabel("accuracy (.tflite, test split)")
    right.set_xlabel("target sparsity")
    right.set_ylabel("gzipped .tflite (KB)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Sparsity sweep")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    write_atomic(path, buf.getvalue())


def write(points: list[SweepPoint], all_results: dict[float, Results], output_dir: str) -> None:
    baseline = next(iter(all_results.values())).baseline() if all_results else None
    write_atomic(
        os.path.join(output_dir, "sweep.json"),
        json.dumps({"points": [dataclasses.asdict(p) for p in points]}, indent=2) + "\n",
    )
    write_atomic(os.path.join(output_dir, "sweep.md"), "# Sparsity sweep\n\n" + table(points) + "\n")
    plot(points, baseline.metric if baseline else None, os.path.join(output_dir, "sweep.png"))
