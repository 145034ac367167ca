"""The classification task's built-in models (cnn, resnet_small, mobilenet_v2) and the data each one takes."""

import numpy as np
import pytest

from tfcompress import tasks
from tfcompress.data import load_mnist5k
from tfcompress.study import from_flat

# The input each built-in model is built for on mnist5k.
INPUT_SHAPES = {"cnn": (28, 28, 1), "resnet_small": (28, 28, 1), "mobilenet_v2": (48, 48, 3)}


def _build(name, input_shape=None, num_classes=10, seed=0):
    from tfcompress import models

    builder = {"cnn": models.build_cnn, "resnet_small": models.build_resnet_small,
               "mobilenet_v2": models.build_mobilenet_v2}[name]  # fmt: skip
    return builder(input_shape or INPUT_SHAPES[name], num_classes, seed=seed)


@pytest.fixture(scope="module")
def built():
    """Each built-in model, untrained, seed 0 (MobileNetV2 takes seconds to build and to convert)."""
    return {name: _build(name) for name in INPUT_SHAPES}


def macs(model) -> int:
    """Multiply-accumulates per example: H_out*W_out*k*k*Cin*Cout per conv (Cin 1 if depthwise), in*out per dense."""
    from tfcompress._keras import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):  # DepthwiseConv2D too
            _, height, width, channels = layer.output.shape
            depth = 1 if isinstance(layer, keras.layers.DepthwiseConv2D) else layer.input.shape[-1]
            total += height * width * layer.kernel_size[0] * layer.kernel_size[1] * depth * channels
        elif isinstance(layer, keras.layers.Dense):
            total += layer.input.shape[-1] * layer.units
    return total


def test_classification_task_lists_the_three_builtin_models_with_cnn_the_default():
    task = tasks.get("classification")
    assert task.builtin_models == ("cnn", "resnet_small", "mobilenet_v2")
    assert task.default_model == "cnn"


@pytest.mark.parametrize("name", ["cnn", "resnet_small", "mobilenet_v2"])
def test_builder_takes_its_input_shape_and_returns_logits_per_class(name, built):
    from tfcompress.models import outputs_probabilities

    model = built[name]
    assert tuple(model.inputs[0].shape[1:]) == INPUT_SHAPES[name]
    assert tuple(model.outputs[0].shape[1:]) == (10,)
    assert not outputs_probabilities(model)  # logits, as the default cnn: train() picks from_logits


@pytest.mark.parametrize("name", ["resnet_small", "mobilenet_v2"])
def test_builder_is_seeded(name, built):
    again = _build(name, seed=0).get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(built[name].get_weights(), again, strict=True))
    if name == "resnet_small":  # one more MobileNetV2 build would cost seconds
        other = _build(name, seed=1).get_weights()
        assert not all(np.array_equal(a, b) for a, b in zip(again, other, strict=True))


def test_resnet_small_has_batchnorm_residual_joins_and_about_26m_macs(built):
    from tfcompress._keras import keras

    model = built["resnet_small"]
    kinds = {type(layer).__name__ for layer in model.layers}
    # Only the layer kinds that the channel-pruning recipe rebuilds.
    assert kinds <= {"InputLayer", "Conv2D", "BatchNormalization", "ReLU", "MaxPooling2D", "Add",
                     "GlobalAveragePooling2D", "Dense"}  # fmt: skip
    adds = [layer for layer in model.layers if isinstance(layer, keras.layers.Add)]
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(adds) == 3 and len(norms) == 9 and {layer.momentum for layer in norms} == {0.9}
    # block1 keeps its width (identity shortcut); block2 and block3 change it (1x1 conv + BN projection).
    assert [layer.name for layer in model.layers if layer.name.endswith("_proj_conv")] == [
        "block2_proj_conv",
        "block3_proj_conv",
    ]
    assert model.get_layer("block1_add").input[0].name.startswith("stem_pool")
    # By hand: stem 28x28 3x3 1->32, pool to 14x14; block1 two 3x3 32->32 at 14x14; block2 3x3 32->64,
    # 3x3 64->64 and 1x1 32->64 at 14x14; block3 the same at 7x7 from 64 to 128; dense 128->10.
    by_hand = (
        28 * 28 * 9 * 32
        + 2 * 14 * 14 * 9 * 32 * 32
        + 14 * 14 * (9 * 32 * 64 + 9 * 64 * 64 + 32 * 64)
        + 7 * 7 * (9 * 64 * 128 + 9 * 128 * 128 + 64 * 128)
        + 128 * 10
    )
    assert macs(model) == by_hand
    assert 20e6 <= by_hand <= 40e6


def test_mobilenet_v2_is_keras_applications_with_short_training_batchnorm(built):
    from tfcompress._keras import keras

    model = built["mobilenet_v2"]
    assert model.name.startswith("mobilenetv2_0.50")
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and {layer.momentum for layer in norms} == {0.9}  # not ImageNet's 0.999: few steps here
    assert any(isinstance(layer, keras.layers.DepthwiseConv2D) for layer in model.layers)
    assert 4e6 <= macs(model) <= 8e6


