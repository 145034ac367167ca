"""Latency of a .tflite file in the LiteRT interpreter, measured in a child process.

Native crashes (aborts, segfaults) happen in the interpreter with some models
and settings. Each measurement therefore runs in its own Python process
(``tfcompress/_latency_worker.py``, run by path so that it imports LiteRT and
numpy but not the package, and so not TensorFlow), so a crash becomes a ``LatencyError`` naming the signal rather
than the end of the study.

Besides the invoke() times, each measurement says where the rest of the time and memory go
(``init_ms``, ``first_invoke_ms``, ``peak_rss_mb``) and how much of the graph XNNPACK runs
(``delegated_ops`` of ``total_ops``, and the ``undelegated`` ops by name, left to LiteRT's builtin
kernels). How delegation is detected is described in ``tfcompress/_latency_worker.py``.

Two runtimes time the same file: ``interpreter`` (``ai_edge_litert.interpreter.Interpreter``, what the
task metrics run in) and ``compiled_model`` (LiteRT's CompiledModel API, which ``litert-benchmark`` and
newer LiteRT deployments use). A latency is the median over ``rounds`` rounds, each a fresh child process
running at least ``num_runs`` timed runs and ``min_time_s`` seconds; ``rounds.interleaved`` spreads the rounds of
many files over time, so a slow minute of a shared machine hits each of them alike. Its 95% interval is
a two-level bootstrap over rounds and runs (tfcompress.measure.stats).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence

import numpy as np

from tfcompress._process import describe_exit
from tfcompress.measure import _latency_worker, stats

RUNTIMES = tuple(_latency_worker.RUNNERS)  # ("interpreter", "compiled_model")

_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_latency_worker.py")


class LatencyError(RuntimeError):
    """The measuring process failed: it crashed, timed out or raised."""


@dataclasses.dataclass(frozen=True)
class LatencyStats:
    """Batch-1 invoke() latency over ``runs`` timed runs, in milliseconds, and what explains it.

    The fields after ``warmup_runs`` are None (``undelegated`` empty) in results saved before they
    were measured.

    Attributes:
      init_ms: Interpreter construction plus allocate_tensors(), which applies XNNPACK.
      first_invoke_ms: the first invoke(), timed on its own before the warm-up runs.
      peak_rss_mb: the measuring process's peak resident memory (about 45 MB of it is Python and LiteRT).
      delegated_ops: how many of the graph's ``total_ops`` ops XNNPACK runs.
      total_ops: the ops of the model's main subgraph.
      undelegated: op name -> count of the ops left to LiteRT's builtin kernels.
      delegate_partitions: how many XNNPACK partitions the delegated ops form (each boundary costs a hand-off).
      runtime: "interpreter" or "compiled_model".
      rounds: how many rounds (child processes at different times) the timings come from.
      round_medians_ms: each round's median.
      ci_low_ms, ci_high_ms: the 95% interval of ``median_ms`` (tfcompress.measure.stats.median_ci).
      fully_accelerated: CompiledModel's own answer to whether every op is accelerated (None for the
        Interpreter, whose ``delegated_ops`` say more).
      os_threads: the measuring process's thread count after its runs (the runtime's pools included).
      input_dtypes: the dtypes the inputs were fed in.
      load_avg: the highest 1-minute load average of the machine after a round (above the core count:
        other work shared the cores while it was timed).
      overhead_bound: the median is within 5x of the timing loop's own per-invoke cost (a trivial
        model's median, measured once per study); None when not compared.
      roof: the data type whose roof ``roofline`` divides by (the one the row's heaviest ops run in).
      roof_gflops: that roof: the best GFLOP/s of the project's compute-bound synthetic files of that
        data type, same runtime and threads (tfcompress.measure.roofs).
      gflops: 2 x MACs / median.
      roofline: ``gflops / roof_gflops``, a fraction.
    """

    threads: int
    median_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    runs: int
    warmup_runs: int = 0
    init_ms: float | None = None
    first_invoke_ms: float | None = None
    peak_rss_mb: float | None = None
    delegated_ops: int | None = None
    total_ops: int | None = None
    undelegated: dict[str, int] = dataclasses.field(default_factory=dict)
    delegate_partitions: int | None = None
    runtime: str = "interpreter"
    rounds: int = 1
    round_medians_ms: list[float] = dataclasses.field(default_factory=list)
    ci_low_ms: float | None = None
    ci_high_ms: float | None = None
    fully_accelerated: bool | None = None
    os_threads: int | None = None
    input_dtypes: list[str] = dataclasses.field(default_factory=list)
    load_avg: float | None = None
    overhead_bound: bool | None = None
    roof: str | None = None
    roof_gflops: float | None = None
    gflops: float | None = None
    roofline: float | None = None

    @property
    def fully_delegated(self) -> bool | None:
        """Whether XNNPACK runs every op (None when not measured)."""
        if self.fully_accelerated is not None:
            return self.fully_accelerated
        if self.delegated_ops is None or self.total_ops is None:
            return None
        return self.delegated_ops == self.total_ops

    @property
    def interval(self) -> tuple[float, float, float] | None:
        """(median, low, high), or None for a measurement saved without an interval."""
        if self.ci_low_ms is None or self.ci_high_ms is None:
            return None
        return self.median_ms, self.ci_low_ms, self.ci_high_ms

    @property
    def half_width(self) -> float | None:
        """The 95% interval's half-width as a fraction of the median (None without an interval)."""
        interval = self.interval
        return stats.half_width(*interval) if interval and self.median_ms > 0 else None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> LatencyStats:
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in fields}
        for name in ("undelegated", "round_medians_ms", "input_dtypes"):
            if kwargs.get(name) is None:
                kwargs.pop(name, None)
        return cls(**kwargs)

    @classmethod
    def from_rounds(cls, rounds: Sequence[dict], confidence: float = 0.95, seed: int = 0) -> LatencyStats:
        """The statistics of one file at one setting from its rounds (worker results with ``times_ms``).

        The median, percentiles, mean and spread are over all timings pooled; init, first invoke and
        thread count are the rounds' medians, peak memory their maximum; delegation from the first.
        """
        if not rounds:
            raise ValueError("from_rounds needs at least one round.")
        times = [np.asarray(r["times_ms"], dtype=np.float64) for r in rounds]
        pooled = np.concatenate(times)
        median, low, high = stats.median_ci(times, confidence, seed=seed)
        first = rounds[0]
        fields = {f.name for f in dataclasses.fields(cls)}
        keep = {k: first[k] for k in ("delegated_ops", "total_ops", "undelegated", "delegate_partitions",
                                      "fully_accelerated", "input_dtypes") if k in first}  # fmt: skip
        return cls(
            threads=int(first["threads"]),
            runtime=first.get("runtime", "interpreter"),
            median_ms=median,
            p90_ms=float(np.percentile(pooled, 90)),
            p99_ms=float(np.percentile(pooled, 99)),
            mean_ms=float(pooled.mean()),
            std_ms=float(pooled.std()),
            runs=int(pooled.size),
            warmup_runs=int(first.get("warmup_runs", 0)),
            init_ms=float(np.median([r["init_ms"] for r in rounds])),
            first_invoke_ms=float(np.median([r["first_invoke_ms"] for r in rounds])),
            peak_rss_mb=max(r["peak_rss_mb"] for r in rounds),
            os_threads=first.get("os_threads"),
            load_avg=max((r["load_avg"] for r in rounds if r.get("load_avg") is not None), default=None),
            rounds=len(rounds),
            round_medians_ms=[float(np.median(t)) for t in times],
            ci_low_ms=low,
            ci_high_ms=high,
            **{k: v for k, v in keep.items() if k in fields},
        )


