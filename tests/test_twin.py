"""Keras 3 models rebuilt as tf_keras twins: outputs match, TFMOT takes the twins, and what has no twin is named."""

import importlib
import re

import numpy as np
import pytest
import tensorflow_model_optimization as tfmot

from tfcompress._keras import keras
from tfcompress.models import clone
from tfcompress.twin import TwinError, build_twin, check_twin, is_keras3, register_twin

# Keras 3 itself: `import keras` still gives it once tfcompress._keras has chosen tf_keras for TFMOT.
keras3 = importlib.import_module("keras")
SHAPE = (32, 32, 3)


def _randomize_batchnorm(model, seed=0):
    """Moving statistics away from 0 and 1, so that copying them in the wrong order would show."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras3.layers.BatchNormalization):
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32") for w in layer.get_weights()])
    return model


def _model(layers_of, shape=(8,), name="m"):
    """A Keras 3 functional model of ``layers_of(input)``."""
    inputs = keras3.Input(shape, name="x")
    return keras3.Model(inputs, layers_of(inputs), name=name)


def _x(model, seed=0, batch=4):
    return np.random.default_rng(seed).normal(size=(batch, *model.inputs[0].shape[1:])).astype("float32")


@pytest.fixture(scope="module")
def sequential():
    keras3.utils.set_random_seed(0)
    layers = keras3.layers
    model = keras3.Sequential(
        [keras3.Input(SHAPE), layers.Conv2D(8, 3), layers.BatchNormalization(), layers.MaxPooling2D(),
         layers.Flatten(), layers.Dropout(0.5), layers.Dense(10, activation="softmax")],
        name="seq",
    )  # fmt: skip
    return _randomize_batchnorm(model)


@pytest.fixture(scope="module")
def functional():
    keras3.utils.set_random_seed(0)
    layers = keras3.layers
    inputs = keras3.Input(SHAPE, name="image")
    x = layers.BatchNormalization(name="bn1")(layers.Conv2D(8, 3, padding="same", name="conv1")(inputs))
    y = layers.BatchNormalization(name="bn2")(layers.DepthwiseConv2D(3, padding="same", name="dw")(x))
    x = layers.ReLU(name="relu")(layers.Add(name="sum")([x, y]))
    outputs = layers.Dense(10, name="logits")(layers.GlobalAveragePooling2D(name="pool")(x))
    return _randomize_batchnorm(keras3.Model(inputs, outputs, name="fn"))


MODEL_KINDS = ["sequential", "functional"]


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_twin_outputs_match_the_keras3_model(kind, request):
    model = request.getfixturevalue(kind)
    twin = build_twin(model)
    assert is_keras3(model) and not is_keras3(twin) and isinstance(twin, keras.Model)
    assert isinstance(twin, keras.Sequential) == (kind == "sequential")
    assert [layer.name for layer in twin.layers] == [layer.name for layer in model.layers]
    assert check_twin(model, twin, _x(model)) <= 1e-5
    # TFMOT's wrappers start from a clone (from the layer configs): it must be as faithful.
    assert check_twin(model, clone(twin), _x(model, seed=1)) <= 1e-5


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_tfmot_prunes_and_quantizes_the_twin(kind, request):
    twin = build_twin(request.getfixturevalue(kind))
    kernels = {layer.name for layer in twin.layers if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))}
    pruned = tfmot.sparsity.keras.prune_low_magnitude(clone(twin))
    assert {w.layer.name for w in pruned.layers if type(w).__name__ == "PruneLowMagnitude"} >= kernels
    quantized = tfmot.quantization.keras.quantize_model(clone(twin))
    assert {w.layer.name for w in quantized.layers if type(w).__name__ == "QuantizeWrapperV2"} >= kernels


@pytest.mark.parametrize("kind, layer", [("sequential", "dense"), ("functional", "dw")])
def test_check_twin_names_the_first_layer_that_differs(kind, layer, request):
    model = request.getfixturevalue(kind)
    twin = build_twin(model)
    kernel = twin.get_layer(layer).weights[0]
    kernel.assign(kernel + 0.5)
    with pytest.raises(TwinError, match=f"layer '{layer}' differs from its twin by"):
        check_twin(model, twin, _x(model))


def _dense_with_lora():
    model = _model(lambda x: keras3.layers.Dense(4, name="d")(x))
    model.get_layer("d").enable_lora(2)
    return model


def _gated_attention():
    return _model(lambda x: keras3.layers.MultiHeadAttention(2, 4, use_gate=True, name="mha")(x, x), (5, 8))


def _int8_dense():
    model = _model(lambda x: keras3.layers.Dense(4, name="d")(x))
    model.quantize("int8")  # Keras 3's own int8 (a QuantizedDTypePolicy)
    return model


@pytest.mark.parametrize(
    "make, message",
    [
        (_dense_with_lora, "layer 'd' (Dense): option lora_rank=2 exists only in Keras 3"),
        (_gated_attention, "layer 'mha' (MultiHeadAttention): option use_gate=True exists only in Keras 3"),
        (_int8_dense, "layer 'd' (Dense): dtype policy QuantizedDTypePolicy"),
    ],
    ids=["lora", "attention_gate", "int8_policy"],
)
def test_a_keras3_only_option_off_its_default_is_refused_by_name(make, message):
    model = make()
    with pytest.raises(TwinError, match=re.escape(message)):
        build_twin(model)


class _Unregistered(keras3.layers.Layer):
    def call(self, x):
        return x


class _Subclassed(keras3.Model):
    def __init__(self):
        super().__init__(name="sub")
        self.dense = keras3.layers.Dense(3)

    def call(self, x):
        return self.dense(x)


def _subclassed():
    model = _Subclassed()
    model(np.zeros((1, 8), "float32"))
    return model


NO_COUNTERPART = {
    "builtin": (lambda x: keras3.layers.RMSNormalization(name="rms")(x), "layer 'rms' (RMSNormalization) has no "),
    "custom": (lambda x: _Unregistered(name="mine")(x), "layer 'mine' (_Unregistered) has no tf_keras counterpart"),
    "lambda": (lambda x: keras3.layers.Lambda(lambda t: t * 2, name="lam")(x), "layer 'lam' (Lambda): option function"),
    "op": (lambda x: keras3.ops.mean(x, axis=-1, keepdims=True), "operation 'mean' (Mean, a Keras 3 op, not a layer)"),
    "activation": (lambda x: keras3.layers.Dense(4, activation="hard_shrink", name="d")(x), "activation 'hard_shrink'"),
}


@pytest.mark.parametrize("case", NO_COUNTERPART)
def test_what_has_no_tf_keras_counterpart_is_refused_by_name(case):
    layers_of, message = NO_COUNTERPART[case]
    with pytest.raises(TwinError, match=re.escape(message)):
        build_twin(_model(layers_of))


def test_a_subclassed_model_is_refused():
    with pytest.raises(TwinError, match="model 'sub' is subclassed"):
        build_twin(_subclassed())


def _gain_layer(base: type, name: str) -> type:
    """A custom layer with a weight and an option, x * gain * factor, on either Keras' Layer base."""

    def __init__(self, factor=1.0, **kwargs):
        base.__init__(self, **kwargs)
        self.factor = factor

    def build(self, input_shape):
        self.gain = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="gain")

    def call(self, x):
        return x * self.gain * self.factor

    def get_config(self):
        return {**base.get_config(self), "factor": self.factor}

    methods = {"__init__": __init__, "build": build, "call": call, "get_config": get_config}
    return type(name, (base,), methods | {"__module__": __name__})