@pytest.fixture(scope="module")
def mnist5k():
    return load_mnist5k(seed=0)


def test_mobilenet_v2_gets_the_digits_resized_to_48x48x3(mnist5k, tmp_path, monkeypatch):
    from tfcompress import data as data_lib
    from tfcompress._keras import tf

    monkeypatch.setattr(data_lib, "load_mnist5k", lambda seed=0: mnist5k)  # read the CSV once
    task = tasks.get("classification")
    config = from_flat(model="mobilenet_v2", output_dir=str(tmp_path))
    resized = task.load_data(config.setup())
    assert resized.name == "mnist5k@48x48x3" and resized.input_shape == (48, 48, 3)
    assert resized.x_train.dtype == np.float32 and resized.x_test.shape == (len(mnist5k.x_test), 48, 48, 3)
    assert resized.x_train.min() >= 0.0 and resized.x_train.max() <= 1.0
    np.testing.assert_array_equal(resized.y_train, mnist5k.y_train)
    np.testing.assert_array_equal(resized.y_test, mnist5k.y_test)
    assert resized.num_classes == mnist5k.num_classes
    # The channels are copies of the gray image; each image keeps its ink (mean pixel), and shrunk back it
    # is the original digit.
    np.testing.assert_array_equal(resized.x_test[..., 0], resized.x_test[..., 2])
    np.testing.assert_allclose(resized.x_test.mean(axis=(1, 2, 3)), mnist5k.x_test.mean(axis=(1, 2, 3)), atol=0.01)
    shrunk = tf.image.resize(resized.x_test[:100, ..., :1], (28, 28), antialias=True).numpy()
    assert np.corrcoef(shrunk.ravel(), mnist5k.x_test[:100].ravel())[0, 1] > 0.95
    # The other models get the digits as they are; the resized data trains its own cache entry.
    as_is = task.load_data(from_flat(model="resnet_small", output_dir=str(tmp_path)).setup())
    assert as_is.name == "mnist5k" and as_is.input_shape == (28, 28, 1)
    assert task.cache_name("mobilenet_v2", resized, config.setup()) != task.cache_name(
        "mobilenet_v2", as_is, config.setup()
    )


def _image_folder(root, size=(10, 12)):
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8), mode="L").save(root / label / f"{i}.png")
    return str(root)


def test_an_image_folder_is_read_at_its_own_size_for_cnn_and_at_48x48x3_for_mobilenet_v2(tmp_path):
    task = tasks.get("classification")
    folder = _image_folder(tmp_path / "images")
    as_is = task.load_data(from_flat(model="cnn", data=folder, output_dir=str(tmp_path)).setup())
    assert as_is.input_shape == (10, 12, 1) and as_is.num_classes == 2
    for_mobilenet = task.load_data(from_flat(model="mobilenet_v2", data=folder, output_dir=str(tmp_path)).setup())
    assert for_mobilenet.input_shape == (48, 48, 3)
    np.testing.assert_array_equal(for_mobilenet.y_test, as_is.y_test)


@pytest.mark.parametrize(
    "name, builder, learning_rate",
    [
        ("cnn", "build_cnn", 1e-3),
        ("resnet_small", "build_resnet_small", 1e-3),
        ("mobilenet_v2", "build_mobilenet_v2", 5e-3),  # from scratch in 10 epochs it needs a higher rate
    ],
)
def test_build_trains_the_named_model_on_the_data(monkeypatch, digits, name, builder, learning_rate):
    from tfcompress import models

    built, trained = [], []
    monkeypatch.setattr(models, builder, lambda *args, **kwargs: built.append((args, kwargs)) or name)
    monkeypatch.setattr(models, "train", lambda model, dataset, **kwargs: trained.append((model, dataset, kwargs)))
    config = from_flat(model=name, dataset="digits", epochs=2, seed=5)
    assert tasks.get("classification").build(config.setup(), digits, 0) == name
    assert built == [(((8, 8, 1), 10), {"seed": 5})]
    [(model, dataset, kwargs)] = trained
    assert model == name and dataset is digits
    assert kwargs["epochs"] == 2 and kwargs["seed"] == 5 and kwargs["learning_rate"] == learning_rate


@pytest.mark.parametrize("name", ["resnet_small", "mobilenet_v2"])
def test_fp32_tflite_agrees_with_keras(name, built):
    from tfcompress.measure.evaluate import run_tflite
    from tfcompress.models import predict_logits
    from tfcompress.recipes.converter import Quantization, convert

    model = built[name]
    x = np.random.default_rng(0).random((8, *INPUT_SHAPES[name]), dtype=np.float32)
    outputs = run_tflite(convert(model, Quantization.FP32), x)
    assert outputs.shape == (8, 10)
    np.testing.assert_allclose(outputs, predict_logits(model, x), rtol=1e-3, atol=1e-4)
