"""The LiteRT Quantizer back end: the `quantize` recipe, which quantizes the fp32 .tflite file.

Post-training quantization inside the TFLite converter is deprecated in
LiteRT's documentation; the LiteRT Quantizer (``litert-quantizer``, the
renamed ai-edge-quantizer) starts from the float .tflite file instead and
offers what the converter cannot: 4- and 2-bit weights, blockwise scales,
weight-only quantization, int16 activations, layers and op types kept in
float, algorithms beyond min-max, and a per-tensor comparison with the float
model. This module is the only one that imports it.

``quantize`` converts the model to fp32 exactly as the ``fp32`` recipe does
(a .tflite model is used as it is), then builds a quantizer recipe from its
parameters:

- ``activations``: ``none`` weight-only (weights dequantized to float before
  the op), ``float`` dynamic (integer compute, activations quantized on the
  fly), ``8`` or ``16`` static (calibrated on the study's calibration inputs;
  integer input and output).
- ``granularity``: blockwise applies to the op types the quantizer supports
  it for (FULLY_CONNECTED); every other op falls back to channelwise, and the
  row records what each op type got (``quantized_ops``).
- ``skip``: layers or tensors (regex on op output names) left in float.
- ``float_ops``: op types (regex on names such as SOFTMAX) not quantized; the
  ops that compute their inputs keep quantized weights but float outputs.
- ``ops``: op types to quantize (regex); the others stay float.

Every row stores the quantizer's per-tensor comparison with the fp32 file on the
calibration inputs (``layer_errors``: SNR in dB, cosine similarity, MSE)."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import os
import re
import types
import warnings
from typing import Any

import numpy as np

from tfcompress._process import quiet_stderr
from tfcompress.fields import Column, param
from tfcompress.recipes.base import Compressed, ExportBackend, NotApplicable, RecipeContext, register_backend
from tfcompress.recipes.converter import Quantization, convert

WEIGHTS = (8, 4, 2)
ACTIVATIONS = ("none", "float", "8", "16")
GRANULARITIES = ("channel", "tensor", "block32", "block64", "block128", "block256")
ALGORITHMS = ("min_max", "gptq", "octav", "mse", "hadamard")
VALIDATION_SAMPLES = 64  # calibration inputs the per-tensor comparison runs on (all tensors kept: memory)
_WEIGHT_TYPES = ("int2", "int4", "int8", "uint8", "int16")
_NOTICES = re.compile(r"Created TensorFlow Lite XNNPACK delegate|^WARNING: All log messages before absl")


@dataclasses.dataclass(frozen=True)
class QuantizeParams:
    """Parameters of `quantize` (the LiteRT Quantizer)."""

    weights: int = param(8, "quantize: bits of the quantized weights (8, 4 or 2).", flag="quantize_weights")
    activations: str = param("float", "quantize: none (weight-only), float (dynamic), 8 or 16 (static, calibrated).",
                             flag="quantize_activations", choices=ACTIVATIONS)  # fmt: skip
    granularity: str = param("channel", "quantize: weight scales per channel, per tensor or per block of 32-256 "
                             + "(blockwise where the op supports it, else per channel).",
                             flag="quantize_granularity", choices=GRANULARITIES)  # fmt: skip
    algorithm: str = param("min_max", "quantize: how the quantizer chooses scales.", flag="quantize_algorithm",
                           choices=ALGORITHMS)  # fmt: skip
    skip: str = param("", "quantize: regex of layer or tensor names kept in float.", flag="quantize_skip")
    float_ops: str = param("", "quantize: regex of op types whose activations stay float (e.g. SOFTMAX).",
                           flag="quantize_float_ops")  # fmt: skip
    ops: str = param("", "quantize: regex of op types to quantize (empty: every supported one).",
                     flag="quantize_ops")  # fmt: skip

    def __post_init__(self):
        if self.weights not in WEIGHTS:
            raise ValueError(f"weights must be one of {', '.join(map(str, WEIGHTS))}, got {self.weights}.")
        for name, allowed in (("activations", ACTIVATIONS), ("granularity", GRANULARITIES), ("algorithm", ALGORITHMS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}.")
        for name in ("skip", "float_ops", "ops"):
            try:
                re.compile(getattr(self, name))
            except re.error as e:
                raise ValueError(f"{name}={getattr(self, name)!r} is not a regular expression: {e}.") from None
        problem = unsupported(self)
        if problem:
            raise ValueError(problem)


def _lib():
    """The quantizer's modules (imported on first use: the study imports this module on every start)."""
    from litert_quantizer import algorithm_manager, qtyping, quantizer
    from litert_quantizer.utils import tfl_flatbuffer_utils, validation_utils

    return algorithm_manager, qtyping, quantizer, tfl_flatbuffer_utils, validation_utils


