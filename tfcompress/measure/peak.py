"""How fast this CPU can go: a matrix-multiply peak, a roofline fraction, and the instruction sets that matter.

A latency figure alone does not say whether a model is slow or the machine is. ``measure_peak_gflops``
times numpy's float32 matrix multiply (OpenBLAS sgemm, close to the cores' FMA peak) in a child process
whose BLAS threads are pinned; ``roofline`` turns a model's MACs and median latency into achieved GFLOP/s
and the fraction of that peak; ``cpu_features`` says whether the CPU has the int8 dot-product (VNNI) and
bfloat16/AMX instructions that make quantized kernels faster than float ones.

Imports the standard library only (numpy in the child).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tfcompress._process import describe_exit

# The child: for each size, matmuls until its share of the time is spent; the best single matmul counts.
_CHILD = r"""
import json, sys, time
import numpy as np
sizes, seconds = json.loads(sys.argv[1]), float(sys.argv[2])
rng = np.random.default_rng(0)
best = (0.0, None, 0)
for n in sizes:
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), np.float32)
    np.matmul(a, b, out=c)  # warm-up: page in, start BLAS threads
    deadline = time.perf_counter() + seconds / len(sizes)
    repeats = 0
    while repeats < 3 or time.perf_counter() < deadline:
        start = time.perf_counter()
        np.matmul(a, b, out=c)
        gflops = 2.0 * n**3 / (time.perf_counter() - start) / 1e9
        repeats += 1
        if gflops > best[0]:
            best = (gflops, n, 0)
        if repeats >= 1000:
            break
    if best[1] == n:
        best = (best[0], n, repeats)
print(json.dumps({"peak_gflops": best[0], "n": best[1], "repeats": best[2]}))
"""

_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")


class PeakError(RuntimeError):
    """The microbenchmark's child process failed or timed out."""


def measure_peak_gflops(
    threads: int = 1, seconds: float = 1.0, sizes: tuple[int, ...] = (256, 512, 1024), timeout_s: float = 120.0
) -> dict:
    """Best float32 GFLOP/s of numpy's matrix multiply on ``threads`` BLAS threads.

    Runs in a child process so that the BLAS thread count can be pinned by environment variables
    (OPENBLAS/OMP/MKL/BLIS_NUM_THREADS) before numpy loads. Each size gets ``seconds / len(sizes)``
    (at least 3 matmuls); one n x n matmul is 2 n^3 flops; the best single matmul over all sizes counts.

    Returns:
      {"peak_gflops": float, "threads": int, "method": "numpy float32 matmul NxN, best of R"}.

    Raises:
      ValueError: threads < 1, seconds <= 0 or no sizes.
      PeakError: the child failed or ran past ``timeout_s``.
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}.")
    if seconds <= 0:
        raise ValueError(f"seconds must be > 0, got {seconds}.")
    if not sizes or any(n < 1 for n in sizes):
        raise ValueError(f"sizes must be positive matrix sizes, got {sizes!r}.")
    env = {**os.environ, **{name: str(threads) for name in _THREAD_VARS}}
    command = [sys.executable, "-I", "-c", _CHILD, json.dumps(list(sizes)), str(seconds)]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        raise PeakError(f"peak microbenchmark timed out after {timeout_s:g} s") from None
    if proc.returncode != 0:
        tail = " ".join(proc.stderr.strip().splitlines()[-1:])
        raise PeakError(f"peak microbenchmark child {describe_exit(proc.returncode)}: {tail}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "peak_gflops": float(result["peak_gflops"]),
        "threads": threads,
        "method": f"numpy float32 matmul {result['n']}x{result['n']}, best of {result['repeats']}",
    }


def roofline(macs: int, median_ms: float, peak_gflops: float | None) -> tuple[float, float | None]:
    """(achieved GFLOP/s, fraction of ``peak_gflops``), counting one MAC as 2 flops.

    Achieved GFLOP/s = 2 * macs / (median_ms * 1e-3) / 1e9. A fraction near 1 means compute-bound at
    the float32 peak; far below it means overhead, memory or kernels that do not vectorize well. The
    fraction is None when the peak was not measured (``peak_gflops`` None).
    """
    if median_ms <= 0:
        raise ValueError(f"median_ms must be > 0, got {median_ms}.")
    if peak_gflops is not None and peak_gflops <= 0:
        raise ValueError(f"peak_gflops must be > 0, got {peak_gflops}.")
    gflops = 2.0 * macs / (median_ms * 1e-3) / 1e9
    return gflops, (gflops / peak_gflops if peak_gflops else None)


# /proc/cpuinfo flag -> what it means for a compressed model's speed.
_FEATURES = {
    "avx2": "avx2",
    "fma": "fma",
    "f16c": "f16c",  # float16 <-> float32 conversion
    "avx512f": "avx512f",
    "avx512_vnni": "avx512_vnni",  # int8 dot product, 512-bit
    "avx_vnni": "avx_vnni",  # int8 dot product, 256-bit
    "avx512_bf16": "avx512_bf16",
    "amx_tile": "amx",  # AMX tiles (amx_int8 / amx_bf16 come with it)
    "amx_int8": "amx_int8",
    "asimddp": "arm_dotprod",  # Arm int8 dot product (SDOT/UDOT)
    "i8mm": "arm_i8mm",
}


def cpu_features(cpuinfo_path: str = "/proc/cpuinfo") -> dict:
    """The CPU's model name and the instruction sets that decide float vs int8 speed.

    Returns:
      {"model_name": str | None, "avx2": bool, "fma": bool, "f16c": bool, "avx512f": bool,
      "avx512_vnni": bool, "avx_vnni": bool, "avx512_bf16": bool, "amx": bool, "amx_int8": bool,
      "arm_dotprod": bool, "arm_i8mm": bool, "int8_dot_product": bool, "note": str}. ``int8_dot_product``
      is any of VNNI, AMX int8 or Arm dot product; ``note`` says in words what to expect of int8.
      All flags are False (and model_name None) where /proc/cpuinfo cannot be read.
    """
    model_name, flags = None, set()
    try:
        with open(cpuinfo_path, encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "Model", "cpu model") and model_name is None:
                    model_name = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    result = {"model_name": model_name}
    result.update({name: flag in flags for flag, name in _FEATURES.items()})
    result["int8_dot_product"] = any(result[k] for k in ("avx512_vnni", "avx_vnni", "amx_int8", "arm_dotprod"))
    if not flags:
        note = "CPU flags unknown (no readable /proc/cpuinfo)."
    elif result["int8_dot_product"]:
        note = "This CPU has int8 dot-product instructions: int8 kernels can beat float32."
    else:
        note = (
            "This CPU has no int8 dot-product (VNNI) instructions: int8 kernels widen to 16 bits and are "
            + "typically no faster than float32 here."
        )
    result["note"] = note
    return result