def scaling_efficiency(stats_by_threads: list[LatencyStats]) -> dict[int, float]:
    """Thread-scaling efficiency of one model: speed-up over the fewest threads, divided by the thread ratio.

    With a 1-thread measurement this is (median at 1 thread / median at t) / t: 1.0 is perfect scaling,
    0.5 means 2 threads are no faster than 1. Without one, it is relative to the smallest thread count
    t0: (median at t0 / median at t) / (t / t0), so t0 itself is 1.0.

    Raises:
      ValueError: no measurements, or two for the same thread count.
    """
    if not stats_by_threads:
        raise ValueError("scaling_efficiency needs at least one measurement.")
    by_threads = {s.threads: s for s in stats_by_threads}
    if len(by_threads) != len(stats_by_threads):
        counts = sorted(s.threads for s in stats_by_threads)
        raise ValueError(f"one measurement per thread count, got thread counts {counts}.")
    base = by_threads[min(by_threads)]
    return {t: (base.median_ms / s.median_ms) / (t / base.threads) for t, s in sorted(by_threads.items())}


def delegation(model: bytes | str, threads: int = 1) -> dict:
    """Which ops of a .tflite model (bytes or path) XNNPACK takes, in this process.

    Returns:
      {"delegated_ops", "total_ops", "delegate_partitions", "undelegated": {op name: count}}, as
      ``measure_latency`` records them.
    """
    if isinstance(model, (bytes, bytearray)):
        _, _, result = _latency_worker.load(content=bytes(model), threads=threads)
    else:
        _, _, result = _latency_worker.load(path=str(model), threads=threads)
    return result


def _worker_command(
    tflite_path: str,
    threads: int,
    num_runs: int,
    warmup_runs: int,
    seed: int,
    input_path: str | None = None,
    runtime: str = "interpreter",
    min_time_s: float = 0.0,
) -> list[str]:
    return [
        sys.executable,
        "-I",  # isolated: the worker's folder is not put on sys.path
        _WORKER,
        json.dumps(
            {
                "path": tflite_path,
                "threads": threads,
                "num_runs": num_runs,
                "warmup_runs": warmup_runs,
                "seed": seed,
                "parent_pid": os.getpid(),
                "input_path": input_path,
                "runtime": runtime,
                "min_time_s": min_time_s,
            }
        ),
    ]


