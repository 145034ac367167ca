"""What the LiteRT Quantizer did, per op and per layer: weight types, tensor SNR, each layer's error alone.

A "layer" is a Keras layer as the .tflite names it: the second part of an
op's output or weight tensor names ("model/dense_1/MatMul" is layer
"dense_1"). ``rank`` quantizes one layer at a time with the row's settings
(the others kept float, one calibration shared by all) and measures the model
output's SNR against fp32 on calibration inputs, as AIMET's per-layer
analysis does: the lowest SNR is the most sensitive layer. ``skip_top=N``
keeps the N most sensitive in float; ``skip=auto`` keeps those whose alone
error stands out (an SNR more than ``OUTLIER_DB`` below the median layer's).

Rankings are cached by the fp32 file's and the calibration's content in
$TFCOMPRESS_CACHE/sensitivity (the same folder root as the roof files).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import math
import os
import re
import warnings
from typing import Any

import numpy as np

from tfcompress._process import job_cpus, quiet_stderr
from tfcompress.recipes.base import NotApplicable

OUTLIER_DB = 10.0  # skip=auto: layers whose alone SNR is this far below the median layer's
RANK_SAMPLES = 64  # calibration inputs the alone-quantized outputs are compared on
NOTICES = re.compile(r"Created TensorFlow Lite XNNPACK delegate|^WARNING: All log messages before absl")
CHECKED_OPS = ("FULLY_CONNECTED", "CONV_2D", "BATCH_MATMUL", "EMBEDDING_LOOKUP", "DEPTHWISE_CONV_2D")
UNNAMED = ""  # the group of ops whose tensor names name no layer (never a candidate to keep float)
_WEIGHT_TYPES = ("int2", "int4", "int8", "uint8", "int16")


def lib():
    """The quantizer's modules (imported on first use: the study imports this module on every start)."""
    from litert_quantizer import algorithm_manager, qtyping, quantizer
    from litert_quantizer.utils import tfl_flatbuffer_utils, validation_utils

    return algorithm_manager, qtyping, quantizer, tfl_flatbuffer_utils, validation_utils


