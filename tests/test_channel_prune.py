"""Channel pruning: exact at keep 1, really narrower below it, residual groups kept consistent."""

import numpy as np
import pytest

from tfcompress import models, recipes
from tfcompress._keras import keras
from tfcompress.measure.macs import keras_macs
from tfcompress.recipes.base import NotApplicable, RecipeContext
from tfcompress.recipes.channel_prune import (
    ChannelPruneParams,
    conv_filters,
    filter_widths,
    prune_channels,
)

L = keras.layers


def _images(shape, n=8, seed=0):
    return np.random.default_rng(seed).random((n, *shape), dtype=np.float32)


def _randomize_batchnorm(model, seed=0):
    """Non-trivial BN statistics, so that slicing the wrong channels would show."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.normal(1, 0.5, gamma.shape), rng.normal(0, 0.5, beta.shape),
                               rng.normal(0, 0.5, mean.shape), rng.uniform(0.5, 2, var.shape)])  # fmt: skip


def sequential_cnn():
    return models.build_cnn((12, 12, 1), 10, filters=(8, 16, 32), seed=0)


def residual_model():
    """Stem conv, two residual blocks (conv-BN-ReLU6-depthwise-conv-BN + identity), GAP, Dense, softmax."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((10, 10, 3))
    x = L.ZeroPadding2D(1)(inputs)
    x = L.Conv2D(8, 3, name="stem")(x)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.ReLU(6.0)(x)
    for i in range(2):
        y = L.Conv2D(12, 1, name=f"expand_{i}")(x)
        y = L.BatchNormalization()(y)
        y = L.Activation("relu")(y)
        y = L.DepthwiseConv2D(3, padding="same", name=f"depthwise_{i}")(y)
        y = L.BatchNormalization()(y)
        y = L.ReLU(6.0)(y)
        y = L.Conv2D(8, 1, name=f"project_{i}")(y)
        y = L.BatchNormalization(name=f"project_bn_{i}")(y)
        x = L.Add(name=f"add_{i}")([x, y])
    x = L.MaxPooling2D()(x)
    x = L.Dropout(0.2)(x)
    x = L.GlobalAveragePooling2D()(x)
    outputs = L.Softmax()(L.Dense(5, name="classifier")(x))
    model = keras.Model(inputs, outputs)
    _randomize_batchnorm(model)
    return model


@pytest.mark.parametrize("build", [sequential_cnn, residual_model], ids=["sequential", "residual"])
def test_keeping_every_filter_reproduces_the_outputs_exactly(build):
    model = build()
    x = _images(model.input_shape[1:])
    pruned = prune_channels(model, 1.0)
    assert pruned is not model and conv_filters(pruned) == conv_filters(model)
    np.testing.assert_allclose(pruned(x).numpy(), model(x).numpy(), rtol=0, atol=1e-6)


def test_half_keep_halves_every_conv_and_cuts_macs_as_computed_by_hand():
    model = sequential_cnn()
    pruned = prune_channels(model, 0.5)
    assert list(filter_widths(model, pruned).values()) == [[8, 4], [16, 8], [32, 16]]
    # 12x12 same-padded 3x3 convs, then a pool to 6x6, a conv, a pool to 3x3, Flatten, Dense(10).
    original = 12 * 12 * 9 * 1 * 8 + 12 * 12 * 9 * 8 * 16 + 6 * 6 * 9 * 16 * 32 + 3 * 3 * 32 * 10
    halved = 12 * 12 * 9 * 1 * 4 + 12 * 12 * 9 * 4 * 8 + 6 * 6 * 9 * 8 * 16 + 3 * 3 * 16 * 10
    assert (keras_macs(model), keras_macs(pruned)) == (original, halved)
    weights = (9 * 1 * 4 + 4) + (9 * 4 * 8 + 8) + (9 * 8 * 16 + 16) + (3 * 3 * 16 * 10 + 10)
    assert pruned.count_params() == weights


def test_model_input_is_left_untouched():
    model = sequential_cnn()
    before = [w.copy() for w in model.get_weights()]
    prune_channels(model, 0.25)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))


