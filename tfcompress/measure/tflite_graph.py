"""What is inside a .tflite file: its operators and their tensors' types.

Imports LiteRT and numpy only.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tfcompress.measure.evaluate import load_interpreter


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    index: int
    name: str
    dtype: np.dtype
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1


@dataclasses.dataclass(frozen=True)
class OpInfo:
    """One operator of the graph, with its input and output tensors (optional inputs left out)."""

    name: str  # e.g. CONV_2D
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]


def ops(model: bytes | str) -> list[OpInfo]:
    """The operators of a .tflite model (bytes or path), in execution order."""
    interpreter = load_interpreter(model)
    tensors = {
        t["index"]: TensorInfo(t["index"], t["name"], np.dtype(t["dtype"]), tuple(int(d) for d in t["shape"]))
        for t in interpreter.get_tensor_details()
    }
    # _get_ops_details is the only op-level view LiteRT's Python API offers.
    return [
        OpInfo(
            op["op_name"],
            tuple(tensors[i] for i in op["inputs"] if i >= 0),
            tuple(tensors[i] for i in op["outputs"] if i >= 0),
        )
        for op in interpreter._get_ops_details()
    ]


def io_dtypes(model: bytes | str) -> tuple[list[np.dtype], list[np.dtype]]:
    """The dtypes of the model's inputs and outputs."""
    interpreter = load_interpreter(model)
    return (
        [np.dtype(d["dtype"]) for d in interpreter.get_input_details()],
        [np.dtype(d["dtype"]) for d in interpreter.get_output_details()],
    )


WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")


def weights(model: bytes | str) -> list[tuple[str, np.ndarray]]:
    """The kernel of every conv and fully-connected op, as stored in the file.

    Returns (op name, array) pairs in execution order. A float16 kernel read
    through a DEQUANTIZE op is returned as its float16 constant; int8 kernels
    as int8 (their zero point is 0, so zeros stay zeros).
    """
    interpreter = load_interpreter(model)
    all_ops = ops(model)
    produced_by = {t.index: op for op in all_ops for t in op.outputs}
    result = []
    for op in all_ops:
        if op.name not in WEIGHTED_OPS:
            continue
        kernel = op.inputs[1]  # (input, filter, bias); TRANSPOSE_CONV is (output_shape, filter, input)
        source = produced_by.get(kernel.index)
        if source is not None and source.name == "DEQUANTIZE":
            kernel = source.inputs[0]
        result.append((op.name, np.array(interpreter.get_tensor(kernel.index))))
    return result


def sparsity(kernel: np.ndarray) -> float:
    """The fraction of exact zeros."""
    return float(np.mean(kernel == 0)) if kernel.size else 0.0


def is_m_by_n(kernel: np.ndarray, m: int = 2, n: int = 4) -> bool:
    """Whether every block of n consecutive input weights holds at most m non-zeros.

    TFLite stores conv kernels as (out, h, w, in) and dense ones as (out, in):
    the input axis is the last one.
    """
    if kernel.shape[-1] % n:
        return False
    blocks = (kernel != 0).reshape(-1, n)
    return bool(np.all(blocks.sum(axis=1) <= m))


def weight_stats(model: bytes | str) -> dict:
    """Sparsity, 2:4 structure and distinct values of the kernels in a .tflite file.

    Returns:
      sparsity: zeros over all kernel weights; layer_sparsity: per kernel, in
      op order; two_four: whether every kernel whose input axis is a multiple
      of 4 is 2:4 sparse (kernels with fewer inputs, like a first conv on one
      channel, cannot be and are listed in two_four_exempt); unique_weights:
      the largest number of distinct values in any kernel.
    """
    kernels = weights(model)
    total = sum(k.size for _, k in kernels)
    eligible = [(i, k) for i, (_, k) in enumerate(kernels) if k.shape[-1] % 4 == 0]
    return {
        "sparsity": float(sum(np.sum(k == 0) for _, k in kernels) / total) if total else 0.0,
        "layer_sparsity": [
            {"op": f"{i}:{name}", "shape": list(k.shape), "sparsity": sparsity(k)}
            for i, (name, k) in enumerate(kernels)
        ],  # fmt: skip
        "two_four": bool(eligible) and all(is_m_by_n(k) for _, k in eligible),
        "two_four_exempt": [f"{i}:{name}" for i, (name, k) in enumerate(kernels) if k.shape[-1] % 4],
        "unique_weights": max((int(np.unique(k).size) for _, k in kernels), default=0),
    }
