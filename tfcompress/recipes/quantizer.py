"""The LiteRT Quantizer back end: the `quantize` recipe, which quantizes the fp32 .tflite file.

Post-training quantization inside the TFLite converter is deprecated in
LiteRT's documentation; the LiteRT Quantizer (``litert-quantizer``, the
renamed ai-edge-quantizer) starts from the float .tflite file instead and
offers what the converter cannot: 4- and 2-bit weights, blockwise scales,
weight-only quantization, int16 activations, layers and op types kept in
float, algorithms beyond min-max, and a per-tensor comparison with the float
model. This module and quantizer_layers (its graph and per-layer part) are the only ones that import it.

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
- ``skip_top=N`` / ``skip=auto``: the N layers (or the outliers) whose error
  is largest when each alone is quantized stay float (quantizer_layers).
- ``float_ops``: op types (regex on names such as SOFTMAX) not quantized; the
  ops that compute their inputs keep quantized weights but float outputs.
- ``ops``: op types to quantize (regex); the others stay float.

Every row stores the quantizer's per-tensor comparison with the fp32 file on the
calibration inputs (``layer_errors``: SNR in dB, cosine similarity, MSE)."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import re
import types
import warnings
from typing import Any

import numpy as np

from tfcompress._process import job_cpus, quiet_stderr
from tfcompress.fields import Column, param
from tfcompress.recipes import quantizer_layers
from tfcompress.recipes.base import Compressed, ExportBackend, NotApplicable, RecipeContext, register_backend
from tfcompress.recipes.converter import Quantization, convert
from tfcompress.recipes.quantizer_layers import CHECKED_OPS as _CHECKED_OPS
from tfcompress.recipes.quantizer_layers import NOTICES as _NOTICES
from tfcompress.recipes.quantizer_layers import lib as _lib
from tfcompress.recipes.quantizer_layers import op_names as _op_names
from tfcompress.recipes.quantizer_layers import scope as _scope
from tfcompress.recipes.quantizer_layers import signature_data as _signature_data

WEIGHTS = (8, 4, 2)
ACTIVATIONS = ("none", "float", "8", "16")
GRANULARITIES = ("channel", "tensor", "block32", "block64", "block128", "block256")
ALGORITHMS = ("min_max", "gptq", "octav", "mse", "hadamard")
VALIDATION_SAMPLES = 64  # calibration inputs the per-tensor comparison runs on (all tensors kept: memory)


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
    skip: str = param(
        "",
        "quantize: regex of layer or tensor names kept in float; auto: the layers whose error "
        + "alone stands out (tfcompress.recipes.quantizer_layers).",
        flag="quantize_skip",
    )
    skip_top: int = param(
        0,
        "quantize: keep this many most sensitive layers in float (each layer's output error "
        + "when it alone is quantized).",
        flag="quantize_skip_top",
        bounds=(0, None),
    )
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
        if self.skip_top < 0:
            raise ValueError(f"skip_top must be >= 0, got {self.skip_top}.")
        if self.skip_top and self.skip not in ("", "auto"):
            raise ValueError(f"skip_top={self.skip_top} chooses the layers itself; drop skip={self.skip!r}.")
        for name in ("skip", "float_ops", "ops"):
            try:
                re.compile(getattr(self, name))
            except re.error as e:
                raise ValueError(f"{name}={getattr(self, name)!r} is not a regular expression: {e}.") from None
        problem = unsupported(self)
        if problem:
            raise ValueError(problem)


_GRANULARITY = {"channel": "CHANNELWISE", "tensor": "TENSORWISE", "block32": "BLOCKWISE_32",
                "block64": "BLOCKWISE_64", "block128": "BLOCKWISE_128", "block256": "BLOCKWISE_256"}  # fmt: skip
_ALGORITHM = {"min_max": "MIN_MAX_UNIFORM_QUANT", "gptq": "GPTQ", "octav": "OCTAV", "mse": "MSE",
              "hadamard": "HADAMARD_ROTATION"}  # fmt: skip
_LAYOUT_OPS = ("TRANSPOSE", "RESHAPE", "SQUEEZE", "EXPAND_DIMS")  # move values, compute nothing


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


def _build(qt, fp32: bytes, p: QuantizeParams, float_scopes: dict[str, str] | None = None) -> dict[str, str]:
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
    for scope, why in (float_scopes or {}).items():  # skip_top and skip=auto: the chosen layers' ops, exactly
        kept[scope] = why
        qt.update_quantization_recipe(scope, qtyping.TFLOperationName.ALL_SUPPORTED,
                                      algorithm_key=algorithm_manager.AlgorithmName.NO_QUANTIZE)  # fmt: skip
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


def quantize(fp32: bytes, p: QuantizeParams, calibration: np.ndarray) -> tuple[bytes, dict[str, Any]]:
    """The fp32 .tflite quantized by the LiteRT Quantizer, and the row's extras (what each op got, per-tensor error)."""
    _, _, quantizer, fb, vu = _lib()
    sensitive, float_scopes = None, None
    if p.skip == "auto" or p.skip_top:
        ranking = rank_layers(fp32, p, calibration)
        try:
            skipped = quantizer_layers.choose(ranking, p.skip_top, auto=p.skip == "auto")
        except ValueError as e:
            raise NotApplicable(f"quantize: {e}") from None
        sensitive = {"skipped_layers": skipped, "layer_sensitivity": ranking}
        ops = quantizer_layers.layer_ops(fp32, weighted_only=False)
        why = f"skip_top={p.skip_top}" if p.skip_top else "skip=auto"
        float_scopes = {scope: f"{why}: {layer}" for layer in skipped for scope in ops[layer]}
        p = dataclasses.replace(p, skip="", skip_top=0)
    qt = quantizer.Quantizer(bytearray(fp32))
    with warnings.catch_warnings(), quiet_stderr(_NOTICES):
        warnings.simplefilter("ignore")  # "experimental_preserve_all_tensors ... for debugging purposes only"
        kept = _build(qt, fp32, p, float_scopes)
        data = _signature_data(fp32, calibration)
        result = None
        if qt.need_calibration:
            with contextlib.redirect_stderr(io.StringIO()):  # its tqdm progress bar
                result = qt.calibrate(data, num_threads=job_cpus())
        quantized = bytes(qt.quantize(result, enable_progress_bar=False, enable_progress_report=False).quantized_model)
        validation = {k: v[:VALIDATION_SAMPLES] for k, v in data.items()}
        comparison = qt.validate(validation, error_metrics=[vu.ValidationErrorMetric.MSE, vu.ValidationErrorMetric.SNR,
                                                            vu.ValidationErrorMetric.COSINE_SIMILARITY],
                                 num_threads=job_cpus())  # fmt: skip
    ops, dtypes = quantizer_layers.quantized_ops(quantized)
    extras = {
        "quantized_ops": ops,
        "quantized_weights": "; ".join(f"{op} {how}" for op, how in ops.items()) or "none",
        "block_size": int(p.granularity[5:]) if p.granularity.startswith("block") else None,
        "float_kept": kept or None,
        "layer_errors": quantizer_layers.layer_errors(comparison, dtypes, len(validation[next(iter(validation))])),
    }
    return quantized, extras | (sensitive or {})


def rank_layers(fp32: bytes, p: QuantizeParams, calibration: np.ndarray) -> list[dict[str, Any]]:
    """Every layer quantized alone with ``p``, most sensitive first (tfcompress.recipes.quantizer_layers.rank)."""
    return quantizer_layers.rank(fp32, p, calibration, _build)


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