def test_removing_only_zero_filters_keeps_the_outputs():
    """Zero half the filters of every conv: they have the lowest L1, so pruning them must change nothing.

    This checks the choice of filters and every slice after it, including the
    Dense rows after Flatten (row h*W*C + w*C + c for kept channel c).
    """
    model = sequential_cnn()
    rng = np.random.default_rng(1)
    survivors = {}
    for layer in model.layers:
        if isinstance(layer, L.Conv2D):
            kernel, bias = layer.get_weights()
            drop = rng.choice(kernel.shape[-1], kernel.shape[-1] // 2, replace=False)
            kernel[..., drop], bias[drop] = 0, 0
            layer.set_weights([kernel, bias])
            survivors[layer.name] = np.setdiff1d(np.arange(kernel.shape[-1]), drop)
    pruned = prune_channels(model, 0.5)
    for name, kept in survivors.items():
        np.testing.assert_array_equal(
            pruned.get_layer(name).get_weights()[1], model.get_layer(name).get_weights()[1][kept]
        )
    x = _images((12, 12, 1))
    np.testing.assert_allclose(pruned(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-5)


def test_kept_filters_are_the_largest_l1_and_compute_what_they_did():
    model = sequential_cnn()
    first = model.layers[0]
    kernel, bias = first.get_weights()
    strong = np.array([1, 3, 6, 7])
    kernel[..., strong] *= 10.0
    first.set_weights([kernel, bias])
    pruned = prune_channels(model, 0.5)
    x = _images((12, 12, 1))
    original_maps = keras.Model(model.inputs, first.output)(x).numpy()
    pruned_maps = keras.Model(pruned.inputs, pruned.get_layer(first.name).output)(x).numpy()
    np.testing.assert_allclose(pruned_maps, original_maps[..., strong], rtol=1e-6, atol=1e-6)


def test_bn_gamma_criterion_ranks_by_gamma_not_by_kernel_norm():
    inputs = keras.Input((6, 6, 2))
    x = L.Conv2D(4, 3, name="conv")(inputs)
    x = L.BatchNormalization(name="bn")(x)
    model = keras.Model(inputs, L.Dense(3)(L.GlobalMaxPooling2D()(x)))
    kernel, bias = model.get_layer("conv").get_weights()
    kernel[..., 0] *= 100  # channel 0 has the largest L1 norm but the smallest gamma
    model.get_layer("conv").set_weights([kernel, bias])
    gamma, beta, mean, var = model.get_layer("bn").get_weights()
    model.get_layer("bn").set_weights([np.array([0.01, 2.0, -3.0, 0.5]), beta, mean, var])
    by_gamma = prune_channels(model, 0.5, criterion="bn_gamma")
    np.testing.assert_array_equal(by_gamma.get_layer("bn").get_weights()[0], [2.0, -3.0])
    by_l1 = prune_channels(model, 0.5, criterion="l1")
    assert by_l1.get_layer("bn").get_weights()[0][0] == np.float32(0.01)


def test_residual_groups_are_pruned_together():
    model = residual_model()
    pruned = prune_channels(model, 0.5)
    # stem, project_0 and project_1 meet in the Adds: one group of 8 channels, cut to 4.
    widths = filter_widths(model, pruned)
    assert widths == {"stem": [8, 4], "expand_0": [12, 6], "project_0": [8, 4], "expand_1": [12, 6],
                      "project_1": [8, 4]}  # fmt: skip
    for name in ("add_0", "add_1"):
        assert len({tuple(s) for s in pruned.get_layer(name).input_shape}) == 1
    # Every member of the group keeps the same channels: find them from stem_bn's (distinct, random) gammas.
    stem_gamma = model.get_layer("stem_bn").get_weights()[0]
    kept = [int(np.flatnonzero(stem_gamma == g)[0]) for g in pruned.get_layer("stem_bn").get_weights()[0]]
    for name in ("project_bn_0", "project_bn_1"):
        np.testing.assert_array_equal(
            pruned.get_layer(name).get_weights()[0], model.get_layer(name).get_weights()[0][kept]
        )
    np.testing.assert_array_equal(
        pruned.get_layer("classifier").get_weights()[0], model.get_layer("classifier").get_weights()[0][kept]
    )
    x = _images((10, 10, 3))
    assert np.allclose(pruned(x).numpy().sum(axis=1), 1.0, atol=1e-5)


def test_an_add_with_the_model_input_keeps_its_channels():
    inputs = keras.Input((6, 6, 4))
    x = L.Add()([inputs, L.Conv2D(4, 3, padding="same", name="tied")(inputs)])
    x = L.Conv2D(6, 3, name="free")(x)
    model = keras.Model(inputs, L.Dense(2)(L.Flatten()(x)))
    pruned = prune_channels(model, 0.5)
    assert filter_widths(model, pruned) == {"tied": [4, 4], "free": [6, 3]}


def test_a_conv_that_is_the_model_output_is_not_pruned():
    inputs = keras.Input((6, 6, 1))
    x = L.Conv2D(6, 3, padding="same", name="hidden")(inputs)
    model = keras.Model(inputs, L.Conv2D(5, 1, name="head")(L.ReLU()(x)))
    pruned = prune_channels(model, 0.5)
    assert filter_widths(model, pruned) == {"hidden": [6, 3], "head": [5, 5]}


def _concatenate_model():
    inputs = keras.Input((6, 6, 1))
    a, b = L.Conv2D(2, 3, name="a")(inputs), L.Conv2D(2, 3, name="b")(inputs)
    return keras.Model(inputs, L.Concatenate(name="concat")([a, b]))


def _reshape_model():
    return keras.Sequential([L.InputLayer(input_shape=(6, 6, 1)), L.Conv2D(2, 3), L.Reshape((32,), name="flat")])


def _shared_model():
    inputs = keras.Input((6, 6, 2))
    shared = L.Conv2D(2, 3, padding="same", name="twice")
    return keras.Model(inputs, shared(shared(inputs)))


@pytest.mark.parametrize(
    "build, message",
    [
        (_concatenate_model, r"does not support layer 'concat' \(Concatenate\); supported: .*Conv2D"),
        (_reshape_model, r"does not support layer 'flat' \(Reshape\)"),
        (_shared_model, r"layer 'twice' \(Conv2D\); it is shared"),
    ],
    ids=["concatenate", "reshape", "shared"],
)
def test_unsupported_models_are_not_applicable_with_the_layer_named(build, message):
    with pytest.raises(NotApplicable, match=message):
        prune_channels(build(), 0.5)


@pytest.mark.parametrize("spec, message", [
    ("channel_prune:0", r"keep_fraction must be in \(0, 1\], got 0.0"),
    ("channel_prune:1.5", r"keep_fraction must be in \(0, 1\], got 1.5"),
    ("channel_prune:channel_criterion=l2", r"channel_criterion must be one of l1, bn_gamma, got 'l2'"),
])  # fmt: skip
def test_bad_parameters_are_refused(spec, message):
    with pytest.raises(recipes.RecipeError, match=message):
        recipes.parse(spec)


def test_recipe_prunes_then_finetunes(digits, calibration):
    model = models.build_cnn(digits.input_shape, digits.num_classes, filters=(8, 16, 16), seed=0)
    pipeline = recipes.parse("channel_prune:0.5:finetune_epochs=1")
    stage = pipeline.transforms[0]
    assert stage.params == ChannelPruneParams(keep_fraction=0.5, finetune_epochs=1)
    assert pipeline.export.recipe.name == "fp32"
    context = RecipeContext(calibration_data=calibration, dataset=digits)
    result = stage.recipe.apply(model, context, stage.params)
    untrained = prune_channels(model, 0.5)
    assert list(conv_filters(result.model).values()) == [4, 8, 8]
    assert result.extras["kept_filters"] == 0.5 and result.extras["finetune_s"] > 0
    assert result.extras["params"] == result.model.count_params() < model.count_params()
    assert 0 < result.extras["macs_fraction"] < 0.3
    # Fine-tuning moved the weights away from the freshly pruned ones.
    assert not np.allclose(result.model.get_weights()[0], untrained.get_weights()[0])


def test_mobilenet_v2_keeps_its_outputs_at_full_width_and_prunes_in_groups():
    model = keras.applications.MobileNetV2(alpha=0.5, input_shape=(48, 48, 3), weights=None, classes=10)
    _randomize_batchnorm(model)
    x = _images((48, 48, 3), n=2)
    np.testing.assert_allclose(prune_channels(model, 1.0)(x).numpy(), model(x).numpy(), rtol=0, atol=1e-6)
    pruned = prune_channels(model, 0.5)
    widths = filter_widths(model, pruned)
    assert all(after == max(1, round(before / 2)) for before, after in widths.values())
    for layer in pruned.layers:
        if isinstance(layer, L.Add):
            assert len({tuple(s) for s in layer.input_shape}) == 1
    assert keras_macs(pruned) < 0.35 * keras_macs(model)
    assert np.allclose(pruned(x).numpy().sum(axis=1), 1.0, atol=1e-5)
