"""The LiteRT Quantizer back end (`quantize`): what each setting puts in the file, per-tensor error, refusals."""

import re

import numpy as np
import pytest

from tfcompress import recipes
from tfcompress.measure import tflite_graph
from tfcompress.measure.evaluate import accuracy, run_tflite, top1
from tfcompress.recipes.converter import Quantization, convert
from tfcompress.recipes.quantizer import QuantizeParams, quantize


@pytest.fixture(scope="module")
def fp32(tiny_cnn):
    return convert(tiny_cnn, Quantization.FP32)


def _quantize(fp32, calibration, **params):
    return quantize(fp32, QuantizeParams(**params), calibration)


def _weight_types(tflite) -> dict[str, str]:
    """{weight tensor name: dtype} of the filters (second input) of the file's convolutions and dense layers."""
    return {op.inputs[1].name: op.inputs[1].dtype.name for op in tflite_graph.ops(tflite)
            if op.name in ("CONV_2D", "FULLY_CONNECTED")}  # fmt: skip


def test_each_activation_mode_gives_its_tensor_types(fp32, calibration, digits):
    reference = top1(run_tflite(fp32, digits.x_test))
    for activations, weights, io_type in (("none", 4, np.float32), ("float", 8, np.float32), ("8", 8, np.int8),
                                          ("16", 8, np.int16)):  # fmt: skip
        tflite, extras = _quantize(fp32, calibration, weights=weights, activations=activations)
        inputs, outputs = tflite_graph.io_dtypes(tflite)
        assert inputs == [np.dtype(io_type)] and outputs == [np.dtype(io_type)], activations
        op_types = {op.name for op in tflite_graph.ops(tflite)}
        stored = f"int{weights}"
        assert all(how.startswith(stored) for how in extras["quantized_ops"].values()), extras["quantized_ops"]
        assert {"CONV_2D", "FULLY_CONNECTED"} <= set(extras["quantized_ops"]), extras["quantized_ops"]
        if activations == "none":  # weight-only: the int4 weights are dequantized to float before each op
            assert "DEQUANTIZE" in op_types
        if activations == "16":
            activation_types = {t.dtype for op in tflite_graph.ops(tflite) for t in op.outputs}
            assert np.dtype(np.int16) in activation_types
        agreement = accuracy(top1(run_tflite(tflite, digits.x_test)), reference)
        assert agreement > 0.9, (activations, agreement)  # it still computes the same classifier


def test_skip_leaves_exactly_the_matched_layers_weights_float(fp32, calibration):
    everything = _weight_types(_quantize(fp32, calibration, weights=8)[0])
    assert everything and set(everything.values()) == {"int8"}
    skipped = _weight_types(_quantize(fp32, calibration, weights=8, skip="dense")[0])
    assert skipped.keys() == everything.keys()
    for name, dtype in skipped.items():
        assert dtype == ("float32" if re.search("dense", name) else "int8"), (name, dtype)
    assert "float32" in skipped.values() and "int8" in skipped.values()


def test_blockwise_applies_where_supported_and_records_the_block_size(fp32, calibration):
    tflite, extras = _quantize(fp32, calibration, weights=4, granularity="block32")
    assert extras["block_size"] == 32
    assert extras["quantized_ops"]["FULLY_CONNECTED"] == "int4 block32"
    assert extras["quantized_ops"]["CONV_2D"] == "int4 channel"  # no blockwise convolution: per channel instead
    channel, _ = _quantize(fp32, calibration, weights=4)
    assert len(tflite) > len(channel)  # a scale per 32 weights costs more than one per channel


def test_layer_errors_cover_every_quantized_tensor(fp32, calibration):
    tflite, extras = _quantize(fp32, calibration, weights=8, activations="8")
    errors = {e["tensor"]: e for e in extras["layer_errors"]}
    weights = _weight_types(tflite)
    activations = {t.name for op in tflite_graph.ops(tflite) for t in op.outputs if t.dtype == np.int8}
    quantized = set(weights) | (activations & errors.keys())
    assert set(weights) <= errors.keys() and len(quantized) > len(weights)  # every weight, and the activations
    for name in quantized:
        e = errors[name]
        assert e["snr_db"] is not None and e["snr_db"] > 10, e  # int8 is 8 bits: tens of dB, in dB not a ratio
        assert 0.9 < e["cosine"] <= 1.0 + 1e-6 and e["mse"] >= 0
        assert e["kind"] in ("weight", "activation", "output")
    snrs = [e["snr_db"] for e in extras["layer_errors"] if e["snr_db"] is not None]
    assert snrs == sorted(snrs)  # worst first
    four, four_extras = _quantize(fp32, calibration, weights=4)
    snr4 = {e["tensor"]: e["snr_db"] for e in four_extras["layer_errors"]}
    assert all(snr4[n] < errors[n]["snr_db"] for n in _weight_types(four))  # fewer bits, more error, per tensor


