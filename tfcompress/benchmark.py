"""Latency of a .tflite file in the LiteRT interpreter, measured in a child process.

Native crashes (aborts, segfaults) happen in the interpreter with some models
and settings. Each measurement therefore runs in its own Python process
(``tfcompress/_latency_worker.py``, run by path so that it imports LiteRT and
numpy but not the package, and so not TensorFlow), so a crash becomes a ``LatencyError`` naming the signal rather
than the end of the study.
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

_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_latency_worker.py")


class LatencyError(RuntimeError):
    """The measuring process failed: it crashed, timed out or raised."""


@dataclasses.dataclass(frozen=True)
class LatencyStats:
    """Batch-1 invoke() latency over ``runs`` timed runs, in milliseconds."""

    threads: int
    median_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    runs: int
    warmup_runs: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> LatencyStats:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in fields})


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
    else seeded random data of that shape and dtype. Only invoke() is timed,
    after ``warmup_runs`` untimed runs.

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
