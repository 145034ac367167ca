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

    Returns {"fp32": row, "size": row or None, "latency": row or None}; rows
    are compared at the lowest measured thread count.
    """
    fp32 = results.baseline()
    if fp32 is None or not fp32.ok or fp32.metric is None:
        return {"fp32": fp32, "size": None, "latency": None}
    metric = tasks.metric(fp32.metric_name)
    threads = min((s.threads for s in fp32.latency), default=None)
    good = [r for r in results.rows if r.ok and r.metric is not None and metric.within(r.metric, fp32.metric)]
    smallest = min(good, key=lambda r: (r.size_bytes, r.recipe != "fp32"), default=None)
    timed = [r for r in good if r.latency_at(threads)]
    fastest = min(timed, key=lambda r: (r.latency_at(threads).median_ms, r.recipe != "fp32"), default=None)
    return {"fp32": fp32, "size": smallest, "latency": fastest, "threads": threads}


def summary_table(outcomes: list[TaskOutcome]) -> tuple[list[str], list[list[str]]]:
    """Per task: fp32 quality, then the largest size and latency reductions within tolerance."""
    headers = ["task", "model", "metric", "fp32", "tolerance", "smallest within tolerance", "size x fp32",
               "metric of smallest", "fastest within tolerance", "speed-up", "metric of fastest", "rows ok / all",
               "wall s"]  # fmt: skip
    cells = []
    for outcome in outcomes:
        if outcome.results is None:
            cells.append([outcome.task] + [""] * 10 + ["could not run", f"{outcome.wall_s:.0f}"])
            continue
        best = best_rows(outcome.results)
        fp32, smallest, fastest = best["fp32"], best["size"], best["latency"]
        rows = outcome.results.rows
        line = [outcome.task, rows[0].model if rows else ""]
        if fp32 is None or not fp32.ok:
            line += [""] * 9
        else:
            metric = tasks.metric(fp32.metric_name)
            arrow = "higher is better" if metric.higher_is_better else "lower is better"
            line += [f"{fp32.metric_name} ({arrow})", f"{fp32.metric:.4f}", "1 pt" if metric.fraction else "1%"]
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
        + "is fp32's median latency over the row's.",
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
