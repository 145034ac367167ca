"""Child process of ``tfcompress.benchmark.measure_latency``.

Usage: python -I tfcompress/_latency_worker.py '{"path": ..., "threads": 1, ...}'

Prints one JSON line: the statistics, or {"error": "..."} with exit status 1.
Imports LiteRT, numpy and the standard library only, so it starts in a fraction of a second (and the
parent may import it as a module for ``delegation``).

What it reports besides the invoke() times:

- ``init_ms``: ``Interpreter(...)`` plus ``allocate_tensors()``. LiteRT applies its default XNNPACK
  delegate lazily, inside the first ``allocate_tensors()``, so this includes the delegate's work
  (partitioning, packing the weights).
- ``first_invoke_ms``: the first invoke(), always run and timed on its own before the warm-up runs.
- ``peak_rss_mb``: this process's peak resident memory at the end: interpreter, model, packed
  weights and arena, plus about 45 MB of Python, numpy and LiteRT. Read from VmHWM in
  /proc/self/status: ``getrusage(RUSAGE_SELF).ru_maxrss`` (the fallback off Linux) is wrong here,
  because Linux carries the pre-exec high-water mark across execve and Python starts children with
  vfork, so ru_maxrss reports the parent's peak (1.2 GB for a parent that imported TensorFlow).
- ``delegated_ops`` / ``total_ops`` / ``undelegated`` / ``delegate_partitions``: which of the graph's
  ops XNNPACK took, see ``delegation``.

How delegation is detected (the Python API has no execution plan and no "which nodes were replaced"
call, and TFLite's log line "Replacing N out of M node(s) with delegate (TfLiteXNNPackDelegate) node,
yielding K partitions" is logged below the default severity and is not printed by this build):
the delegate is applied inside ``allocate_tensors()``, and it leaves the model's own nodes in place
and appends one node named DELEGATE per partition. So the node count before ``allocate_tensors()``
is the graph's op count, and nodes from that index on are partitions. A partition node's inputs are
the tensors it reads from outside and its outputs the tensors it hands out; the model ops it replaced
are found by walking back from its outputs through the tensors' producers, stopping at its inputs.
Every op found in no partition runs on the default (builtin) kernels. Checked against
``litert-benchmark``'s "fully_accelerated" on fp32, int8, float16 and dynamic-range CNNs (all ops
delegated, one partition), on a float model with CUMSUM and TOPK_V2 (those two left to the builtin
kernels, the ops before and after them in two partitions, LOG delegated) and on int8 MobileNetV3Small
(not fully accelerated: its 19 HARD_SWISH and its SOFTMAX stay out, splitting it into 20 partitions).
Other gaps it finds in this XNNPACK: int8 SOFTMAX, dynamic-range DEPTHWISE_CONV_2D, the SHAPE /
STRIDED_SLICE / PACK / RESHAPE chains that tf_keras Reshape on a dynamic batch leaves (EfficientNet's
squeeze-excite blocks), and in an int8 transformer also ADD, SUB, RSQRT, GELU and BATCH_MATMUL. Only the
main subgraph is inspected (the bodies of WHILE/IF ops are not).
"""

import json
import resource
import sys
import time

import numpy as np


def delegation(interpreter, total_ops: int) -> dict:
    """Which of the first ``total_ops`` nodes (the model's ops) an allocated interpreter's delegate took.

    Args:
      interpreter: an ``ai_edge_litert`` Interpreter after ``allocate_tensors()``.
      total_ops: its node count before ``allocate_tensors()``, i.e. before delegation.

    Returns:
      {"delegated_ops": int, "total_ops": int, "delegate_partitions": int, "undelegated": {op name: count}}.
    """
    nodes = interpreter._get_ops_details()  # the only op-level view LiteRT's Python API offers
    producer = {}
    for node in nodes[:total_ops]:
        for t in node["outputs"]:
            if t >= 0:
                producer[int(t)] = int(node["index"])
    delegated = set()
    partitions = nodes[total_ops:]
    for part in partitions:
        boundary = {int(t) for t in part["inputs"] if t >= 0}
        stack = [int(t) for t in part["outputs"] if t >= 0]
        seen = set()
        while stack:
            tensor = stack.pop()
            if tensor in seen or tensor in boundary:
                continue
            seen.add(tensor)
            op = producer.get(tensor)
            if op is None or op in delegated:
                continue
            delegated.add(op)
            stack.extend(int(t) for t in nodes[op]["inputs"] if t >= 0)
    undelegated = {}
    for node in nodes[:total_ops]:
        if int(node["index"]) not in delegated:
            undelegated[node["op_name"]] = undelegated.get(node["op_name"], 0) + 1
    return {
        "delegated_ops": len(delegated),
        "total_ops": int(total_ops),
        "delegate_partitions": len(partitions),
        "undelegated": dict(sorted(undelegated.items())),
    }


def load(path: str | None = None, threads: int = 1, content: bytes | None = None):
    """(interpreter after allocate_tensors, init_ms, delegation dict) for a .tflite path or bytes."""
    from ai_edge_litert.interpreter import Interpreter

    start = time.perf_counter_ns()
    if content is not None:
        interpreter = Interpreter(model_content=content, num_threads=threads)
    else:
        interpreter = Interpreter(model_path=path, num_threads=threads)
    total_ops = interpreter._interpreter.NumNodes()  # before allocate_tensors applies XNNPACK
    interpreter.allocate_tensors()
    init_ms = (time.perf_counter_ns() - start) / 1e6
    return interpreter, init_ms, delegation(interpreter, total_ops)


def _peak_rss_mb() -> float:
    """This process's peak resident set size in MiB (VmHWM; see the module docstring)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _measure(path: str, threads: int, num_runs: int, warmup_runs: int, seed: int, input_path=None) -> dict:
    interpreter, init_ms, delegated = load(path, threads)
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
    clock = time.perf_counter_ns
    invoke = interpreter.invoke
    start = clock()
    invoke()
    first_invoke_ms = (clock() - start) / 1e6
    for _ in range(warmup_runs):
        invoke()
    times_ns = np.empty(num_runs, dtype=np.int64)
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
        "init_ms": init_ms,
        "first_invoke_ms": first_invoke_ms,
        "peak_rss_mb": _peak_rss_mb(),
        **delegated,
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
