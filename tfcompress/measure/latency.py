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
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile

from tfcompress._process import describe_exit
from tfcompress.measure import _latency_worker

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

    @property
    def fully_delegated(self) -> bool | None:
        """Whether XNNPACK runs every op (None when not measured)."""
        if self.delegated_ops is None or self.total_ops is None:
            return None
        return self.delegated_ops == self.total_ops

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> LatencyStats:
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in fields}
        if kwargs.get("undelegated") is None:
            kwargs.pop("undelegated", None)
        return cls(**kwargs)


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
    tflite_path: str, threads: int, num_runs: int, warmup_runs: int, seed: int, input_path: str | None = None
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
            }
        ),
    ]


def measure_latency(
    tflite_path: str,
    threads: int = 1,
    num_runs: int = 100,
    warmup_runs: int = 10,
    seed: int = 0,
    timeout_s: float = 600.0,
    input_path: str | None = None,
) -> LatencyStats:
    """Times batch-1 invoke() of a .tflite file in a fresh child process.

    The input is ``input_path``, an .npy file of one example already in the
    input tensor's shape and dtype (a study passes a real test example), or
    else seeded random data of that shape and dtype. The first invoke() is
    timed on its own (``first_invoke_ms``), then ``warmup_runs`` untimed runs,
    then ``num_runs`` timed ones. The statistics come with the start-up cost,
    peak memory and XNNPACK delegation (see ``LatencyStats``).

    Raises:
      ValueError: threads, num_runs or warmup_runs out of range.
      LatencyError: the child crashed (the signal is named), timed out, or
        could not load or run the model (its error is given).
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}.")
    if num_runs < 1:
        raise ValueError(f"num_runs must be >= 1, got {num_runs}.")
    if warmup_runs < 0:
        raise ValueError(f"warmup_runs must be >= 0, got {warmup_runs}.")
    command = _worker_command(tflite_path, threads, num_runs, warmup_runs, seed, input_path)
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
    return LatencyStats.from_dict(result)


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
