"""Child process of ``tfcompress.benchmark.measure_latency``.

Usage: python -I tfcompress/_latency_worker.py '{"path": ..., "threads": 1, ...}'

Prints one JSON line: the statistics, or {"error": "..."} with exit status 1.
Imports LiteRT and numpy only, so it starts in a fraction of a second.
"""

import json
import sys
import time

import numpy as np


def _measure(path: str, threads: int, num_runs: int, warmup_runs: int, seed: int, input_path=None) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path, num_threads=threads)
    interpreter.allocate_tensors()
    rng = np.random.default_rng(seed)
    for detail in interpreter.get_input_details():
        dtype = detail["dtype"]
        if input_path is not None:  # a real example, already in the tensor's shape and dtype
            value = np.load(input_path, allow_pickle=False)
            if value.shape != tuple(detail["shape"]) or value.dtype != dtype:
                raise ValueError(
                    f"input {value.dtype}{list(value.shape)} does not match the model's {np.dtype(dtype)}"
                    + f"{list(detail['shape'])}"
                )
        elif np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            value = rng.integers(info.min, info.max, size=detail["shape"], endpoint=True, dtype=dtype)
        else:
            value = rng.random(detail["shape"], dtype=np.float32).astype(dtype)
        interpreter.set_tensor(detail["index"], value)
    for _ in range(warmup_runs):
        interpreter.invoke()
    times_ns = np.empty(num_runs, dtype=np.int64)
    clock = time.perf_counter_ns
    invoke = interpreter.invoke
    for i in range(num_runs):
        start = clock()
        invoke()
        times_ns[i] = clock() - start
    ms = times_ns / 1e6
    return {
        "threads": threads,
        "median_ms": float(np.median(ms)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "std_ms": float(ms.std()),
        "runs": int(num_runs),
        "warmup_runs": int(warmup_runs),
    }


def _die_with_parent(parent_pid: int) -> None:
    """SIGKILL this process when its parent dies (Linux), so a killed study leaves no worker behind."""
    try:
        import ctypes
        import os
        import signal

        ctypes.CDLL("libc.so.6").prctl(1, int(signal.SIGKILL))  # 1 = PR_SET_PDEATHSIG
        if os.getppid() != parent_pid:
            os._exit(1)
    except (OSError, AttributeError):
        pass


def main(argv: list[str]) -> int:
    args = json.loads(argv[1])
    if "parent_pid" in args:
        _die_with_parent(args["parent_pid"])
    try:
        result = _measure(
            args["path"], args["threads"], args["num_runs"], args["warmup_runs"], args["seed"], args.get("input_path")
        )
    except Exception as e:  # report any Python-level failure as data for the parent
        print(json.dumps({"error": f"{type(e).__name__}: {' '.join(str(e).split())}"}), flush=True)
        return 1
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