def test_float_ops_keep_an_op_types_activations_float(fp32, calibration):
    tflite, extras = _quantize(fp32, calibration, weights=8, activations="8", float_ops="SOFTMAX|MAX_POOL_2D")
    kept = extras["float_kept"]
    assert kept and any(v.startswith("feeds ") for v in kept.values())
    pools = [op for op in tflite_graph.ops(tflite) if op.name == "MAX_POOL_2D"]
    assert pools and all(t.dtype == np.float32 for op in pools for t in op.inputs + op.outputs)  # computed in float
    default = [op for op in tflite_graph.ops(_quantize(fp32, calibration, weights=8, activations="8")[0])
               if op.name == "MAX_POOL_2D"]  # fmt: skip
    assert default and all(t.dtype == np.int8 for op in default for t in op.outputs)  # without float_ops: int8
    assert extras["quantized_ops"]["CONV_2D"] == "int8 channel"  # the convolution that feeds them keeps int8 weights


@pytest.mark.parametrize(
    "spec, words",
    [
        ("quantize:weights=8:granularity=block32", ["granularity=block32", "nearest", "granularity=channel"]),
        ("quantize:weights=2:activations=none", ["weights=2", "activations=none", "activations=float"]),
        # Limits the quantizer's config check passes but its algorithms raise only while quantizing.
        ("quantize:weights=4:granularity=block32:algorithm=mse", ["no blockwise mode", "granularity=channel"]),
        ("quantize:activations=8:algorithm=hadamard", ["no static", "nearest", "algorithm=min_max"]),
        ("quantize:weights=3", ["weights must be one of 8, 4, 2"]),
        ("quantize:activations=int8", ["activations must be one of"]),
        ("quantize:skip=(", ["skip='('", "not a regular expression"]),
    ],
)
def test_an_impossible_combination_is_refused_at_parse_time(spec, words):
    with pytest.raises(recipes.RecipeError) as e:
        recipes.parse(spec)
    message = str(e.value)
    assert "\n" not in message and all(w in message for w in words), message


def test_aliases_and_the_primary_parameter():
    assert recipes.parse("quantize:4").export.params.weights == 4
    alias = recipes.parse("q_int4_block32").export.params
    assert (alias.weights, alias.activations, alias.granularity) == (4, "float", "block32")
    assert "quantize" not in recipes.base.default_names() and "q_int8" not in recipes.base.default_names()
    assert [s.recipe.name for s in recipes.parse("prune:0.8>quantize:weights=4").stages] == ["prune", "quantize"]


def test_float_ops_reach_through_layout_ops_to_the_op_computing_the_input():
    """An attention mask's pattern: ADD of a -1e9 causal mask, then a TRANSPOSE, then SOFTMAX (float_ops=SOFTMAX)."""
    from tfcompress._keras import keras

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    inputs = keras.Input((16,), batch_size=1)
    scores = keras.layers.Reshape((4, 4))(keras.layers.Dense(16, activation="relu")(inputs))  # not foldable
    mask = np.triu(np.full((4, 4), -1e9, np.float32), k=1)
    masked = keras.layers.Lambda(lambda s: s + mask)(scores)
    probabilities = keras.layers.Softmax()(keras.layers.Permute((2, 1))(masked))
    model = keras.Model(inputs, keras.layers.Flatten()(probabilities))
    fp32 = convert(model, Quantization.FP32)
    calibration = rng.normal(size=(32, 16)).astype(np.float32)
    tflite, extras = _quantize(fp32, calibration, weights=8, activations="8", float_ops="SOFTMAX")
    ops = {op.name: op for op in tflite_graph.ops(tflite)}
    assert {"ADD", "TRANSPOSE", "SOFTMAX"} <= set(ops), set(ops)
    assert all(ops[name].outputs[0].dtype == np.float32 for name in ("ADD", "TRANSPOSE", "SOFTMAX"))
    assert ops["FULLY_CONNECTED"].inputs[1].dtype == np.int8  # the dense layer keeps int8 weights
    x = calibration[:8]
    reference, quantized = run_tflite(fp32, x), run_tflite(tflite, x.astype(np.float32))
    plain = run_tflite(_quantize(fp32, calibration, weights=8, activations="8")[0], x)
    # int8 input and output steps remain (the output's is 1/255), but the mask no longer sets the scores' range.
    kept_error, plain_error = np.abs(quantized - reference).max(), np.abs(plain - reference).max()
    assert kept_error < 0.15 and plain_error > 3 * kept_error, (kept_error, plain_error, extras["float_kept"])
