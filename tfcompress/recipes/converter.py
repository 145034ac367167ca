"""The TFLite converter back end: Keras model -> .tflite bytes, in each post-training quantization mode.

Registers the post-training export recipes (``fp32``, ``dynamic_range``,
``float16``, ``int8``, ``int16x8``) through the ExportBackend seam of
tfcompress.recipes.base.
"""

from __future__ import annotations

import enum
import tempfile
import warnings
from collections.abc import Iterator

import numpy as np

from tfcompress._keras import keras, tf
from tfcompress._process import CONVERTER_NOTICES, quiet_stderr
from tfcompress.loading import ExportedModel, TFLiteModel
from tfcompress.recipes.base import ExportBackend, NotApplicable, RecipeContext, register_backend
from tfcompress.twin import is_keras3

# What the converter's native code prints on every calibrated conversion.


class Quantization(enum.Enum):
    """Post-training modes of the TFLite converter."""

    FP32 = "fp32"  # plain conversion, float32 weights and activations
    DYNAMIC_RANGE = "dynamic_range"  # int8 weights, float activations quantized on the fly
    FLOAT16 = "float16"  # float16 weights, dequantized to float32 at load time
    INT8 = "int8"  # full integer: int8 weights, activations, input and output
    INT16X8 = "int16x8"  # int16 activations, int8 weights, float input and output

    @property
    def needs_calibration(self) -> bool:
        return self in (Quantization.INT8, Quantization.INT16X8)


# What a .tflite model (TFLiteModel) gets instead of each converter mode: the LiteRT Quantizer's nearest spec.
_QUANTIZE_INSTEAD = {
    Quantization.DYNAMIC_RANGE: "quantize:weights=8:activations=float",
    Quantization.FLOAT16: "quantize:weights=8:activations=none",
    Quantization.INT8: "quantize:weights=8:activations=8",
    Quantization.INT16X8: "quantize:weights=8:activations=16",
}


def _representative(x: np.ndarray) -> Iterator[list[np.ndarray]]:
    for i in range(len(x)):  # integer inputs (token ids) stay integers
        yield [x[i : i + 1] if np.issubdtype(x.dtype, np.integer) else x[i : i + 1].astype(np.float32)]


def convert(
    model: keras.Model,
    mode: Quantization = Quantization.FP32,
    calibration_data: np.ndarray | None = None,
    sparse: bool = False,
) -> bytes:
    """Converts a Keras model to a .tflite flatbuffer.

    Args:
      model: a model with one input: tf_keras, Keras 3, a SavedModel
        exported without layers (tfcompress.loading.ExportedModel), or an
        fp32 .tflite file (TFLiteModel), which only FP32 takes: its own bytes.
      mode: the post-training quantization mode.
      calibration_data: inputs (N, ...) that represent real data; required by
        INT8 and INT16X8 to choose activation ranges.
      sparse: also apply the converter's EXPERIMENTAL_SPARSITY, which stores
        sparse weights in a compressed format (smaller files, no speed-up).

    Returns:
      The .tflite file's bytes.

    Raises:
      ValueError: a calibrated mode was asked for without calibration data.
      NotApplicable: a .tflite model in any mode but FP32, or sparse.
    """
    mode = Quantization(mode)
    if isinstance(model, TFLiteModel):  # already converted: the fp32 row is the file as it is
        if mode is Quantization.FP32 and not sparse:
            return model.content
        given = f"the model is a .tflite file ({model.name})"
        if sparse:
            raise NotApplicable(f"sparse export converts a Keras model with the TFLite converter; {given}.")
        raise NotApplicable(f"{mode.value} converts a Keras model with the TFLite converter; {given}: "
                            + f"use {_QUANTIZE_INSTEAD[mode]} (the LiteRT Quantizer) instead.")  # fmt: skip
    if mode.needs_calibration and (calibration_data is None or len(calibration_data) == 0):
        raise ValueError(f"Quantization {mode.value!r} needs calibration_data (representative inputs).")
    if isinstance(model, ExportedModel):  # a SavedModel without layers (Keras 3's model.export)
        return _convert(tf.lite.TFLiteConverter.from_saved_model(model.path), model, mode, calibration_data, sparse)
    if is_keras3(model):
        # What from_keras_model does for Keras 3 (export, then convert the SavedModel), without the endpoint
        # listing Keras prints on every export; never from_concrete_functions, whose outputs are garbage.
        with tempfile.TemporaryDirectory(prefix="tfcompress-export-") as folder:
            model.export(folder, format="tf_saved_model", verbose=False)
            converter = tf.lite.TFLiteConverter.from_saved_model(folder)
            return _convert(converter, model, mode, calibration_data, sparse)
    return _convert(tf.lite.TFLiteConverter.from_keras_model(model), model, mode, calibration_data, sparse)


def _convert(converter, model, mode: Quantization, calibration_data, sparse: bool) -> bytes:
    optimizations = [] if mode is Quantization.FP32 else [tf.lite.Optimize.DEFAULT]
    if sparse:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = optimizations
    if mode is Quantization.FLOAT16:
        converter.target_spec.supported_types = [tf.float16]
    elif mode is Quantization.INT8:
        converter.representative_dataset = lambda: _representative(calibration_data)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if tf.as_dtype(model.inputs[0].dtype).is_floating:  # token-id inputs stay integer ids
            converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    elif mode is Quantization.INT16X8:
        converter.representative_dataset = lambda: _representative(calibration_data)
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        ]
    with warnings.catch_warnings(), quiet_stderr(CONVERTER_NOTICES):
        # int8 I/O makes the converter warn that no input statistics were given;
        # the representative dataset supplies them, so the warning is noise.
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        return converter.convert()


_DESCRIPTIONS = {
    Quantization.FP32: "plain conversion, float32 (the baseline)",
    Quantization.DYNAMIC_RANGE: "post-training dynamic range: int8 weights, float activations",
    Quantization.FLOAT16: "post-training float16 weights",
    Quantization.INT8: "post-training full integer: int8 weights, activations, input and output",
    Quantization.INT16X8: "post-training 16-bit activations with 8-bit weights",
}


class TFLiteConverterBackend(ExportBackend):
    """tf.lite.TFLiteConverter in each Quantization mode, calibrated on the context's calibration data."""

    name = "tflite_converter"

    def modes(self) -> list[tuple[str, str]]:
        return [(mode.value, _DESCRIPTIONS[mode]) for mode in Quantization]

    def export(self, model: keras.Model, mode: str, context: RecipeContext, params=None) -> bytes:
        return self._convert(model, Quantization(mode), context, sparse=False)

    def export_sparse(self, model: keras.Model, mode: str, context: RecipeContext, params=None) -> bytes:
        return self._convert(model, Quantization(mode), context, sparse=True)

    @staticmethod
    def _convert(model, mode: Quantization, context: RecipeContext, sparse: bool) -> bytes:
        return convert(model, mode, context.calibration_data if mode.needs_calibration else None, sparse=sparse)


register_backend(TFLiteConverterBackend())
