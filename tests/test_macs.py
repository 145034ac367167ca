"""MAC counts from shapes: a hand count, the .tflite against Keras, and every quantization mode alike."""

import numpy as np
import pytest

from tfcompress.measure import macs
from tfcompress.measure.tflite_graph import OpInfo, TensorInfo
from tfcompress.recipes.converter import Quantization, convert

# Input 8x8x1 -> Conv2D(4, 3x3, valid) 6x6x4 -> DepthwiseConv2D(3x3, same) 6x6x4
# -> Conv2DTranspose(2, 2x2, stride 2) 12x12x2 -> Flatten 288 -> Dense(5).
HAND_COUNT = {
    "CONV_2D": 6 * 6 * 4 * (3 * 3 * 1),
    "DEPTHWISE_CONV_2D": 6 * 6 * 4 * (3 * 3),
    "TRANSPOSE_CONV": (6 * 6 * 4) * (2 * 2 * 2),
    "FULLY_CONNECTED": 288 * 5,
}


@pytest.fixture(scope="module")
def tiny_model():
    from tfcompress._keras import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    x = keras.layers.Conv2DTranspose(2, 2, strides=2)(x)
    outputs = keras.layers.Dense(5)(keras.layers.Flatten()(x))
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def calibration_inputs():
    return np.random.default_rng(0).standard_normal((4, 8, 8, 1)).astype(np.float32)


def test_keras_count_matches_the_hand_count(tiny_model):
    assert macs.keras_macs(tiny_model) == sum(HAND_COUNT.values())


@pytest.mark.parametrize("mode", [Quantization.FP32, Quantization.INT8, Quantization.FLOAT16])
def test_tflite_count_matches_the_hand_count_in_every_mode(tiny_model, calibration_inputs, mode):
    tflite = convert(tiny_model, mode, calibration_inputs if mode.needs_calibration else None)
    assert macs.macs_by_op(tflite) == HAND_COUNT
    assert macs.tflite_macs(tflite) == macs.keras_macs(tiny_model)


def test_a_sequential_model_with_groups_and_separable_convs_agrees_with_its_tflite():
    from tfcompress._keras import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((10, 10, 4)),
            keras.layers.Conv2D(8, 3, groups=2),  # 8x8x8 x 3x3x2
            keras.layers.SeparableConv2D(6, 3, padding="same"),  # depthwise 8x8x8 x 9, pointwise 8x8x6 x 8
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3),
        ]
    )
    expected = 8 * 8 * 8 * 18 + 8 * 8 * 8 * 9 + 8 * 8 * 6 * 8 + 6 * 3
    assert macs.keras_macs(model) == expected
    assert macs.tflite_macs(convert(model)) == expected


def _tensor(index, shape):
    return TensorInfo(index, f"t{index}", np.dtype(np.float32), shape)


@pytest.mark.parametrize(
    "x_shape, y_shape, out_shape",
    [((2, 5, 7), (2, 7, 3), (2, 5, 3)), ((2, 7, 5), (2, 7, 3), (2, 5, 3))],  # plain, and x transposed (adj_x)
)
def test_batch_matmul_counts_the_contracted_dimension(x_shape, y_shape, out_shape):
    op = OpInfo("BATCH_MATMUL", (_tensor(0, x_shape), _tensor(1, y_shape)), (_tensor(2, out_shape),))
    assert macs._op_macs(op) == 2 * 5 * 3 * 7


def test_elementwise_ops_count_nothing():
    op = OpInfo("ADD", (_tensor(0, (1, 4)), _tensor(1, (1, 4))), (_tensor(2, (1, 4)),))
    assert macs._op_macs(op) == 0


def test_subclassed_model_is_refused_with_the_way_out():
    from tfcompress._keras import keras

    class Net(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="tflite_macs"):
        macs.keras_macs(Net())


def test_attention_and_dense_on_sequences_agree_with_the_tflite():
    from tfcompress._keras import keras

    keras.utils.set_random_seed(0)
    tokens = keras.Input((8,), dtype="int32")
    x = keras.layers.Embedding(20, 16)(tokens)
    x = keras.layers.Add()([x, keras.layers.MultiHeadAttention(2, 4)(x, x, use_causal_mask=True)])
    x = keras.layers.Dense(32, activation="gelu")(keras.layers.LayerNormalization()(x))
    model = keras.Model(tokens, keras.layers.Dense(5)(x))
    attention = 3 * 8 * 16 * 2 * 4 + 8 * 2 * 4 * 16 + 2 * 8 * 8 * (4 + 4)  # q, k, v; output; scores and sum
    assert macs.keras_macs(model) == attention + 8 * 16 * 32 + 8 * 32 * 5
    tflite = convert(model)
    # The Dense after LayerNormalization reads a tensor whose shape is only known at run time.
    assert macs.tflite_macs(tflite) == macs.keras_macs(model)
    assert macs.macs_by_op(tflite)["BATCH_MATMUL"] == 2 * 8 * 8 * (4 + 4)