def op_names(model, graph) -> list[tuple[str, Any]]:
    """(op type name, operator) of every op of a ModelT's subgraph."""
    from ai_edge_litert import schema_py_generated as schema

    codes = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    out = []
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        out.append((codes.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM"), op))
    return out


def scope(op, graph, fb) -> str:
    return "^" + re.escape(fb.get_op_scope(op, graph.tensors)) + "$"


def signature_data(fp32: bytes, x: np.ndarray) -> dict[str, list[dict[str, np.ndarray]]]:
    """The quantizer's input format: {signature: [{input name: one example}, ...]}."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=fp32)
    signatures = interpreter.get_signature_list()
    if len(signatures) != 1 or len(next(iter(signatures.values()))["inputs"]) != 1:
        raise NotApplicable(f"quantize needs a .tflite with one signature of one input; this one has {signatures}.")
    key, signature = next(iter(signatures.items()))
    runner = interpreter.get_signature_runner(key)
    name = signature["inputs"][0]
    dtype = runner.get_input_details()[name]["dtype"]
    return {key: [{name: x[i : i + 1].astype(dtype)} for i in range(len(x))]}


def layer_of(names: list[str]) -> str | None:
    """The Keras layer an op belongs to, from its output and weight tensor names (None when they do not say)."""
    for full in names:
        for name in full.split(";"):
            parts = name.split("/")
            if len(parts) >= 3 and not parts[0].startswith(("serving_default", "StatefulPartitionedCall")):
                return parts[1]
    return None


def layer_ops(fp32: bytes, weighted_only: bool) -> dict[str, list[str]]:
    """{layer: the op scopes (quantizer recipe regexes) of its ops}, in graph order.

    ``weighted_only``: only layers with an op the quantizer quantizes weights of (weight-only and dynamic
    modes quantize nothing else).
    """
    *_, fb, _ = lib()
    model = fb.read_model(fp32)
    graph = model.subgraphs[0]
    out: dict[str, list[str]] = {}
    weighted: set[str] = set()

    def constant(i: int) -> bool:
        buffer = model.buffers[graph.tensors[i].buffer]
        return buffer.data is not None or bool(buffer.offset)

    for name, op in op_names(model, graph):
        # Its outputs' names, then its weights' (the last layer's output is named after the signature).
        names = [fb.get_tensor_name(graph.tensors[i]) for i in op.outputs if i >= 0]
        names += [fb.get_tensor_name(graph.tensors[i]) for i in op.inputs if i >= 0 and constant(i)]
        layer = layer_of(names) or UNNAMED
        out.setdefault(layer, []).append(scope(op, graph, fb))
        if name in CHECKED_OPS:
            weighted.add(layer)
    return {k: v for k, v in out.items() if k in weighted or not weighted_only}


def _snr_db(reference: np.ndarray, other: np.ndarray) -> float | None:
    noise = float(np.sum((reference.astype(np.float64) - other) ** 2))
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    if noise == 0:
        return None  # identical: no error at all
    return 10 * math.log10(signal / noise) if signal > 0 else -math.inf


def _cache_path(fp32: bytes, p, calibration: np.ndarray) -> str:
    from tfcompress.measure.roofs import cache_folder

    digest = hashlib.sha256(fp32)
    digest.update(np.ascontiguousarray(calibration).tobytes())
    digest.update(json.dumps(dataclasses.asdict(p), sort_keys=True).encode())
    return os.path.join(os.path.dirname(cache_folder()), "sensitivity", digest.hexdigest()[:32] + ".json")


def rank(fp32: bytes, p, calibration: np.ndarray, build) -> list[dict[str, Any]]:
    """Every layer quantized alone with ``p`` (the rest float): its output SNR in dB, most sensitive first.

    ``build(qt, fp32, p)`` loads the row's rules into a Quantizer (tfcompress.recipes.quantizer).

    Returns:
      [{"layer", "ops", "output_snr_db"}...]; ``output_snr_db`` None means the layer changed nothing.
    """
    from tfcompress.measure.evaluate import run_tflite

    p = dataclasses.replace(p, skip="", skip_top=0)
    path = _cache_path(fp32, p, calibration)
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    algorithm_manager, qtyping, quantizer, _, _ = lib()
    groups = layer_ops(fp32, weighted_only=p.activations in ("none", "float"))
    every_op = [s for scopes in layer_ops(fp32, weighted_only=False).values() for s in scopes]
    data = signature_data(fp32, calibration)
    x = calibration[:RANK_SAMPLES]
    reference = run_tflite(fp32, x)
    rows = []
    with warnings.catch_warnings(), quiet_stderr(NOTICES), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        full = quantizer.Quantizer(bytearray(fp32))
        build(full, fp32, p)
        result = full.calibrate(data, num_threads=job_cpus()) if full.need_calibration else None
        for layer, scopes in groups.items():
            if layer == UNNAMED:
                continue
            qt = quantizer.Quantizer(bytearray(fp32))
            build(qt, fp32, p)
            mine = set(scopes)
            never = algorithm_manager.AlgorithmName.NO_QUANTIZE
            for scope in every_op:
                if scope not in mine:
                    qt.update_quantization_recipe(scope, qtyping.TFLOperationName.ALL_SUPPORTED, algorithm_key=never)
            try:
                tflite = bytes(qt.quantize(result, enable_progress_bar=False,
                                           enable_progress_report=False).quantized_model)  # fmt: skip
                snr = _snr_db(reference, run_tflite(tflite, x))
            except Exception:  # the quantizer cannot do this layer alone: rank it by what it can measure
                snr = None
            rows.append({"layer": layer, "ops": len(scopes), "output_snr_db": snr})
    rows.sort(key=lambda r: math.inf if r["output_snr_db"] is None else r["output_snr_db"])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + f".{os.getpid()}.tmp", "w", encoding="utf-8") as f:
        json.dump(rows, f)
    os.replace(path + f".{os.getpid()}.tmp", path)
    return rows


def choose(ranking: list[dict[str, Any]], top: int, auto: bool) -> list[str]:
    """The layers to keep float: the ``top`` most sensitive, or (``auto``, top 0) the outliers."""
    if top:
        if top > len(ranking):
            raise ValueError(f"skip_top={top} is more than the {len(ranking)} layers the quantizer quantizes here.")
        return [r["layer"] for r in ranking[:top]]
    snrs = [r["output_snr_db"] for r in ranking if r["output_snr_db"] is not None]
    if not auto or not snrs:
        return []
    median = float(np.median(snrs))
    return [r["layer"] for r in ranking if r["output_snr_db"] is not None and r["output_snr_db"] < median - OUTLIER_DB]


def quantized_ops(tflite: bytes) -> tuple[dict[str, str], dict[str, str]]:
    """({op type: how its weights are stored, e.g. 'int4 block32'}, {tensor name: type}) read from the file."""
    *_, fb, _ = lib()
    from ai_edge_litert import schema_py_generated as schema

    types = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    model = fb.read_model(tflite)
    graph = model.subgraphs[0]
    dtypes = {fb.get_tensor_name(t): types.get(t.type, str(t.type)) for t in graph.tensors}
    named = op_names(model, graph)
    consumers: dict[int, list[str]] = {}
    for name, op in named:
        for i in op.inputs:
            consumers.setdefault(i, []).append(name)
    seen: dict[str, set[str]] = {}
    for name, op in named:
        for i in op.inputs:
            tensor = graph.tensors[i] if i >= 0 else None
            if tensor is None or (
                model.buffers[tensor.buffer].data is None and not model.buffers[tensor.buffer].offset
            ):
                continue  # not a constant
            dtype = types.get(tensor.type, str(tensor.type))
            if dtype not in _WEIGHT_TYPES:  # int32 and int64: biases and shapes
                continue
            details = tensor.quantization.details if tensor.quantization else None
            block = getattr(details, "blockSize", None)
            scales = tensor.quantization.scale if tensor.quantization is not None else None
            how = f"block{block}" if block else ("channel" if scales is not None and len(scales) > 1 else "tensor")
            # Weight-only files dequantize the weight first: name the op that consumes it.
            users = consumers.get(op.outputs[0], [name]) if name == "DEQUANTIZE" else [name]
            for user in users:
                seen.setdefault(user, set()).add(f"{dtype} {how}")
    return {op: ", ".join(sorted(v)) for op, v in sorted(seen.items())}, dtypes


def layer_errors(comparison, dtypes: dict[str, str], samples: int) -> list[dict[str, Any]]:
    """Per-tensor error of the quantized model against fp32, worst SNR first (SNR in dB, not the linear ratio)."""
    (signature,) = comparison.available_signature_keys()
    result = comparison.get_signature_comparison_result(signature)
    kinds = [("weight", result.constant_tensors), ("activation", result.intermediate_tensors),
             ("output", result.output_tensors)]  # fmt: skip
    rows = []
    for kind, tensors in kinds:
        for name, errors in tensors.items():
            snr = errors.get("snr")
            rows.append({
                "tensor": name,
                "kind": kind,
                "dtype": dtypes.get(name),
                "snr_db": None if snr is None or snr <= 0 or not math.isfinite(snr) else 10 * math.log10(snr),
                "cosine": _finite(errors.get("cosine_similarity")),
                "mse": _finite(errors.get("mse")),
                "samples": samples,
            })  # fmt: skip
    return sorted(rows, key=lambda r: (r["snr_db"] is None, r["snr_db"] if r["snr_db"] is not None else 0.0))


def layer_snr(errors: list[dict[str, Any]]) -> dict[str, float]:
    """Each layer's worst tensor SNR (dB) in a quantized row's ``layer_errors``."""
    out: dict[str, float] = {}
    for e in errors:
        layer = layer_of([e["tensor"]])
        if layer is not None and e["snr_db"] is not None:
            out[layer] = min(out.get(layer, math.inf), e["snr_db"])
    return out


def _finite(value) -> float | None:
    return None if value is None or not math.isfinite(float(value)) else float(value)