_GRANULARITY = {"channel": "CHANNELWISE", "tensor": "TENSORWISE", "block32": "BLOCKWISE_32",
                "block64": "BLOCKWISE_64", "block128": "BLOCKWISE_128", "block256": "BLOCKWISE_256"}  # fmt: skip
_ALGORITHM = {"min_max": "MIN_MAX_UNIFORM_QUANT", "gptq": "GPTQ", "octav": "OCTAV", "mse": "MSE",
              "hadamard": "HADAMARD_ROTATION"}  # fmt: skip
_LAYOUT_OPS = ("TRANSPOSE", "RESHAPE", "SQUEEZE", "EXPAND_DIMS")  # move values, compute nothing
_CHECKED_OPS = ("FULLY_CONNECTED", "CONV_2D", "BATCH_MATMUL", "EMBEDDING_LOOKUP", "DEPTHWISE_CONV_2D")


def _op_config(p: QuantizeParams, granularity: str | None = None):
    """(algorithm key, the quantizer's OpQuantizationConfig) for the parameters."""
    algorithm_manager, qtyping, *_ = _lib()
    weight = qtyping.TensorQuantizationConfig(
        num_bits=p.weights,
        symmetric=True,
        granularity=qtyping.QuantGranularity[_GRANULARITY[granularity or p.granularity]],
    )
    algorithm = algorithm_manager.AlgorithmName[_ALGORITHM[p.algorithm]]
    precision = qtyping.ComputePrecision
    if p.activations == "none":
        config = qtyping.OpQuantizationConfig(
            weight_tensor_config=weight, compute_precision=precision.FLOAT, explicit_dequantize=True
        )
    elif p.activations == "float":
        config = qtyping.OpQuantizationConfig(
            weight_tensor_config=weight, compute_precision=precision.INTEGER, explicit_dequantize=False
        )
    else:
        activation = qtyping.TensorQuantizationConfig(
            num_bits=int(p.activations),
            symmetric=p.activations == "16",
            granularity=qtyping.QuantGranularity.TENSORWISE,
        )
        config = qtyping.OpQuantizationConfig(
            activation_tensor_config=activation, weight_tensor_config=weight, compute_precision=precision.INTEGER
        )
    return algorithm, config


def _supported_ops(p: QuantizeParams) -> list[str]:
    """The weighted op types the quantizer accepts these parameters for (its own config check)."""
    algorithm_manager, qtyping, *_ = _lib()
    algorithm, config = _op_config(p)
    supported = []
    for op in _CHECKED_OPS:
        try:
            algorithm_manager.check_op_quantization_config(algorithm, qtyping.TFLOperationName[op], config)
            supported.append(op)
        except (ValueError, KeyError):
            pass
    return supported


def _algorithm_limit(p) -> str | None:
    """A limit the quantizer's algorithms raise only while quantizing, which its config check does not know."""
    if p.algorithm == "mse" and p.granularity.startswith("block"):
        return "its MSE algorithm has no blockwise mode"
    if p.algorithm == "hadamard" and p.activations in ("8", "16"):
        return "its Hadamard rotation has no static (integer activation) mode"
    return None


def _can(p) -> bool:
    return bool(_supported_ops(p)) and _algorithm_limit(p) is None


