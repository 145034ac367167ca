"""What machine and software a study ran on (results.json's ``environment``), and its matmul peak."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform

from tfcompress.measure import peak


def environment(peak_threads: tuple[int, ...] = (), peak_seconds: float = 0.5) -> dict:
    """Versions and machine facts recorded with every study.

    Args:
      peak_threads: thread counts at which to measure this machine's float32
        matrix-multiply peak (tfcompress.peak), the denominator of the
        report's roofline column; empty: not measured (nor the CPU features).
      peak_seconds: how long each peak measurement runs. A thread count and
        duration are measured once per process.
    """

    def version(pkg):
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return None

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    env = {
        "python": platform.python_version(),
        "tensorflow": version("tensorflow") or version("tensorflow-cpu"),
        "tf_keras": version("tf-keras"),
        "tensorflow_model_optimization": version("tensorflow-model-optimization"),
        "ai_edge_litert": version("ai-edge-litert"),
        "numpy": version("numpy"),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
    }
    if peak_threads:
        env["cpu_features"] = peak.cpu_features()
        env["peak"] = {str(t): _peak(t, peak_seconds) for t in sorted(set(peak_threads))}
    return env


@functools.cache
def _peak(threads: int, seconds: float) -> dict:
    """The matmul peak at a thread count, measured once per process."""
    try:
        return peak.measure_peak_gflops(threads, seconds)
    except peak.PeakError as e:
        return {"peak_gflops": None, "threads": threads, "error": str(e)}
