"""What is inside a .tflite file: its operators and their tensors' types.

Imports LiteRT and numpy only.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tfcompress.evaluate import load_interpreter


@dataclasses.dataclass(frozen=True)
class TensorInfo:
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
        t["index"]: TensorInfo(t["name"], np.dtype(t["dtype"]), tuple(int(d) for d in t["shape"]))
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
