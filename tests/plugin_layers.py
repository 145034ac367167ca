"""A user's custom Keras 3 layer, as a --plugins module: registered for loading, with its tf_keras twin.

make_keras3.py imports this file in a process without tfcompress (plain Keras 3) to build and save a model
that uses the layer; a study imports it with --plugins=tests.plugin_layers, which also registers the twin.
"""

import sys

import keras  # Keras 3, as the user's own code has it


@keras.saving.register_keras_serializable(package="tfcompress_test")
class Gain(keras.layers.Layer):
    """Multiplies its input by one learned scalar per channel."""

    def build(self, input_shape):
        self.gain = self.add_weight(name="gain", shape=(input_shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.gain


def build_model(keras):
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(inputs)
    x = Gain(name="gain")(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x), name="custom")


if "tfcompress" in sys.modules:  # in a tfcompress process: the layer's tf_keras twin, for training-time recipes
    from tfcompress import register_twin
    from tfcompress._keras import keras as tf_keras

    class GainTwin(tf_keras.layers.Layer):
        def build(self, input_shape):
            self.gain = self.add_weight(name="gain", shape=(input_shape[-1],), initializer="ones")

        def call(self, x):
            return x * self.gain

    register_twin("tfcompress_test>Gain", GainTwin)
