"""A roof per data type: the GFLOP/s that compute-bound .tflite files of each type reach here.

A roofline fraction means something only against a peak of the same kind of arithmetic, run by the
same runtime at the same thread count: an int8 model on a CPU with int8 dot-product instructions
runs several times above a float32 matmul peak. So tfcompress generates small compute-bound models
(3x3 convolutions on 28x28x32, the shape of the built-in CNN's layers, and on 14x14x64, where the
int16x8 builtin kernels do best, and a fully-connected layer applied to 256 rows of 512 features, where
XNNPACK runs its GEMM kernels at their best) in
every data type a recipe exports (``DTYPES``), times them with the rows, and takes each type's best
as its roof. A row divides its GFLOP/s by the roof of the data type its heaviest ops run in
(tfcompress.measure.macs.compute_dtype).

Generating the files needs TensorFlow (the converter); they are cached by TensorFlow version
(``cache_folder``).
"""

from __future__ import annotations

import os
import tempfile
import warnings

import numpy as np

from tfcompress._process import CONVERTER_NOTICES, quiet_stderr
from tfcompress.measure.macs import DTYPES, tflite_macs

# name -> (input shape without the batch, layer): compute-bound at batch 1.
SHAPES = {
    "conv3x3_28x28x32_to_64": ((28, 28, 32), ("conv", 64)),
    "conv3x3_14x14x64_to_64": ((14, 14, 64), ("conv", 64)),
    "fc_256x512_to_512": ((256, 512), ("dense", 512)),
}


def cache_folder() -> str:
    """Where the generated files are kept: $TFCOMPRESS_CACHE/roofs, else $XDG_CACHE_HOME (~/.cache)/tfcompress/roofs.

    They are the same on every machine with the same TensorFlow (seeded weights), so one folder serves
    every study, as pip's cache serves every install.
    """
    root = os.environ.get("TFCOMPRESS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "tfcompress"
    )
    return os.path.join(root, "roofs")


def _model(shape_name: str):
    from tfcompress._keras import keras

    shape, (kind, width) = SHAPES[shape_name]
    inputs = keras.Input(shape, batch_size=1)
    if kind == "conv":
        outputs = keras.layers.Conv2D(width, 3, padding="same", activation="relu")(inputs)
    else:
        outputs = keras.layers.Dense(width, activation="relu")(inputs)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0, 0.05, w.shape).astype(np.float32) for w in model.get_weights()])
    return model


def _convert(model, dtype: str) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    shape = (1, *model.input_shape[1:])
    rng = np.random.default_rng(0)

    def representative():
        for _ in range(8):
            yield [rng.uniform(-1, 1, shape).astype(np.float32)]

    if dtype == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif dtype == "dynamic_range":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif dtype == "int8":  # as the int8 recipe exports: int8 inputs and outputs
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.int8
    elif dtype == "int16x8":  # as the int16x8 recipe exports: float inputs and outputs
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        int16x8 = tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        converter.target_spec.supported_ops = [int16x8]
    elif dtype != "fp32":
        raise ValueError(f"unknown data type {dtype!r}; choose from {', '.join(DTYPES)}.")
    with warnings.catch_warnings(), quiet_stderr(CONVERTER_NOTICES):
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        return converter.convert()


def _cached(folder: str, name: str, build) -> str:
    """``folder/tf-VERSION/name``, written once from ``build()`` (bytes), atomically: a folder shared by
    processes never holds a partial file."""
    import tensorflow as tf

    folder = os.path.join(folder, f"tf-{tf.__version__}")
    path = os.path.join(folder, name)
    if not os.path.exists(path):
        content = build()
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        os.replace(tmp, path)
    return path


def roof_files(folder: str, dtypes: tuple[str, ...] = DTYPES) -> dict[tuple[str, str], str]:
    """(data type, shape name) -> path of its synthetic .tflite under ``folder``, generated once."""
    models: dict[str, object] = {}

    def build(shape_name: str, dtype: str):
        def convert() -> bytes:
            if shape_name not in models:
                models[shape_name] = _model(shape_name)
            return _convert(models[shape_name], dtype)

        return convert

    return {
        (dtype, shape_name): _cached(folder, f"{dtype}-{shape_name}.tflite", build(shape_name, dtype))
        for shape_name in SHAPES
        for dtype in dtypes
    }


def overhead_file(folder: str) -> str:
    """A trivial .tflite (one ADD on 4 floats) whose median is the timing loop's own per-invoke cost."""

    def build() -> bytes:
        from tfcompress._keras import keras

        inputs = keras.Input((4,), batch_size=1)
        return _convert(keras.Model(inputs, keras.layers.Add()([inputs, inputs])), "fp32")

    return _cached(folder, "overhead-add4.tflite", build)


def roof_table(medians: dict[tuple[str, str], float | None], paths: dict[tuple[str, str], str]) -> dict[str, dict]:
    """Each data type's roof from the synthetic files' medians (ms) at one runtime and thread count.

    Returns:
      data type -> {"gflops": best GFLOP/s or None, "shape": the file that reached it,
      "files": {shape: GFLOP/s}}.
    """
    table: dict[str, dict] = {}
    for (dtype, shape_name), median in medians.items():
        entry = table.setdefault(dtype, {"gflops": None, "shape": None, "files": {}})
        if median is None or median <= 0:
            entry["files"][shape_name] = None
            continue
        gflops = 2.0 * tflite_macs(paths[(dtype, shape_name)]) / (median * 1e-3) / 1e9
        entry["files"][shape_name] = gflops
        if entry["gflops"] is None or gflops > entry["gflops"]:
            entry["gflops"], entry["shape"] = gflops, shape_name
    return table
