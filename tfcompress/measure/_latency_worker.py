"""Child process of ``tfcompress.benchmark.measure_latency``.

Usage: python -I tfcompress/measure/_latency_worker.py '{"path": ..., "threads": 1, "runtime": "interpreter", ...}'

Prints one JSON line: one round of timings (``times_ms``, every timed run) and what explains them, or
{"error": "..."} with exit status 1. With ``-`` as its argument it reads ``{"batch": [entry, ...]}`` from
its standard input and times every entry in turn, printing one line per entry with its ``index``
(``tfcompress.measure.rounds.interleaved`` runs each round of many files in one process this way).
``runtime`` is ``interpreter`` (``ai_edge_litert.interpreter``) or ``compiled_model`` (LiteRT's
CompiledModel API on the CPU, set up as ``litert-benchmark`` sets it up).
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
  ops XNNPACK took, see ``delegation`` (Interpreter); ``fully_accelerated`` (CompiledModel, which
  says no more than that).
- ``os_threads``: the process's thread count after the runs. The Interpreter sizes two pools to
  ``num_threads``: XNNPACK's, and the builtin kernels' for the ops XNNPACK leaves out, so a partly
  delegated model at 2 threads runs with two worker threads beside the main one.
- ``input_dtypes``: the dtype of each input tensor as fed.
- ``load_avg``: the machine's 1-minute load average after the runs. Two thread pools on a core that
  another process also wants slow a multi-threaded run down several-fold (BUILD.md), so a round taken
  on a busy machine says so.

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


def _input_values(details, seed: int, input_path=None) -> list:
    """One array per input: the example in ``input_path`` (checked against the tensor), else seeded random data.

    Random floats are uniform in [-1, 1) and random integers span the type's range, clipped to int8's
    (what litert-benchmark feeds), so the two tools time the same kind of input.
    """
    rng = np.random.default_rng(seed)
    values = []
    for shape, dtype in details:
        if input_path is not None:  # a real example, already in the tensor's shape and dtype
            value = np.load(input_path, allow_pickle=False)
            if value.shape != tuple(shape) or value.dtype != dtype:
                raise ValueError(
                    f"input {value.dtype}{list(value.shape)} does not match the model's {np.dtype(dtype)}"
                    + f"{list(shape)}"
                )
        elif np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            low, high = max(int(info.min), -128), min(int(info.max), 127)
            value = rng.integers(low, high, size=shape, endpoint=True).astype(dtype)
        else:
            value = rng.uniform(-1.0, 1.0, size=shape).astype(dtype)
        values.append(value)
    return values


def _interpreter_runner(path: str, threads: int, seed: int, input_path=None):
    """(invoke callable, init_ms, delegation dict, input dtypes) for the Interpreter."""
    interpreter, init_ms, delegated = load(path, threads)
    details = interpreter.get_input_details()
    values = _input_values([(d["shape"], d["dtype"]) for d in details], seed, input_path)
    for detail, value in zip(details, values, strict=True):
        interpreter.set_tensor(detail["index"], value)
    return interpreter.invoke, init_ms, delegated, [str(v.dtype) for v in values]


def _compiled_model_runner(path: str, threads: int, seed: int, input_path=None):
    """(run callable, init_ms, delegation dict, input dtypes) for LiteRT's CompiledModel on the CPU.

    Set up as ``litert-benchmark`` does (ai_edge_litert/tools/benchmark_litert_model.py): an
    Environment, ``CompiledModel.from_file`` with the CPU accelerator and ``num_threads``, buffers
    created once, ``run_by_name`` on the first signature. Delegation is only known as a whole
    (``is_fully_accelerated``).
    """
    from ai_edge_litert.compiled_model import CompiledModel
    from ai_edge_litert.environment import Environment, EnvironmentOptions
    from ai_edge_litert.hardware_accelerator import HardwareAccelerator
    from ai_edge_litert.options import CpuOptions, Options

    start = time.perf_counter_ns()
    env = Environment.create(options=EnvironmentOptions())
    options = Options(
        hardware_accelerators=HardwareAccelerator(HardwareAccelerator.CPU), cpu_options=CpuOptions(num_threads=threads)
    )
    model = CompiledModel.from_file(path, environment=env, options=options)
    init_ms = (time.perf_counter_ns() - start) / 1e6
    signatures = list(model.get_signature_list())
    key = signatures[0] if signatures else "serving_default"
    inputs = model.get_input_tensor_details(key)
    names = list(inputs)
    details = [(inputs[n].get("shape", [1]), np.dtype(inputs[n].get("dtype", "float32"))) for n in names]
    values = _input_values(details, seed, input_path)
    in_buffers = {n: model.create_input_buffer_by_name(key, n) for n in names}
    out_buffers = {n: model.create_output_buffer_by_name(key, n) for n in model.get_output_tensor_details(key)}
    for n, value in zip(names, values, strict=True):
        in_buffers[n].write(value)
    fully = bool(model.is_fully_accelerated())
    delegated = {"fully_accelerated": fully}

    def run():
        model.run_by_name(key, in_buffers, out_buffers)

    run._keep = (env, model)  # the buffers and model live as long as the callable
    return run, init_ms, delegated, [str(v.dtype) for v in values]


RUNNERS = {"interpreter": _interpreter_runner, "compiled_model": _compiled_model_runner}


def _measure(
    path: str,
    threads: int,
    num_runs: int,
    warmup_runs: int,
    seed: int,
    input_path=None,
    runtime: str = "interpreter",
    min_time_s: float = 0.0,
) -> dict:
    """One round: the first run, ``warmup_runs`` untimed runs, then timed runs until both ``num_runs``
    runs and ``min_time_s`` seconds of timed runs are done. Every timing is returned (``times_ms``)."""
    if runtime not in RUNNERS:
        raise ValueError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNNERS)}")
    invoke, init_ms, delegated, input_dtypes = RUNNERS[runtime](path, threads, seed, input_path)
    clock = time.perf_counter_ns
    start = clock()
    invoke()
    first_invoke_ms = (clock() - start) / 1e6
    for _ in range(warmup_runs):
        invoke()
    times_ns = []
    min_time_ns = int(min_time_s * 1e9)
    began = clock()
    while len(times_ns) < num_runs or clock() - began < min_time_ns:
        start = clock()
        invoke()
        times_ns.append(clock() - start)
    ms = np.asarray(times_ns, dtype=np.float64) / 1e6
    return {
        "threads": threads,
        "runtime": runtime,
        "times_ms": [round(float(t), 6) for t in ms],
        "warmup_runs": int(warmup_runs),
        "init_ms": init_ms,
        "first_invoke_ms": first_invoke_ms,
        "peak_rss_mb": _peak_rss_mb(),
        "os_threads": _os_threads(),
        "load_avg": _load_avg(),
        "input_dtypes": input_dtypes,
        **delegated,
    }


def _load_avg() -> float | None:
    """The machine's 1-minute load average after the runs: above the core count, other work shared the cores."""
    try:
        import os

        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def _os_threads() -> int | None:
    """How many threads this process has now (the runtime's thread pools included), from /proc."""
    try:
        import os

        return len(os.listdir("/proc/self/task"))
    except OSError:
        return None


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


