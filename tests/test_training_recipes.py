"""TFMOT recipes on a tiny seeded CNN: the .tflite holds the sparsity, structure and types they promise."""

import numpy as np
import pytest

from tfcompress import recipes
from tfcompress._keras import keras
from tfcompress.measure import tflite_graph as graph
from tfcompress.measure.evaluate import accuracy, run_tflite, top1
from tfcompress.recipes.base import NotApplicable, RecipeContext


@pytest.fixture(scope="module")
def context(digits, calibration):
    return RecipeContext(calibration_data=calibration, dataset=digits, seed=0)


@pytest.fixture(scope="module")
def run(tiny_cnn, context):
    """Runs a spec on the tiny CNN, sharing transforms across tests.

    Fine-tuning is 4 epochs at a high rate, since the model is tiny.
    """
    cache = {}

    def _run(spec):
        pipeline = recipes.parse(
            spec, recipes.spread({"finetune_epochs": 4, "finetune_learning_rate": 2e-3, "clusters": 8})
        )
        return recipes.run(pipeline, tiny_cnn, context, cache)

    return _run


def _layer_sparsities(tflite):
    return [graph.sparsity(k) for _, k in graph.weights(tflite)]


@pytest.mark.parametrize("target", [0.5, 0.8])
@pytest.mark.parametrize("schedule", ["polynomial", "constant"])
def test_prune_reaches_target_sparsity_in_every_layer(run, digits, target, schedule):
    result = run(f"prune:sparsity={target}:pruning_schedule={schedule}")
    layers = _layer_sparsities(result.tflite)
    assert len(layers) == 4
    assert all(abs(s - target) <= 0.01 for s in layers), layers
    assert accuracy(top1(run_tflite(result.tflite, digits.x_test)), digits.y_test) > 0.75
    assert result.extras["finetune_s"] > 0


def test_baseline_weights_are_unchanged_after_recipes_ran(tiny_cnn, run):
    before = [w.copy() for w in tiny_cnn.get_weights()]
    run("prune:0.8")
    run("cluster:8")
    run("qat")
    for a, b in zip(before, tiny_cnn.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_prune_2of4_holds_in_every_block(run):
    kernels = graph.weights(run("prune_2of4").tflite)
    checked = [k for _, k in kernels if k.shape[-1] % 4 == 0]
    assert len(checked) == 3  # the first conv has a single input channel, which 2:4 cannot apply to
    assert all(graph.is_m_by_n(k, 2, 4) for k in checked)
    assert graph.weight_stats(run("prune_2of4").tflite)["two_four"] is True


def test_is_m_by_n_detects_a_dense_block():
    kernel = np.array([[1.0, 0.0, 2.0, 0.0, 1.0, 1.0, 1.0, 0.0]])
    assert not graph.is_m_by_n(kernel, 2, 4)
    assert graph.is_m_by_n(kernel[:, :4], 2, 4)


def test_clustered_kernels_have_at_most_k_values(run):
    kernels = graph.weights(run("cluster:8").tflite)
    assert max(np.unique(k).size for _, k in kernels) <= 8
    assert graph.weight_stats(run("cluster:8").tflite)["unique_weights"] <= 8


@pytest.mark.parametrize("spec", ["qat", "pqat", "pcqat"])
def test_qat_recipes_export_int8(run, digits, spec):
    tflite = run(spec).tflite
    assert graph.io_dtypes(tflite) == ([np.int8], [np.int8])
    assert {k.dtype for _, k in graph.weights(tflite)} == {np.dtype(np.int8)}
    assert accuracy(top1(run_tflite(tflite, digits.x_test)), digits.y_test) > 0.75


@pytest.mark.parametrize("spec", ["pqat", "pcqat"])
def test_pqat_and_pcqat_keep_the_sparsity_in_the_tflite_weights(run, spec):
    layers = _layer_sparsities(run(spec).tflite)
    assert all(s >= 0.79 for s in layers), layers


def test_pcqat_is_much_smaller_after_gzip_than_fp32(run):
    import gzip

    fp32 = len(gzip.compress(run("fp32").tflite, 9))
    assert len(gzip.compress(run("pcqat").tflite, 9)) < 0.5 * fp32


def test_prune_xnnpack_is_not_applicable_to_a_plain_cnn_and_says_why(run):
    with pytest.raises(NotApplicable, match="Conv2D 3x3"):
        run("prune_xnnpack")


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.flatten = keras.layers.Flatten()
        self.dense = keras.layers.Dense(10)

    def call(self, x):
        return self.dense(self.flatten(x))


@pytest.mark.parametrize("spec", ["prune", "prune_2of4", "cluster", "qat", "pcqat"])
def test_subclassed_model_is_not_applicable(context, spec):
    model = _Subclassed()
    model(np.zeros((1, 8, 8, 1), np.float32))
    with pytest.raises(NotApplicable, match="subclassed"):
        recipes.run(recipes.parse(spec), model, context)


def test_sparse_tflite_is_smaller_for_a_pruned_model(tiny_cnn, digits, calibration):
    context = RecipeContext(calibration_data=calibration, dataset=digits, sparse_tflite=True)
    result = recipes.run(recipes.parse("prune:0.8:finetune_epochs=1"), tiny_cnn, context)
    assert result.extras["sparse_tflite_bytes"] < len(result.tflite)


@pytest.mark.parametrize("epochs, checked_at", [(3, 2), (4, 2), (1, 1)])
def test_stop_if_worse_checks_half_way_and_stops_only_over_the_line(epochs, checked_at):
    from tfcompress.recipes.training import FinetuneStopped, StopIfWorse

    x = np.zeros((8, 2), np.float32)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(loss="mse")
    seen = []

    def drop(m):
        seen.append(len(seen))
        return 3.0

    model.fit(x, x[:, :1], epochs=epochs, verbose=0, callbacks=[StopIfWorse(drop, limit=5.0)])
    assert seen == [0]  # one check per fit; under the line, the fit runs to its end
    history = []
    with pytest.raises(FinetuneStopped, match=f"after {checked_at} epoch"):
        model.fit(x, x[:, :1], epochs=epochs, verbose=0, callbacks=[
            StopIfWorse(lambda m: 6.0, limit=5.0), keras.callbacks.LambdaCallback(
                on_epoch_end=lambda e, logs: history.append(e))])  # fmt: skip
    assert len(history) == checked_at - 1  # stopped at the end of that epoch, before later callbacks ran
