"""Per-layer sensitivity and the recipe parameters that use it: allocation=sensitivity, skip_top, skip=auto."""

import numpy as np
import pytest

from tfcompress import recipes
from tfcompress.measure import tflite_graph as graph
from tfcompress.recipes import quantizer, quantizer_layers
from tfcompress.recipes import sensitivity as sens
from tfcompress.recipes.base import NotApplicable, RecipeContext


def _curve(name, params, scale):
    return sens.Curve(name, params, sens.LEVELS, tuple(scale * s**3 for s in sens.LEVELS))


@pytest.mark.parametrize("target", [0.3, 0.6, 0.8, 0.9])
def test_allocation_meets_the_model_wide_target_and_spares_the_sensitive_layers(target):
    curves = [_curve("fragile", 1000, 10.0), _curve("middle", 5000, 1.0), _curve("robust", 20000, 0.05)]
    allocation = sens.allocate(curves, target)
    assert sens.weighted_sparsity(allocation, curves) == pytest.approx(target, abs=0.01)
    assert allocation["fragile"] < allocation["middle"] < allocation["robust"]
    assert all(0 <= s <= sens.LEVELS[-1] for s in allocation.values())


def test_allocation_refuses_a_target_beyond_the_measured_levels():
    with pytest.raises(ValueError, match="up to 0.98"):
        sens.allocate([_curve("a", 10, 1.0)], 0.99)


def test_magnitude_prune_zeroes_the_smallest_weights():
    w = np.arange(1, 11, dtype=np.float32).reshape(2, 5)
    pruned = sens.magnitude_prune(w, 0.3)
    assert (pruned == 0).sum() == 3 and pruned.ravel()[3:].tolist() == w.ravel()[3:].tolist()


@pytest.fixture(scope="module")
def context(digits, calibration):
    return RecipeContext(calibration_data=calibration, dataset=digits, seed=0)


def test_prune_allocated_by_sensitivity_meets_the_target_with_sensitive_layers_pruned_less(tiny_cnn, context):
    spec = "prune:sparsity=0.8:allocation=sensitivity:finetune_epochs=2:finetune_learning_rate=0.002"
    result = recipes.run(recipes.parse(spec), tiny_cnn, context)
    kernels = [k for _, k in graph.weights(result.tflite)]
    zeros = sum(int((k == 0).sum()) for k in kernels)
    assert zeros / sum(k.size for k in kernels) == pytest.approx(0.8, abs=0.01)  # by parameter count, in the file
    allocation = result.extras["allocated_sparsity"]
    assert len(allocation) == 4 and len(set(allocation.values())) > 1  # not uniform
    curves = {c["layer"]: c for c in result.extras["sensitivity"]}
    at = sens.LEVELS.index(0.8)
    fragile = max(curves, key=lambda n: curves[n]["increase"][at])
    robust = min(curves, key=lambda n: curves[n]["increase"][at])
    assert allocation[fragile] < allocation[robust]


def _float_layers(tflite: bytes) -> set[str]:
    """The layers every op of which computes in float32 in the file (QUANTIZE and DEQUANTIZE aside)."""
    *_, fb, _ = quantizer._lib()
    model = fb.read_model(tflite)
    g = model.subgraphs[0]
    float_ops, other = set(), set()
    for name, op in quantizer._op_names(model, g):
        if name in ("QUANTIZE", "DEQUANTIZE"):
            continue
        layer = quantizer_layers.layer_of([fb.get_tensor_name(g.tensors[i]) for i in op.outputs] + [
            fb.get_tensor_name(g.tensors[i]) for i in op.inputs if i >= 0 and model.buffers[g.tensors[i].buffer].data
            is not None])  # fmt: skip
        (float_ops if all(g.tensors[i].type == 0 for i in op.outputs) else other).add(layer)
    return float_ops - other


@pytest.mark.parametrize("n", [2])
def test_skip_top_keeps_exactly_the_n_most_sensitive_layers_float(tiny_cnn, context, n):
    result = recipes.run(recipes.parse(f"quantize:weights=8:activations=8:skip_top={n}"), tiny_cnn, context)
    ranking = result.extras["layer_sensitivity"]
    assert result.extras["skipped_layers"] == [r["layer"] for r in ranking[:n]]
    assert _float_layers(result.tflite) == set(result.extras["skipped_layers"])
    snrs = [r["output_snr_db"] for r in ranking if r["output_snr_db"] is not None]
    assert snrs == sorted(snrs)  # most sensitive (lowest SNR alone) first


def test_skip_auto_keeps_the_outliers_and_skip_top_beyond_the_layers_is_refused(tiny_cnn, context):
    result = recipes.run(recipes.parse("quantize:weights=8:activations=8:skip=auto"), tiny_cnn, context)
    expected = quantizer_layers.choose(result.extras["layer_sensitivity"], 0, auto=True)
    assert result.extras["skipped_layers"] == expected
    assert _float_layers(result.tflite) == set(expected)
    with pytest.raises(NotApplicable, match="skip_top=40 is more than the"):
        recipes.run(recipes.parse("quantize:weights=8:activations=8:skip_top=40"), tiny_cnn, context)
    with pytest.raises(ValueError, match="chooses the layers itself"):
        recipes.parse("quantize:skip_top=1:skip=dense")


def test_attention_layers_are_measured_through_their_inner_kernels():
    from tfcompress._keras import keras

    x = keras.Input((8, 16))
    y = keras.layers.MultiHeadAttention(num_heads=2, key_dim=8, name="attention")(x, x)
    model = keras.Model(x, keras.layers.Dense(4, name="head")(keras.layers.Flatten()(y)))
    weights = sens.prunable_weights(model)
    assert set(weights) == {"attention", "head"} and len(weights["attention"]) == 4  # query, key, value, output
    curves = sens.curves(model, lambda m: float(np.abs(m(np.ones((1, 8, 16), np.float32)).numpy()).sum()))
    assert {c.layer for c in curves} == {"attention", "head"}
