"""The whole study: every task family with its defaults, and one combined report.

``run_all(config)`` runs one study per task (classification, detection,
generative, language, lora) into OUTPUT_DIR/<task>/, sharing one model cache,
and writes OUTPUT_DIR/overview.md: a summary table, then each task's table.
The summary gives, per task, the largest size reduction and the largest
latency reduction among the rows whose quality stays within 1 point (for
fractions such as accuracy and mAP) or 1% (for other metrics) of fp32's.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable

from tabulate import tabulate

from tfcompress import tasks
from tfcompress.study import report as report_lib
from tfcompress.study import runner
from tfcompress.study.cache import prepare_output_dir
from tfcompress.study.results import Results, write_atomic

# The order of the combined report.
ALL_TASKS = ("classification", "detection", "generative", "language", "lora")


@dataclasses.dataclass
class TaskOutcome:
    """One task's study: its results, or why it could not run; and its wall time."""

    task: str
    results: Results | None
    error: str | None
    wall_s: float


def run_all(config, progress: Callable[[str], None] | None = None, task_names=ALL_TASKS) -> list[TaskOutcome]:
    """Runs each task's default study and writes OUTPUT_DIR/overview.md.

    Args:
      config: a StudyConfig whose shared settings (threads, runs, epochs,
        seed, ...) every task uses; its task, model, data and recipes are
        replaced by each task's defaults.
      progress: called with one line of text per step.
      task_names: the tasks to run, in report order.

    Returns:
      One outcome per task. A task that cannot start is an outcome with its
      error; the others still run.
    """
    progress = progress or (lambda _: None)
    prepare_output_dir(config.output_dir)
    shared_cache = config.run.models_dir  # generative reuses the classifier, lora the language model
    outcomes = []
    for name in task_names:
        task_config = config.replace(
            task=name, model="", recipes=(), data=None,
            output_dir=os.path.join(config.output_dir, name), cache_dir=shared_cache,
        )  # fmt: skip
        progress(f"=== task {name}: {tasks.get(name).description} ===")
        start = time.perf_counter()
        try:
            results, error = runner.run(task_config, progress=progress), None
        except Exception as e:  # bad data or model, or a crash while training: the other tasks still run
            results, error = None, f"{type(e).__name__}: {' '.join(str(e).split())}"
            progress(f"task {name} could not run: {error}")
        outcomes.append(TaskOutcome(name, results, error, time.perf_counter() - start))
    write_atomic(os.path.join(config.output_dir, "overview.md"), to_markdown(outcomes))
    return outcomes


def best_rows(results: Results) -> dict:
    """The smallest file and the fastest model whose quality is within tolerance of fp32.

    Returns {"fp32": row, "size": row or None, "latency": row or None, "threads", "tolerance", "noise"}; rows
    are compared at the lowest measured thread count. ``tolerance`` is how much worse than fp32's metric a
    row may be, and ``noise`` the half-width of fp32's metric's 95% bootstrap interval (None if unknown),
    both in the metric's units: when noise exceeds tolerance, the test split cannot resolve the tolerance.
    """
    fp32 = results.baseline()
    if fp32 is None or not fp32.ok or fp32.metric is None:
        return {"fp32": fp32, "size": None, "latency": None}
    metric = tasks.metric(fp32.metric_name)
    noise = (fp32.metric_ci[1] - fp32.metric_ci[0]) / 2 if fp32.metric_ci else None
    threads = min((s.threads for s in fp32.latency), default=None)
    good = [r for r in results.rows if r.ok and r.metric is not None and metric.within(r.metric, fp32.metric)]
    smallest = min(good, key=lambda r: (r.size_bytes, r.recipe != "fp32"), default=None)
    timed = [r for r in good if r.latency_at(threads)]
    fastest = min(timed, key=lambda r: (r.latency_at(threads).median_ms, r.recipe != "fp32"), default=None)
    return {"fp32": fp32, "size": smallest, "latency": fastest, "threads": threads,
            "tolerance": metric.tolerance(fp32.metric), "noise": noise}  # fmt: skip