def _reset_peak_rss() -> bool:
    """Resets VmHWM to the current resident size (Linux >= 4.0), so the next file's peak is its own."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _batch(args: dict) -> int:
    """Times each entry of ``args["batch"]`` in turn in this process, one JSON line per entry as it finishes.

    Each line is the entry's result (or {"error": ...}) with its ``index``. The interpreter of one entry
    is released before the next is loaded, and the peak-memory mark is reset, so that ``peak_rss_mb`` is
    the entry's own peak over the process's resident size at that point (None where it cannot be reset).
    """
    import gc

    for i, entry in enumerate(args["batch"]):
        gc.collect()
        own_peak = _reset_peak_rss() or i == 0
        try:
            result = _measure(entry["path"], entry["threads"], entry["num_runs"], entry["warmup_runs"],
                              entry["seed"], entry.get("input_path"), entry.get("runtime", "interpreter"),
                              entry.get("min_time_s", 0.0))  # fmt: skip
            if not own_peak:
                result["peak_rss_mb"] = None
        except Exception as e:  # this entry's failure is data; the next entries still run
            result = {"error": f"{type(e).__name__}: {' '.join(str(e).split())}"}
        print(json.dumps({"index": i, **result}), flush=True)
    return 0


def main(argv: list[str]) -> int:
    args = json.loads(argv[1]) if argv[1] != "-" else json.loads(sys.stdin.readline())
    if "parent_pid" in args:
        _die_with_parent(args["parent_pid"])
    if "batch" in args:
        return _batch(args)
    try:
        result = _measure(
            args["path"],
            args["threads"],
            args["num_runs"],
            args["warmup_runs"],
            args["seed"],
            args.get("input_path"),
            args.get("runtime", "interpreter"),
            args.get("min_time_s", 0.0),
        )
    except Exception as e:  # report any Python-level failure as data for the parent
        print(json.dumps({"error": f"{type(e).__name__}: {' '.join(str(e).split())}"}), flush=True)
        return 1
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
