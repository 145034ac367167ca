"""Built-in models and their training (the user's own models are loaded by tfcompress.loading)."""

from __future__ import annotations

import time

import numpy as np

from tfcompress._keras import keras, tf
from tfcompress.data import Dataset


class ModelError(ValueError):
    """A model that cannot be loaded or used, with a message that says why and what to do."""


def build_cnn(
    input_shape: tuple[int, ...],
    num_classes: int,
    filters: tuple[int, int, int] = (32, 64, 128),
    seed: int = 0,
) -> keras.Model:
    """The default CNN: Conv-Conv-Pool-Conv-Pool-Flatten-Dense, 3x3 kernels, ReLU.

    At 28x28x1 with the default filters it has 155k parameters and 29 M MACs,
    enough work that latency on a CPU measures compute, not interpreter overhead.
    """
    init = keras.initializers.GlorotUniform
    f1, f2, f3 = filters
    return keras.Sequential(
        [
            keras.layers.InputLayer(input_shape=input_shape),
            keras.layers.Conv2D(f1, 3, padding="same", activation="relu", kernel_initializer=init(seed)),
            keras.layers.Conv2D(f2, 3, padding="same", activation="relu", kernel_initializer=init(seed + 1)),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(f3, 3, padding="same", activation="relu", kernel_initializer=init(seed + 2)),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(num_classes, kernel_initializer=init(seed + 3)),
        ],
        name="cnn",
    )


def build_resnet_small(input_shape: tuple[int, ...], num_classes: int, seed: int = 0) -> keras.Model:
    """A small Functional ResNet: Conv-BN-ReLU stem, three residual blocks, GlobalAveragePooling2D, Dense.

    The stem (32 filters) runs at full size and is max-pooled by 2; block1 (32) keeps
    its width and adds an identity shortcut; block2 (64) and block3 (128, stride 2)
    change width and add a 1x1 conv + BN projection. Convs have no bias (BN follows)
    and the head returns logits. At 28x28x1 it has 0.31 M parameters and 26 M MACs:
    like the default CNN, compute-bound on a CPU, but with BatchNorm and residual
    joins (for the channel-pruning and fusion paths).

    BatchNorm momentum is 0.9, not Keras' 0.99: in 10 epochs on mnist5k (630
    steps) the slower moving statistics lag the weights; test accuracy stayed
    under 0.72 for 5 epochs and ended at 0.966 with 0.99, 0.975 with 0.9.
    """
    seeds = iter(range(seed, seed + 1000))

    def norm(x, name):
        return keras.layers.BatchNormalization(momentum=0.9, name=name)(x)

    def conv(x, filters, kernel_size, name, strides=1):
        return keras.layers.Conv2D(
            filters,
            kernel_size,
            strides=strides,
            padding="same",
            use_bias=False,
            kernel_initializer=keras.initializers.HeNormal(next(seeds)),
            name=name,
        )(x)

    def block(x, filters, name, strides=1):
        shortcut = x
        if strides != 1 or x.shape[-1] != filters:
            shortcut = conv(x, filters, 1, f"{name}_proj_conv", strides)
            shortcut = norm(shortcut, f"{name}_proj_bn")
        y = conv(x, filters, 3, f"{name}_conv1", strides)
        y = norm(y, f"{name}_bn1")
        y = keras.layers.ReLU(name=f"{name}_relu1")(y)
        y = conv(y, filters, 3, f"{name}_conv2")
        y = norm(y, f"{name}_bn2")
        y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
        return keras.layers.ReLU(name=f"{name}_out")(y)

    inputs = keras.Input(shape=input_shape, name="image")
    x = conv(inputs, 32, 3, "stem_conv")
    x = norm(x, "stem_bn")
    x = keras.layers.ReLU(name="stem_relu")(x)
    x = keras.layers.MaxPooling2D(name="stem_pool")(x)
    x = block(x, 32, "block1")
    x = block(x, 64, "block2")
    x = block(x, 128, "block3", strides=2)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(num_classes, kernel_initializer=keras.initializers.GlorotUniform(next(seeds)),
                                 name="logits")(x)  # fmt: skip
    return keras.Model(inputs, outputs, name="resnet_small")


def build_mobilenet_v2(
    input_shape: tuple[int, ...], num_classes: int, seed: int = 0, alpha: float = 0.5
) -> keras.Model:
    """Keras' MobileNetV2 (width ``alpha``), untrained (never downloads weights), returning logits.

    Inverted residual blocks of 1x1 expand, 3x3 depthwise and 1x1 project convs
    with BatchNorm, ReLU6 and ZeroPadding2D. It needs images of at least 32x32;
    the classification task feeds it the digits resized to 48x48x3, where it
    has 0.72 M parameters and 5.3 M MACs in 156 layers: many small ops.
    """
    keras.utils.set_random_seed(seed)  # keras.applications takes no initializer seeds
    model = keras.applications.MobileNetV2(
        input_shape=tuple(input_shape),
        alpha=alpha,
        weights=None,
        classes=num_classes,
        classifier_activation=None,
    )
    # Its BatchNorm momentum of 0.999 suits ImageNet-long training. After the 630 steps of 10 epochs on
    # mnist5k, moving statistics with 0.999 (or even 0.99) still lag the weights: inference-mode accuracy
    # stayed at chance for 8 epochs and ended at 0.64 (0.99), against 0.90 with 0.9.
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    return model


def outputs_probabilities(model: keras.Model) -> bool:
    """Whether the classifier ends in a softmax (probabilities) rather than logits."""
    last = model.layers[-1]
    while isinstance(getattr(last, "layer", None), keras.layers.Layer):  # TFMOT wrappers
        last = last.layer
    if isinstance(last, keras.layers.Softmax):
        return True
    activation = getattr(last, "activation", None)
    return getattr(activation, "__name__", None) == "softmax"


def train(
    model: keras.Model,
    dataset: Dataset,
    epochs: int,
    seed: int = 0,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    verbose: int = 1,
    callbacks: list | None = None,
    loss=None,
) -> float:
    """Trains a model in place with Adam on (x_train, y_train); returns the wall time in seconds.

    Args:
      loss: a Keras loss for y_train and the model's output; None for a
        classifier's sparse cross-entropy, which takes logits or
        probabilities, whichever the model outputs.
    """
    keras.utils.set_random_seed(seed)
    if loss is None:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=not outputs_probabilities(model))
        metrics = ["accuracy"]
    else:
        metrics = []
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, metrics=metrics)
    start = time.perf_counter()
    model.fit(
        dataset.x_train,
        dataset.y_train,
        epochs=epochs,
        batch_size=batch_size,
        verbose=verbose,
        callbacks=callbacks or [],
    )
    return time.perf_counter() - start


def is_subclassed(model: keras.Model) -> bool:
    """Subclassed models have no layer graph that TFMOT or cloning can walk."""
    return not (isinstance(model, keras.Sequential) or getattr(model, "_is_graph_network", False))


def clone(model: keras.Model) -> keras.Model:
    """A copy with new layer objects and the same weights.

    TFMOT's pruning and clustering wrappers reuse the layers they wrap, so
    fine-tuning a wrapped original would silently change the baseline.
    """
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def num_classes(model: keras.Model) -> int:
    """The size of the model's last output axis (the number of classes of a classifier)."""
    return int(model.outputs[0].shape[-1])


def predict_logits(model: keras.Model, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Runs the Keras model in inference mode (used for reference outputs)."""
    return np.concatenate(
        [model(tf.constant(x[i : i + batch_size]), training=False).numpy() for i in range(0, len(x), batch_size)]
    )
