"""A study's latency phase: every row, the roof files and the timing loop's overhead, in interleaved rounds.

After every row's .tflite is built and scored, nothing else runs and the study times them together
(tfcompress.measure.rounds.interleaved): round 1 of each row at each thread count and runtime, then
round 2 in the reverse order, and so on, so that a slow minute of a shared machine hits every row
alike. In the same rounds it times the synthetic compute-bound files of every data type
(tfcompress.measure.roofs), whose best GFLOP/s are the roofs, and a trivial model whose median is the
per-invoke cost of the timing loop itself. Each row's latency then carries its 95% interval, its
roofline against the roof of the data type its heaviest ops run in, and whether it is overhead-bound.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Callable

import numpy as np

from tfcompress.measure import peak as peak_lib
from tfcompress.measure import roofs
from tfcompress.measure.evaluate import as_input
from tfcompress.measure.latency import LatencyError, LatencyStats
from tfcompress.measure.rounds import Timing, interleaved
from tfcompress.study.config import StudyConfig
from tfcompress.study.results import Results, Row, Status

# A row whose median is within this factor of the trivial model's is overhead-bound: the timing loop and
# the runtime's per-invoke cost, not the model's arithmetic, decide it.
OVERHEAD_FACTOR = 5.0
# The roof and overhead files are timed with at least this many runs and seconds per round: only their best
# GFLOP/s (or median) is used, and the study's time goes to its rows.
ROOF_RUNS = 5
ROOF_TIME_S = 0.1


def settings(config: StudyConfig) -> list[tuple[int, str]]:
    """(threads, runtime) pairs every row is timed at, in the order its latency list holds them."""
    return [(t, r) for t in config.measure.threads for r in config.measure.runtime]


def needs_timing(row: Row, config: StudyConfig) -> bool:
    """Whether an ok row lacks a latency at one of the study's settings (new, or kept from a run stopped early)."""
    have = {(s.threads, s.runtime) for s in row.latency}
    return row.ok and row.tflite_path is not None and not set(settings(config)) <= have


def time_rows(config: StudyConfig, results: Results, rows: list[Row], dataset, progress: Callable[[str], None]) -> None:
    """Times ``rows`` (and the roofs and overhead, recorded in ``results.environment``), in place.

    A row whose timing fails (a crash of the runtime, a time-out) becomes FAILED with the reason.
    """
    options = config.measure
    results.environment["cpu_features"] = peak_lib.cpu_features()
    roof_dir = roofs.cache_folder()
    progress(f"Roof and overhead models: {roof_dir} (generated once) ...")
    roof_paths = roofs.roof_files(roof_dir)
    overhead_path = roofs.overhead_file(roof_dir)
    work = tempfile.mkdtemp(prefix=".timing-", dir=config.output_dir)
    try:
        timings = []
        for t, runtime in settings(config):
            for i, row in enumerate(rows):
                path = os.path.join(config.output_dir, row.tflite_path)
                sample = os.path.join(work, f"input-{i}.npy")
                if not os.path.exists(sample):  # a real test example, prepared as the input tensor takes it
                    with open(path, "rb") as f:
                        np.save(sample, as_input(dataset.x_test[:1], f.read()), allow_pickle=False)
                timings.append(Timing(("row", i, t, runtime), path, t, runtime, sample))
            for (dtype, shape), path in roof_paths.items():
                timings.append(
                    Timing(("roof", dtype, shape, t, runtime), path, t, runtime, num_runs=ROOF_RUNS,
                           min_time_s=ROOF_TIME_S)
                )  # fmt: skip
            timings.append(Timing(("overhead", t, runtime), overhead_path, t, runtime, min_time_s=ROOF_TIME_S))
        progress(
            f"Timing {len(rows)} row(s) at {len(settings(config))} setting(s), with {len(roof_paths)} roof files and "
            + f"the overhead model: {options.rounds} interleaved rounds of >= {options.num_runs} runs and "
            + f">= {options.min_time_s:g} s each ..."
        )
        measured = interleaved(
            timings, options.rounds, options.num_runs, options.warmup_runs, options.min_time_s, config.seed,
            options.latency_timeout_s, progress,
        )  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _check_load(results, measured, progress)
    peaks = _roofs(measured, roof_paths)
    overhead = _overhead(measured)
    results.environment["peak"] = peaks
    results.environment["overhead"] = overhead
    for i, row in enumerate(rows):
        latency = []
        for t, runtime in settings(config):
            stats = measured[("row", i, t, runtime)]
            if isinstance(stats, LatencyError):
                row.status = Status.FAILED
                reason = f"latency at {t} thread(s) ({runtime}): {stats}"
                row.error = f"{row.error}; {reason}" if row.error else reason
                continue
            latency.append(annotate(stats, row.macs, row.compute_dtype, peaks, overhead))
        row.latency = latency


def annotate(stats: LatencyStats, macs: int | None, dtype: str | None, peaks: dict, overhead: dict) -> LatencyStats:
    """``stats`` with its roofline (against the roof of ``dtype``) and whether it is overhead-bound."""
    t, runtime = str(stats.threads), stats.runtime
    roof = ((peaks.get(dtype) or {}).get(t) or {}).get(runtime, {}).get("gflops") if dtype else None
    gflops = 2.0 * macs / (stats.median_ms * 1e-3) / 1e9 if macs and stats.median_ms > 0 else None
    floor = ((overhead.get(runtime) or {}).get(t) or {}).get("median_ms")
    return dataclasses.replace(
        stats,
        roof=dtype,
        roof_gflops=roof,
        gflops=gflops,
        roofline=gflops / roof if gflops is not None and roof else None,
        overhead_bound=None if floor is None else bool(stats.median_ms < OVERHEAD_FACTOR * floor),
    )


def _check_load(results: Results, measured: dict, progress) -> None:
    """Records the highest load average seen after a round, and warns when other work shared the cores."""
    loads = [s.load_avg for s in measured.values() if isinstance(s, LatencyStats) and s.load_avg is not None]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if not loads:
        return
    results.environment["timing_load"] = {"max_load_avg": max(loads), "cores": cores}
    if max(loads) > cores:
        progress(
            f"WARNING: the machine was busy while timing (1-minute load average up to {max(loads):.1f} on {cores} "
            + "cores): multi-threaded latencies in particular are slower than on a quiet machine."
        )


def _roofs(measured: dict, roof_paths: dict) -> dict:
    """environment["peak"]: data type -> threads -> runtime -> {"gflops", "shape", "files"}."""
    by_setting: dict[tuple[str, str], dict] = {}
    for key, stats in measured.items():
        if key[0] == "roof":
            _, dtype, shape, t, runtime = key
            median = stats.median_ms if isinstance(stats, LatencyStats) else None
            by_setting.setdefault((str(t), runtime), {})[(dtype, shape)] = median
    peaks: dict = {}
    for (t, runtime), medians in by_setting.items():
        for dtype, entry in roofs.roof_table(medians, roof_paths).items():
            peaks.setdefault(dtype, {}).setdefault(t, {})[runtime] = entry
    return peaks


def _overhead(measured: dict) -> dict:
    """environment["overhead"]: runtime -> threads -> the trivial model's median and interval (ms)."""
    result: dict = {}
    for key, stats in measured.items():
        if key[0] == "overhead" and isinstance(stats, LatencyStats):
            _, t, runtime = key
            result.setdefault(runtime, {})[str(t)] = {
                "median_ms": stats.median_ms,
                "ci_low_ms": stats.ci_low_ms,
                "ci_high_ms": stats.ci_high_ms,
            }
    return result