def check_settings(threads: int, num_runs: int, warmup_runs: int, runtime: str, rounds: int, min_time_s: float) -> None:
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}.")
    if num_runs < 1:
        raise ValueError(f"num_runs must be >= 1, got {num_runs}.")
    if warmup_runs < 0:
        raise ValueError(f"warmup_runs must be >= 0, got {warmup_runs}.")
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}.")
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}.")
    if min_time_s < 0:
        raise ValueError(f"min_time_s must be >= 0, got {min_time_s}.")


def measure_round(
    tflite_path: str,
    threads: int = 1,
    num_runs: int = 100,
    warmup_runs: int = 10,
    seed: int = 0,
    timeout_s: float = 600.0,
    input_path: str | None = None,
    runtime: str = "interpreter",
    min_time_s: float = 0.0,
) -> dict:
    """One round in a fresh child process: the worker's result, every timing in ``times_ms``.

    Raises:
      ValueError: an argument out of range.
      LatencyError: the child crashed (the signal is named), timed out, or could not load or run the model.
    """
    check_settings(threads, num_runs, warmup_runs, runtime, 1, min_time_s)
    command = _worker_command(tflite_path, threads, num_runs, warmup_runs, seed, input_path, runtime, min_time_s)
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise LatencyError(f"latency measurement timed out after {timeout_s:g} s") from None
    result = None
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            result = json.loads(line)
            break
    if proc.returncode != 0 or result is None:
        detail = (result or {}).get("error") or " ".join(proc.stderr.strip().splitlines()[-1:])
        raise LatencyError(f"latency child {describe_exit(proc.returncode)}" + (f": {detail}" if detail else ""))
    return result


def measure_latency(
    tflite_path: str,
    threads: int = 1,
    num_runs: int = 100,
    warmup_runs: int = 10,
    seed: int = 0,
    timeout_s: float = 600.0,
    input_path: str | None = None,
    runtime: str = "interpreter",
    rounds: int = 1,
    min_time_s: float = 0.0,
) -> LatencyStats:
    """Times batch-1 inference of a .tflite file in fresh child processes, ``rounds`` of them back to back.

    The input is ``input_path``, an .npy file of one example already in the
    input tensor's shape and dtype (a study passes a real test example), or
    else seeded random data of that shape and dtype. In each round the first
    run is timed on its own (``first_invoke_ms``), then ``warmup_runs`` untimed
    runs, then timed runs until there are at least ``num_runs`` and at least
    ``min_time_s`` seconds of them. The statistics come with their interval,
    the start-up cost, peak memory and delegation (see ``LatencyStats``). To
    spread the rounds of many files over time, use tfcompress.measure.rounds.interleaved.

    Raises:
      ValueError: an argument out of range.
      LatencyError: a child crashed (the signal is named), timed out, or
        could not load or run the model (its error is given).
    """
    check_settings(threads, num_runs, warmup_runs, runtime, rounds, min_time_s)
    results = [
        measure_round(tflite_path, threads, num_runs, warmup_runs, seed, timeout_s, input_path, runtime, min_time_s)
        for _ in range(rounds)
    ]
    return LatencyStats.from_rounds(results, seed=seed)


def litert_benchmark(
    tflite_path: str, threads: int = 1, num_runs: int = 100, warmup_runs: int = 10, timeout_s: float = 600.0
) -> dict:
    """What ai-edge-litert's own ``litert-benchmark`` reports for a file.

    An outside reference for ``measure_latency``: it times the same model
    through LiteRT's CompiledModel front end instead of the Interpreter.

    Returns:
      Its result JSON: "latency" (median_ms, p5_ms, p95_ms, init_ms, ...) and
      "fully_accelerated" (whether XNNPACK took every op).
    """
    exe = shutil.which("litert-benchmark") or os.path.join(os.path.dirname(sys.executable), "litert-benchmark")
    if not os.path.exists(exe):
        raise LatencyError("litert-benchmark is not installed; it comes with the ai-edge-litert package.")
    with tempfile.TemporaryDirectory() as tmp:
        result_json = os.path.join(tmp, "result.json")
        command = [exe, "--model", tflite_path, "--num_threads", str(threads), "--num_runs", str(num_runs)]
        command += ["--warmup_runs", str(warmup_runs), "--result_json", result_json]
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise LatencyError(f"litert-benchmark timed out after {timeout_s:g} s") from None
        if proc.returncode != 0 or not os.path.exists(result_json):
            tail = " ".join(proc.stderr.strip().splitlines()[-1:])
            raise LatencyError(f"litert-benchmark {describe_exit(proc.returncode)}: {tail}")
        with open(result_json, encoding="utf-8") as f:
            return json.load(f)