Gain = keras3.saving.register_keras_serializable(package="twin_test")(_gain_layer(keras3.layers.Layer, "Gain"))
TfKerasGain = _gain_layer(keras.layers.Layer, "TfKerasGain")  # Gain's tf_keras twin


@pytest.mark.parametrize("key", [Gain, "twin_test>Gain"], ids=["class", "registered_name"])
def test_a_registered_custom_layer_gets_its_twin(key):
    register_twin(key, TfKerasGain)
    model = _model(lambda x: keras3.layers.Dense(3, name="d")(Gain(factor=3.0, name="gain")(x)))
    model.get_layer("gain").set_weights([np.arange(1, 9, dtype="float32")])
    twin = build_twin(model)
    assert isinstance(twin.get_layer("gain"), TfKerasGain) and twin.get_layer("gain").factor == 3.0
    assert check_twin(model, twin, _x(model)) <= 1e-5
    with pytest.raises(TypeError, match="tf_keras.layers.Layer subclass"):
        register_twin(Gain, Gain)


def test_bare_ops_become_layers_and_activations_are_matched_by_value():
    def layers_of(x):
        a = keras3.layers.Dense(8, activation="hard_sigmoid", name="d1")(x)
        b = keras3.layers.Dense(8, activation="hard_swish", name="d2")(x)
        y = (a * (1.0 / 6.0) + 3.0) * b  # scalar ops, then two tensors
        return keras3.layers.Dense(4, name="out")(2.0 - y / 4.0)

    model = _model(layers_of)
    twin = build_twin(model)
    kinds = {layer.name: type(layer).__name__ for layer in twin.layers}
    assert kinds["multiply"] == "Rescaling" and kinds["add"] == "Rescaling" and kinds["multiply_1"] == "Multiply"
    assert check_twin(model, twin, _x(model) * 4) <= 1e-5  # * 4 reaches both ends of hard_sigmoid


def test_nested_models_and_shared_layers_are_rebuilt():
    inner = keras3.Sequential([keras3.Input((8,)), keras3.layers.Dense(8, activation="relu")], name="inner")
    shared = keras3.layers.Dense(8, activation="tanh", name="shared")

    def layers_of(x):
        y = shared(shared(inner(x)))
        return keras3.layers.Concatenate(name="cat")([y, inner(y)])

    model = _model(layers_of)
    twin = build_twin(model)
    assert isinstance(twin.get_layer("inner"), keras.Sequential)
    assert check_twin(model, twin, _x(model)) <= 1e-5


def test_stateful_layers_copy_their_state():
    """An adapted Normalization (its mean and variance are state), attention and layer norm on a sequence."""
    rng = np.random.default_rng(0)
    normalization = keras3.layers.Normalization(name="norm")
    normalization.adapt(rng.normal(3.0, 2.0, (64, 5, 8)).astype("float32"))

    def layers_of(x):
        x = normalization(x)
        x = keras3.layers.MultiHeadAttention(2, 4, name="mha")(x, x)
        return keras3.layers.LayerNormalization(name="ln")(x)

    model = _model(layers_of, (5, 8))
    twin = build_twin(model)
    assert check_twin(model, twin, _x(model) * 2.0 + 3.0) <= 1e-5


def test_mobilenet_v3_small_twin_matches():
    keras3.utils.set_random_seed(0)
    model = keras3.applications.MobileNetV3Small(SHAPE, weights=None, classes=10, classifier_activation=None)
    twin = build_twin(model)
    x = np.random.default_rng(0).uniform(0, 255, (2, *SHAPE)).astype("float32")
    # The untrained logits are tiny (about 1e-11): the difference must be small beside them, not only below atol.
    scale = float(np.max(np.abs(model(x, training=False))))
    assert check_twin(model, twin, x) <= 1e-5 * scale
