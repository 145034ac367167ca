"""Each post-training recipe produces the .tflite types it promises, and keeps top-1 with fp32."""

import gzip

import numpy as np
import pytest

from tfcompress import recipes
from tfcompress.measure import tflite_graph as graph
from tfcompress.measure.evaluate import accuracy, run_tflite, top1
from tfcompress.models import predict_logits
from tfcompress.recipes.converter import Quantization, convert

_WEIGHTED_OPS = ("CONV_2D", "FULLY_CONNECTED", "DEPTHWISE_CONV_2D")


@pytest.fixture(scope="module")
def converted(tiny_cnn, calibration):
    context = recipes.RecipeContext(calibration_data=calibration)
    return {m.value: recipes.run(recipes.parse(m.value), tiny_cnn, context).tflite for m in Quantization}


def _weights(tflite):
    """The filter tensor of every conv and fully-connected op."""
    return [op.inputs[1] for op in graph.ops(tflite) if op.name in _WEIGHTED_OPS]


def test_every_quantization_mode_is_a_registered_recipe():
    assert [m.value for m in Quantization] == recipes.names()[: len(Quantization)]


def test_fp32_is_float32_throughout(converted):
    inputs, outputs = graph.io_dtypes(converted["fp32"])
    assert inputs == [np.float32] and outputs == [np.float32]
    assert {w.dtype for w in _weights(converted["fp32"])} == {np.dtype(np.float32)}


def test_int8_recipe_has_int8_io_and_weights(converted):
    inputs, outputs = graph.io_dtypes(converted["int8"])
    assert inputs == [np.int8] and outputs == [np.int8]
    assert {w.dtype for w in _weights(converted["int8"])} == {np.dtype(np.int8)}
    assert all(op.outputs[0].dtype == np.int8 for op in graph.ops(converted["int8"]) if op.name in _WEIGHTED_OPS)


def test_float16_recipe_stores_float16_weights(converted):
    ops = graph.ops(converted["float16"])
    dequantized = [op.inputs[0] for op in ops if op.name == "DEQUANTIZE"]
    assert dequantized and all(t.dtype == np.float16 for t in dequantized)
    # Every weight tensor the convs and dense layers read is one of those dequantized float16 constants.
    fed = {op.outputs[0].name for op in ops if op.name == "DEQUANTIZE"}
    assert all(w.name in fed for w in _weights(converted["float16"]))
    assert graph.io_dtypes(converted["float16"]) == ([np.float32], [np.float32])


def test_dynamic_range_recipe_has_int8_weights_and_float_io(converted):
    weights = _weights(converted["dynamic_range"])
    # The converter leaves weights under 1,024 elements in float; every larger one must be int8.
    large = [w for w in weights if w.size >= 1024]
    assert large and all(w.dtype == np.int8 for w in large)
    assert graph.io_dtypes(converted["dynamic_range"]) == ([np.float32], [np.float32])


def test_int16x8_recipe_has_int16_activations(converted):
    ops = [op for op in graph.ops(converted["int16x8"]) if op.name in _WEIGHTED_OPS]
    assert ops and all(op.inputs[0].dtype == np.int16 and op.inputs[1].dtype == np.int8 for op in ops)
    assert graph.io_dtypes(converted["int16x8"]) == ([np.float32], [np.float32])


@pytest.mark.parametrize("mode", [m.value for m in Quantization])
def test_top1_agrees_with_fp32(converted, digits, mode):
    reference = top1(run_tflite(converted["fp32"], digits.x_test))
    predictions = top1(run_tflite(converted[mode], digits.x_test))
    assert accuracy(predictions, reference) >= 0.97
    assert accuracy(predictions, digits.y_test) >= 0.85


def test_fp32_tflite_matches_keras_outputs(converted, tiny_cnn, digits):
    np.testing.assert_allclose(
        run_tflite(converted["fp32"], digits.x_test), predict_logits(tiny_cnn, digits.x_test), rtol=1e-4, atol=1e-4
    )


def test_sizes_are_ordered(converted):
    size = {name: len(b) for name, b in converted.items()}
    assert size["int8"] < size["float16"] < size["fp32"]
    assert size["dynamic_range"] < size["float16"]
    assert size["int8"] < 0.5 * size["fp32"]  # the tiny model's file is mostly overhead
    assert len(gzip.compress(converted["int8"])) < len(gzip.compress(converted["fp32"]))


def test_calibrated_modes_require_calibration_data(tiny_cnn):
    with pytest.raises(ValueError, match="needs calibration_data"):
        convert(tiny_cnn, Quantization.INT8)


def test_unknown_recipe_names_the_value_and_the_choices():
    with pytest.raises(recipes.RecipeError, match=r"Unknown recipe 'int4'; choose one of: fp32, dynamic_range"):
        recipes.parse_recipes("fp32,int4")


def test_parse_recipes_defaults_to_the_default_study_and_drops_duplicates():
    # A test plugin's recipes may be registered in this worker too (tests/plugin_recipes.py, *_for_test).
    default = [p.name for p in recipes.parse_recipes("") if not p.name.endswith("_for_test")]
    opt_in = ("quantize", "lora", "finetune", "q_dynamic_int8", "q_int8", "q_int16x8", "q_weight_only_int4",
              "q_int4_block32")  # task-specific, or the LiteRT Quantizer's: named in --recipes  # fmt: skip
    assert default == [n for n in recipes.names() if n not in opt_in and not n.endswith("_for_test")]
    assert [p.name for p in recipes.parse_recipes("int8, fp32,int8")] == ["int8", "fp32"]
