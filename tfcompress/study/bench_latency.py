"""make bench's ``mobilenet`` section: our two runtimes against litert-benchmark on MobileNetV2, in interleaved rounds.

Each of the four files (fp32, dynamic_range, float16, int8 of MobileNetV2 1.0 at 160x160, weights=None)
is timed at each thread count three ways: our Interpreter timing, our CompiledModel timing (both
tfcompress.measure.latency, a fresh child per round) and ai-edge-litert's own ``litert-benchmark``
command. All of them run in the same interleaved rounds (tfcompress.measure.rounds.schedule), so a slow
stretch of the machine falls on each alike; a figure is the median over the rounds. The section also
records how many threads each runtime's process ran, which is what explains a model that gets slower
with more threads.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable

import numpy as np

from tfcompress._keras import keras
from tfcompress.measure.latency import LatencyError, LatencyStats, litert_benchmark, measure_round
from tfcompress.measure.rounds import schedule
from tfcompress.recipes import RecipeContext
from tfcompress.recipes import get as get_recipe
from tfcompress.study import bench_render as md
from tfcompress.study import cli, latency_report, report, runner
from tfcompress.study.config import from_flat

RECIPES = ("fp32", "dynamic_range", "float16", "int8")
OURS = ("interpreter", "compiled_model")
REFERENCE = "litert-benchmark"


def _files(folder: str) -> tuple[dict[str, str], int]:
    model = keras.applications.MobileNetV2(input_shape=(160, 160, 3), alpha=1.0, weights=None)
    calibration = np.random.default_rng(0).uniform(-1, 1, (32, 160, 160, 3)).astype(np.float32)
    context = RecipeContext(calibration_data=calibration)
    os.makedirs(folder, exist_ok=True)
    paths = {}
    for name in RECIPES:
        paths[name] = os.path.join(folder, f"{name}.tflite")
        with open(paths[name], "wb") as f:
            f.write(get_recipe(name).apply(model, context))
    return paths, model.count_params()


def measure(paths: dict[str, str], threads, rounds: int, num_runs: int, warmup_runs: int, progress) -> dict:
    """(recipe, threads, tool) -> {"median_ms", "round_medians_ms", "stats", "fully_accelerated", "os_threads"}."""
    jobs = [(name, t, tool) for name in paths for t in threads for tool in (*OURS, REFERENCE)]
    rounds_of: dict[tuple, list] = {job: [] for job in jobs}
    failed: dict[tuple, str] = {}
    for step, (r, i) in enumerate(schedule(len(jobs), rounds)):
        name, t, tool = job = jobs[i]
        if job in failed:
            continue
        try:
            if tool == REFERENCE:
                rounds_of[job].append(litert_benchmark(paths[name], t, num_runs, warmup_runs))
            else:
                rounds_of[job].append(measure_round(paths[name], t, num_runs, warmup_runs, runtime=tool))
        except LatencyError as e:
            failed[job] = str(e)
        if (step + 1) % len(jobs) == 0:
            progress(f"mobilenet_v2: round {r + 1} of {rounds} done")
    result = {}
    for job, done in rounds_of.items():
        if job in failed or not done:
            result[job] = {"error": failed.get(job, "no rounds")}
        elif job[2] == REFERENCE:
            medians = [float(d["latency"]["median_ms"]) for d in done]
            fully = done[0].get("fully_accelerated")
            result[job] = {"median_ms": float(np.median(medians)), "round_medians_ms": medians,
                           "fully_accelerated": fully}  # fmt: skip
        else:
            stats = LatencyStats.from_rounds(done)
            result[job] = {"median_ms": stats.median_ms, "round_medians_ms": stats.round_medians_ms,
                           "stats": stats, "os_threads": stats.os_threads}  # fmt: skip
    return result


def _p50(entry: dict) -> str:
    if "error" in entry:
        return f"failed: {entry['error'][:60]}"
    stats = entry.get("stats")
    width = f" ±{stats.half_width:.1%}" if stats is not None and stats.half_width is not None else ""
    return f"{entry['median_ms']:.3f}{width}"


def mobilenet_section(
    work_dir: str, threads, num_runs: int, warmup_runs: int, tolerance: float, rounds: int, progress: Callable
) -> tuple[str, list[dict]]:
    paths, params = _files(os.path.join(work_dir, "mobilenet_v2"))
    measured = measure(paths, threads, rounds, num_runs, warmup_runs, progress)
    title = "MobileNetV2 (alpha 1.0, 160x160, weights=None): our two runtimes vs litert-benchmark"
    blocks = [
        md.p(
            f"Batch 1, XNNPACK, {params:,} parameters. Each file at each thread count was timed {rounds} times "
            + "(rounds) by each of three tools, all rounds interleaved in one schedule: `interpreter` (tfcompress's "
            + "Interpreter timing, the study's default), `compiled_model` (tfcompress's timing through LiteRT's "
            + "CompiledModel API) and `litert-benchmark` (ai-edge-litert's own tool, which also uses CompiledModel; "
            + f"it rounds its medians to 0.01 ms). {warmup_runs} warm-up and {num_runs} timed runs per round, random "
            + "inputs of the same distribution for all three (uniform [-1, 1) floats). A p50 is the median over the "
            + "rounds (ours with its 95% interval's half-width); `x ref` is ours over litert-benchmark's. `threads "
            + "in process` is the Interpreter process's thread count after its runs."
        )
    ]
    header = ["recipe", "threads", "interpreter p50 ms", "compiled_model p50 ms", "litert-benchmark p50 ms",
              "interpreter x ref", "compiled_model x ref", "fully delegated (litert-benchmark)",
              "threads in process (interpreter)"]  # fmt: skip
    rows, checks = [], {"compiled": [], "interpreter": [], "threads": []}
    for name in paths:
        for t in threads:
            ref = measured[(name, t, REFERENCE)]
            ours = {tool: measured[(name, t, tool)] for tool in OURS}
            ratios = {}
            for tool, entry in ours.items():
                if "error" not in entry and "error" not in ref:
                    ratios[tool] = entry["median_ms"] / ref["median_ms"]
            fully = ref.get("fully_accelerated")
            checks["compiled"].append((name, t, ratios.get("compiled_model")))
            if fully:
                checks["interpreter"].append((name, t, ratios.get("interpreter")))
            rows.append([name, t, _p50(ours["interpreter"]), _p50(ours["compiled_model"]),
                         _p50(ref) if "error" in ref else f"{ref['median_ms']:.2f}",
                         *(f"{ratios[k]:.3f}" if k in ratios else "" for k in OURS),
                         "" if fully is None else ("yes" if fully else "no"),
                         str(ours["interpreter"].get("os_threads", ""))])  # fmt: skip
            progress(f"mobilenet_v2 {name} {t}t: " + ", ".join(f"{k} {_p50(v)}" for k, v in ours.items())
                     + f", litert-benchmark {ref.get('median_ms', 'failed')}")  # fmt: skip
    blocks.append(md.table(header, rows))
    blocks.append(md.bullets(_verdicts(checks, measured, threads, tolerance)))
    return title, blocks


def _within(entries, tolerance: float) -> tuple[bool, str]:
    misses = [f"{n} at {t}t ({r:.3f})" if r is not None else f"{n} at {t}t (failed)" for n, t, r in entries
              if r is None or abs(r - 1) > tolerance]  # fmt: skip
    return not misses, ", ".join(misses)


def _verdicts(checks: dict, measured: dict, threads, tolerance: float) -> list[str]:
    lines = []
    ok, misses = _within(checks["compiled"], tolerance)
    lines.append(f"Our compiled_model median within {tolerance:.0%} of litert-benchmark's in all "
                 + f"{len(checks['compiled'])} cases: **{'yes' if ok else 'no'}**" + (f" (off: {misses})." if misses
                 else "."))  # fmt: skip
    ok, misses = _within(checks["interpreter"], tolerance)
    lines.append(f"Our interpreter median within {tolerance:.0%} of litert-benchmark's in the "
                 + f"{len(checks['interpreter'])} cases litert-benchmark fully delegates: **{'yes' if ok else 'no'}**"
                 + (f" (off: {misses})." if misses else "."))  # fmt: skip
    if 1 in threads and max(threads) > 1:
        t = max(threads)
        for tool in OURS:
            one, more = measured[("dynamic_range", 1, tool)], measured[("dynamic_range", t, tool)]
            if "error" in one or "error" in more:
                lines.append(f"dynamic_range with {tool}: a timing failed.")
                continue
            slower = more["median_ms"] > one["median_ms"]
            lines.append(f"dynamic_range with {tool} at {t} threads no slower than at 1 thread: "
                         + f"**{'no' if slower else 'yes'}** ({one['median_ms']:.3f} ms at 1, "
                         + f"{more['median_ms']:.3f} ms at {t}).")  # fmt: skip
    return lines


def study_section(work_dir: str, progress: Callable) -> tuple[str, list[dict]]:
    """``make study`` as on a fresh clone (the default study, its model trained first), with its latency checks."""
    config = from_flat(**cli.PRESETS["quick"], output_dir=os.path.join(work_dir, "study"))
    shutil.rmtree(config.output_dir, ignore_errors=True)
    start = time.perf_counter()
    results = runner.run(config, progress=progress)
    wall_s = time.perf_counter() - start
    measure = config.measure
    title = "The default study (`make study`)"
    blocks = [
        md.p(
            f"`make study` as on a fresh clone: {wall_s:.0f} s, training the built-in model included. Every latency "
            + f"is the median over {measure.rounds} interleaved rounds of at least {measure.num_runs} runs and "
            + f"{measure.min_time_s:g} s, with its 95% interval's half-width; `noise` marks a change the interval "
            + "cannot tell from none."
        ),
        md.table(*report.table(results)),
        md.p("Latency lab (roofline against the roof of each row's data type):"),
        md.table(*latency_report.lab_table(results)),
        md.bullets([line.removeprefix("- ") for line in latency_report.lab_notes(results)]),
        md.p("Against the targets:"),
        md.bullets(study_checks(results)),
    ]
    return title, blocks


def study_checks(results, bound_ms: float = 0.1, max_half_width: float = 0.03, max_roofline: float = 1.05) -> list:
    """The measurement issue's acceptance lines on one study's results, each with its verdict and figures."""
    timed = [(r, s) for r in results.rows if r.ok for s in r.latency]
    bound = [(r, s) for r, s in timed if s.median_ms >= bound_ms]
    wide = [f"{r.recipe} {s.threads}t {s.runtime} ±{s.half_width:.1%}" for r, s in bound
            if s.half_width is None or s.half_width > max_half_width]  # fmt: skip
    widest = max((s.half_width or 0.0 for _, s in bound), default=0.0)
    lines = [
        f"Every compute-bound latency (median >= {bound_ms} ms: {len(bound)} of {len(timed)}) has a 95% half-width "
        + f"<= {max_half_width:.0%} of its median: **{'no' if wide else 'yes'}** (widest {widest:.1%}"
        + (f"; over: {', '.join(wide)})." if wide else ").")
    ]
    by_recipe = {r.recipe: r for r in results.rows if r.ok}
    a, b = by_recipe.get("channel_prune"), by_recipe.get("distill")
    if a and b:
        for sa in a.latency:
            sb = b.latency_at(sa.threads, sa.runtime)
            if sb is None or sa.interval is None or sb.interval is None:
                continue
            overlap = sa.ci_low_ms <= sb.ci_high_ms and sb.ci_low_ms <= sa.ci_high_ms
            lines.append(
                f"channel_prune and distill (the same architecture, {a.macs / 1e6:.2f} MMACs) agree within their "
                + f"intervals at {sa.threads}t {sa.runtime}: **{'yes' if overlap else 'no'}** "
                + f"({sa.median_ms:.4f} [{sa.ci_low_ms:.4f}, {sa.ci_high_ms:.4f}] vs {sb.median_ms:.4f} "
                + f"[{sb.ci_low_ms:.4f}, {sb.ci_high_ms:.4f}] ms)."
            )
    above = [f"{r.recipe} {s.threads}t {s.runtime} {s.roofline:.2f} of {s.roof}" for r, s in timed
             if s.roofline is not None and s.roofline > max_roofline]  # fmt: skip
    highest = max(((s.roofline, r.recipe, s.roof) for r, s in timed if s.roofline is not None), default=None)
    lines.append(
        f"No row has a roofline above {max_roofline}: **{'no' if above else 'yes'}**"
        + (f" (highest {highest[0]:.2f}, {highest[1]} against the {highest[2]} roof)" if highest else "")
        + (f"; above: {', '.join(above)}." if above else ".")
    )
    roofs_used = sorted({s.roof for _, s in timed if s.roof})
    lines.append(f"Roofs used (results.json: each latency's `roof`): {', '.join(roofs_used) or 'none'}.")
    return lines
