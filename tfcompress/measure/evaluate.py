"""Task quality computed on the .tflite itself, in the LiteRT Interpreter (or its CompiledModel API).

This module imports only LiteRT and numpy, not TensorFlow, so it is cheap to
use in a child process or a notebook.
"""

from __future__ import annotations

import re

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from tfcompress._process import quiet_stderr

_XNNPACK_NOTICE = re.compile(r"^INFO: Created TensorFlow Lite XNNPACK delegate")


def as_input(x: np.ndarray, model: bytes | str) -> np.ndarray:
    """Examples as the model's input tensor takes them: quantized for int8/int16 inputs, cast otherwise."""
    return _quantize(x, load_interpreter(model).get_input_details()[0])


def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    """Float input -> the tensor's dtype, with its scale and zero point when it is quantized."""
    dtype = detail["dtype"]
    scale, zero_point = detail["quantization"]
    if np.issubdtype(dtype, np.integer) and scale:
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)
    return x.astype(dtype)


def _dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    if np.issubdtype(y.dtype, np.integer) and scale:
        return (y.astype(np.float32) - zero_point) * scale
    return y.astype(np.float32)


def load_interpreter(model: bytes | str, num_threads: int = 1) -> Interpreter:
    """An interpreter (XNNPACK on, as by default) from .tflite bytes or a file path."""
    if isinstance(model, (bytes, bytearray)):
        return Interpreter(model_content=bytes(model), num_threads=num_threads)
    return Interpreter(model_path=str(model), num_threads=num_threads)


def allocate(interpreter: Interpreter) -> None:
    """``allocate_tensors()``, without the notice LiteRT prints when it applies its default XNNPACK delegate."""
    with quiet_stderr(_XNNPACK_NOTICE):
        interpreter.allocate_tensors()


def run_tflite(model: bytes | str, x: np.ndarray, batch_size: int = 100, num_threads: int = 1) -> np.ndarray:
    """Runs a one-input, one-output .tflite model over x and returns float outputs.

    Inputs are quantized and outputs dequantized with the tensors' own scale
    and zero point, so int8 and int16 models take and give real values. The
    batch axis is resized to ``batch_size`` when the model allows it, else
    examples run one at a time.
    """
    interpreter = load_interpreter(model, num_threads)
    inp = interpreter.get_input_details()[0]
    out_index = interpreter.get_output_details()[0]["index"]
    batch = min(batch_size, len(x))
    try:
        interpreter.resize_tensor_input(inp["index"], [batch, *inp["shape"][1:]])
        allocate(interpreter)
    except (RuntimeError, ValueError):
        batch = 1
        interpreter = load_interpreter(model, num_threads)
        allocate(interpreter)
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    outputs = []
    for start in range(0, len(x), batch):
        chunk = x[start : start + batch]
        n = len(chunk)
        if n < batch:  # pad the last chunk rather than re-allocate
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - n, axis=0)])
        interpreter.set_tensor(inp["index"], _quantize(chunk, inp))
        interpreter.invoke()
        outputs.append(_dequantize(interpreter.get_tensor(out_index), out)[:n])
    return np.concatenate(outputs)


def top1(outputs: np.ndarray) -> np.ndarray:
    """Class ids of the largest output per example."""
    return np.argmax(outputs.reshape(len(outputs), -1), axis=-1)


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of predictions equal to the labels."""
    return float(np.mean(np.asarray(predictions) == np.asarray(labels)))


def run_compiled_model(model: bytes | str, x: np.ndarray, num_threads: int = 1) -> np.ndarray:
    """``run_tflite`` through LiteRT's CompiledModel API on the CPU instead of the Interpreter.

    One example at a time (CompiledModel buffers have the file's batch-1 shape); inputs are quantized
    and outputs dequantized with the tensors' own scale and zero point, read from the file as
    ``run_tflite`` reads them.
    """
    from ai_edge_litert.compiled_model import CompiledModel
    from ai_edge_litert.environment import Environment, EnvironmentOptions
    from ai_edge_litert.hardware_accelerator import HardwareAccelerator
    from ai_edge_litert.options import CpuOptions, Options

    reference = load_interpreter(model)  # the tensors' quantization, which CompiledModel's details omit
    inp, out = reference.get_input_details()[0], reference.get_output_details()[0]
    env = Environment.create(options=EnvironmentOptions())
    options = Options(
        hardware_accelerators=HardwareAccelerator(HardwareAccelerator.CPU),
        cpu_options=CpuOptions(num_threads=num_threads),
    )
    if isinstance(model, (bytes, bytearray)):
        compiled = CompiledModel.from_buffer(bytes(model), environment=env, options=options)
    else:
        compiled = CompiledModel.from_file(str(model), environment=env, options=options)
    key = next(iter(compiled.get_signature_list()), "serving_default")
    in_name = next(iter(compiled.get_input_tensor_details(key)))
    out_name = next(iter(compiled.get_output_tensor_details(key)))
    in_buffer = compiled.create_input_buffer_by_name(key, in_name)
    out_buffer = compiled.create_output_buffer_by_name(key, out_name)
    size = int(np.prod(out["shape"]))
    outputs = []
    for i in range(len(x)):
        in_buffer.write(_quantize(x[i : i + 1], inp))
        compiled.run_by_name(key, {in_name: in_buffer}, {out_name: out_buffer})
        y = np.asarray(out_buffer.read(size, out["dtype"])).reshape(out["shape"])
        outputs.append(_dequantize(y, out))
    return np.concatenate(outputs)