def summary_table(outcomes: list[TaskOutcome]) -> tuple[list[str], list[list[str]]]:
    """Per task: fp32 quality, then the largest size and latency reductions within tolerance."""
    headers = ["task", "model", "metric", "fp32", "fp32 noise", "tolerance", "smallest within tolerance", "size x fp32",
               "metric of smallest", "fastest within tolerance", "speed-up", "metric of fastest", "rows ok / all",
               "wall s"]  # fmt: skip
    cells = []
    for outcome in outcomes:
        if outcome.results is None:
            cells.append([outcome.task] + [""] * 11 + ["could not run", f"{outcome.wall_s:.0f}"])
            continue
        best = best_rows(outcome.results)
        fp32, smallest, fastest = best["fp32"], best["size"], best["latency"]
        rows = outcome.results.rows
        line = [outcome.task, rows[0].model if rows else ""]
        if fp32 is None or not fp32.ok:
            line += [""] * 10
        else:
            metric = tasks.metric(fp32.metric_name)
            arrow = "higher is better" if metric.higher_is_better else "lower is better"
            tolerance = "1 pt" if metric.fraction else "1%"
            if best["noise"] is not None and best["noise"] > best["tolerance"]:
                tolerance += " (tighter than the noise)"
            line += [f"{fp32.metric_name} ({arrow})", f"{fp32.metric:.4f}", _noise(best["noise"], fp32.metric, metric),
                     tolerance]  # fmt: skip
            line += [smallest.recipe, f"{smallest.size_bytes / fp32.size_bytes:.3f}", f"{smallest.metric:.4f}"]
            t = best["threads"]
            if fastest is not None and t is not None:
                speedup = fp32.latency_at(t).median_ms / fastest.latency_at(t).median_ms
                line += [fastest.recipe, f"{speedup:.2f}x ({t}t)", f"{fastest.metric:.4f}"]
            else:
                line += ["", "", ""]
        line += [f"{sum(r.ok for r in rows)} / {len(rows)}", f"{outcome.wall_s:.0f}"]
        cells.append(line)
    return headers, cells


def _noise(half_width: float | None, reference: float, metric: tasks.Metric) -> str:
    """fp32's noise as the tolerance is given: '±1.05 pt' (fractions) or '±0.40%' of fp32's metric."""
    if half_width is None:
        return ""
    if metric.fraction or not reference:
        return f"±{half_width * metric.delta_scale:.2f}{' pt' if metric.fraction else ''}"
    return f"±{half_width / abs(reference) * 100:.2f}%"


def to_markdown(outcomes: list[TaskOutcome]) -> str:
    """The combined report: the summary, then every task's comparison table."""
    headers, cells = summary_table(outcomes)
    lines = [
        "# tfcompress: the whole study",
        "",
        f"Tasks: {', '.join(o.task for o in outcomes)}; total wall time {sum(o.wall_s for o in outcomes):.0f} s.",
        "",
        "## Summary",
        "",
        "Per task, the recipe with the smallest .tflite and the one with the lowest median latency among the rows "
        + "whose metric, computed on the .tflite, stays within the tolerance of fp32's (1 point for fractions such "
        + "as accuracy and mAP, 1% otherwise). `size x fp32` is the file size ratio (lower is smaller); `speed-up` "
        + "is fp32's median latency over the row's. `fp32 noise` is the half-width of the 95% bootstrap "
        + "interval of fp32's metric over its test split; where it is wider than the tolerance, the tolerance "
        + "says `tighter than the noise`: the test split cannot resolve a change that small, so a row may fall "
        + "inside or outside the tolerance by chance (each table's `vs fp32` gives every row's own interval).",
        "",
        tabulate(cells, headers=headers, tablefmt="github", disable_numparse=True),
        "",
    ]
    for outcome in outcomes:
        lines += [f"## {outcome.task}", ""]
        if outcome.results is None:
            lines += [f"Could not run: {outcome.error}", ""]
            continue
        task = tasks.get(outcome.task)
        lines += [f"{task.description}. Metric: {task.metric.description}.", ""]
        lines += [report_lib.format_table(outcome.results, "github"), ""]
    return "\n".join(lines)