def unsupported(p: QuantizeParams) -> str | None:
    """Why the quantizer cannot do this combination, naming the nearest one it can; None when it can."""
    if _can(p):
        return None
    changes = [{"granularity": "channel"}, {"algorithm": "min_max"}, {"activations": "float"}, {"weights": 8},
               {"algorithm": "min_max", "granularity": "channel"}, {"activations": "float", "weights": 8}]  # fmt: skip
    nearest = None
    for change in changes:
        candidate = types.SimpleNamespace(**(_combo(p) | change))  # not a QuantizeParams: that would check itself
        if _can(candidate):
            nearest = change
            break
    what = ":".join(f"{k}={v}" for k, v in _combo(p).items())
    hint = ""
    if nearest:
        hint = "; the nearest it can do is quantize:" + ":".join(f"{k}={v}" for k, v in (_combo(p) | nearest).items())
    why = _algorithm_limit(p)
    if why:
        return f"the LiteRT Quantizer cannot quantize with {what}: {why}{hint}."
    return f"the LiteRT Quantizer cannot quantize any op type with {what}{hint}."


def _combo(p) -> dict[str, Any]:
    return {k: getattr(p, k) for k in ("weights", "activations", "granularity", "algorithm")}


def _op_names(model, graph) -> list[tuple[str, Any]]:
    """(op type name, operator) of every op of a ModelT's subgraph."""
    from ai_edge_litert import schema_py_generated as schema

    codes = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    out = []
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        out.append((codes.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM"), op))
    return out


def _build(qt, fp32: bytes, p: QuantizeParams) -> dict[str, str]:
    """Loads the parameters into the quantizer; returns {op scope regex: why it stays float} for float_ops."""
    algorithm_manager, qtyping, _, fb, _ = _lib()
    algorithm, config = _op_config(p)
    all_ops = [n for n in qtyping.TFLOperationName.__members__ if n not in ("ALL_SUPPORTED",)]
    targets = (
        [qtyping.TFLOperationName.ALL_SUPPORTED]
        if not p.ops
        else [qtyping.TFLOperationName[n] for n in all_ops if re.fullmatch(p.ops, n)]
    )
    if p.ops and not targets:
        raise NotApplicable(f"quantize: ops={p.ops!r} matches no op type the quantizer knows.")
    blockwise = p.granularity.startswith("block")
    for target in targets:
        if blockwise:  # the op types without blockwise support fall back to channelwise (an earlier, wider rule)
            fallback = _op_config(p, "channel")
            qt.update_quantization_recipe(".*", target, fallback[1], fallback[0])
        qt.update_quantization_recipe("(?:.*)" if blockwise else ".*", target, config, algorithm)
    kept: dict[str, str] = {}
    if not (p.float_ops or p.skip):
        return kept
    model = fb.read_model(fp32)
    graph = model.subgraphs[0]
    named = _op_names(model, graph)

    def keep_float(op, why: str, config=None) -> None:
        """The op's own rule (its output names, exactly): float, or ``config`` (float output, quantized weights)."""
        scope = _scope(op, graph, fb)
        kept[scope] = why
        if config is None:
            qt.update_quantization_recipe(scope, every_op, algorithm_key=algorithm_manager.AlgorithmName.NO_QUANTIZE)
        else:
            qt.update_quantization_recipe(scope, every_op, config[1], config[0])

    every_op = qtyping.TFLOperationName.ALL_SUPPORTED
    if p.float_ops:
        producers = {out: op for _, op in named for out in op.outputs}
        op_type = {id(op): name for name, op in named}
        dynamic = _op_config(dataclasses.replace(p, activations="float"))
        for name, op in named:
            if not re.fullmatch(p.float_ops, name):
                continue
            keep_float(op, name)
            if p.activations in ("none", "float"):  # weight-only and dynamic: every op's output is float already
                continue
            for i in op.inputs:
                # Static modes: the op computing a float op's input is float too (a weighted op keeps int weights;
                # under a dynamic rule a weightless ADD would still compute in int8). Layout ops are passed through.
                feeder = producers.get(i)
                while feeder is not None and _scope(feeder, graph, fb) not in kept:
                    keep_float(feeder, f"feeds {name}", dynamic if op_type[id(feeder)] in _CHECKED_OPS else None)
                    if op_type[id(feeder)] not in _LAYOUT_OPS or not len(feeder.inputs):
                        break
                    feeder = producers.get(feeder.inputs[0])
    if p.skip:  # by the op's output names or its weights' names (a model's last layer outputs "Identity")
        for _, op in named:
            names = [fb.get_tensor_name(graph.tensors[i]) for i in list(op.inputs) + list(op.outputs) if i >= 0]
            if any(re.search(p.skip, n) for n in names):
                keep_float(op, f"skip={p.skip}")
    return kept


def _scope(op, graph, fb) -> str:
    return "^" + re.escape(fb.get_op_scope(op, graph.tensors)) + "$"


def _signature_data(fp32: bytes, x: np.ndarray) -> dict[str, list[dict[str, np.ndarray]]]:
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


def quantize(fp32: bytes, p: QuantizeParams, calibration: np.ndarray) -> tuple[bytes, dict[str, Any]]:
    """The fp32 .tflite quantized by the LiteRT Quantizer, and the row's extras (what each op got, per-tensor error)."""
    _, _, quantizer, fb, vu = _lib()
    qt = quantizer.Quantizer(bytearray(fp32))
    with warnings.catch_warnings(), quiet_stderr(_NOTICES):
        warnings.simplefilter("ignore")  # "experimental_preserve_all_tensors ... for debugging purposes only"
        kept = _build(qt, fp32, p)
        data = _signature_data(fp32, calibration)
        result = None
        if qt.need_calibration:
            with contextlib.redirect_stderr(io.StringIO()):  # its tqdm progress bar
                result = qt.calibrate(data, num_threads=os.cpu_count() or 1)
        quantized = bytes(qt.quantize(result, enable_progress_bar=False, enable_progress_report=False).quantized_model)
        validation = {k: v[:VALIDATION_SAMPLES] for k, v in data.items()}
        comparison = qt.validate(validation, error_metrics=[vu.ValidationErrorMetric.MSE, vu.ValidationErrorMetric.SNR,
                                                            vu.ValidationErrorMetric.COSINE_SIMILARITY],
                                 num_threads=os.cpu_count() or 1)  # fmt: skip
    ops, dtypes = quantized_ops(quantized)
    extras = {
        "quantized_ops": ops,
        "quantized_weights": "; ".join(f"{op} {how}" for op, how in ops.items()) or "none",
        "block_size": int(p.granularity[5:]) if p.granularity.startswith("block") else None,
        "float_kept": kept or None,
        "layer_errors": layer_errors(comparison, dtypes, len(validation[next(iter(validation))])),
    }
    return quantized, extras


def quantized_ops(tflite: bytes) -> tuple[dict[str, str], dict[str, str]]:
    """({op type: how its weights are stored, e.g. 'int4 block32'}, {tensor name: type}) read from the file."""
    _, _, _, fb, _ = _lib()
    from ai_edge_litert import schema_py_generated as schema

    types = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    model = fb.read_model(tflite)
    graph = model.subgraphs[0]
    dtypes = {fb.get_tensor_name(t): types.get(t.type, str(t.type)) for t in graph.tensors}
    named = _op_names(model, graph)
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


def _finite(value) -> float | None:
    return None if value is None or not math.isfinite(float(value)) else float(value)


class LiteRTQuantizerBackend(ExportBackend):
    """The LiteRT Quantizer on the fp32 .tflite: one mode, `quantize`, with QuantizeParams."""

    name = "litert_quantizer"

    def modes(self) -> list[tuple[str, str]]:
        return [("quantize", "the LiteRT Quantizer on the fp32 file: int8/int4/int2 weights, blockwise, "
                 + "weight-only, dynamic or int8/int16 activations, layers kept float")]  # fmt: skip

    def params(self, mode: str) -> type | None:
        return QuantizeParams

    def recipe_options(self, mode: str) -> dict[str, Any]:
        return {"primary": "weights", "in_default_study": False, "columns": COLUMNS}

    def export(self, model, mode: str, context: RecipeContext, params: QuantizeParams | None = None) -> Compressed:
        params = params or QuantizeParams()
        fp32 = convert(model, Quantization.FP32)
        tflite, extras = quantize(fp32, params, context.calibration_data)
        return Compressed(tflite, extras)


_WEIGHTS_NOTE = ("quantized weights: how each op type's weights are stored in the file (the LiteRT Quantizer's rows; "
                 + "blockwise applies where the op supports it, the rest is per channel)")  # fmt: skip
COLUMNS = (Column("quantized_weights", "quantized weights", "", note=_WEIGHTS_NOTE),)

register_backend(LiteRTQuantizerBackend())
