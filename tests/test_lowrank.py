"""Low-rank factorization: exact at full rank, smaller below it, and a recipe like any other."""

import numpy as np
import pytest

from tfcompress import recipes
from tfcompress._keras import keras
from tfcompress.measure import tflite_graph as graph
from tfcompress.measure.evaluate import accuracy, run_tflite, top1
from tfcompress.models import predict_logits, train
from tfcompress.recipes.base import NotApplicable, RecipeContext
from tfcompress.recipes.lowrank import LowRankDense, LowRankParams, factorize


@pytest.fixture(scope="module")
def mlp(digits):
    keras.utils.set_random_seed(0)
    inputs = keras.Input(digits.input_shape)
    x = keras.layers.Dense(64, activation="relu")(keras.layers.Flatten()(inputs))
    x = keras.layers.Dense(48, activation="relu")(x)
    model = keras.Model(inputs, keras.layers.Dense(10)(x))
    train(model, digits, epochs=10, verbose=0)
    return model


def test_full_rank_reproduces_the_original_outputs(mlp, digits):
    factorized, report = factorize(mlp, LowRankParams(rank_fraction=1.0))
    assert [r["rank"] for r in report] == [64, 48]  # both large Dense layers, at full rank
    assert sum(isinstance(layer, LowRankDense) for layer in factorized.layers) == 2
    np.testing.assert_allclose(
        predict_logits(factorized, digits.x_test), predict_logits(mlp, digits.x_test), rtol=1e-4, atol=1e-4
    )


def test_lower_rank_has_fewer_parameters(mlp):
    factorized, report = factorize(mlp, LowRankParams(rank_fraction=0.25))
    assert [r["rank"] for r in report] == [16, 12]
    # (64*64 + 64*48) kernel weights become 64*16 + 16*64 and 64*12 + 12*48.
    assert mlp.count_params() - factorized.count_params() == (64 * 64 + 64 * 48) - (2 * 64 * 16 + 64 * 12 + 12 * 48)


def test_energy_threshold_picks_the_smallest_sufficient_rank(mlp):
    _, loose = factorize(mlp, LowRankParams(energy=0.5))
    _, tight = factorize(mlp, LowRankParams(energy=0.99))
    assert all(1 <= a["rank"] <= b["rank"] <= min(b["shape"]) for a, b in zip(loose, tight, strict=True))


def test_lowrank_recipe_exports_and_keeps_accuracy(mlp, digits, calibration):
    context = RecipeContext(calibration_data=calibration, dataset=digits)
    result = recipes.run(recipes.parse("lowrank:0.5:finetune_epochs=2>int8"), mlp, context)
    assert graph.io_dtypes(result.tflite)[0] == [np.int8]
    assert result.extras["params"] < mlp.count_params()
    assert accuracy(top1(run_tflite(result.tflite, digits.x_test)), digits.y_test) > 0.85


def test_models_without_a_large_dense_layer_are_not_applicable(tiny_cnn, digits, calibration):
    context = RecipeContext(calibration_data=calibration, dataset=digits)
    with pytest.raises(NotApplicable, match="no Dense layer has at least 32 inputs and outputs"):
        recipes.run(recipes.parse("lowrank"), tiny_cnn, context)


def test_bad_rank_fraction_is_refused():
    with pytest.raises(recipes.RecipeError, match=r"rank_fraction must be in \(0, 1\], got 1.5"):
        recipes.parse("lowrank:1.5")
