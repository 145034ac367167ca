"""Loading the user's own model, as saved: Keras 3 or tf_keras, .keras, .h5 or a SavedModel folder; or an fp32 .tflite.

Which Keras wrote a file is read from the file itself (no flag):

- ``.keras``: ``metadata.json``'s ``keras_version`` (3.x: Keras 3);
- ``.h5``: the ``keras_version`` attribute;
- a SavedModel folder: ``keras_metadata.pb`` marks one tf_keras saved with its
  layers; any other SavedModel (Keras 3's ``model.export``, a ``tf.Module``)
  is an ``ExportedModel``: a serving signature without layers.

Keras 3 models are loaded with Keras 3 (``import keras``, which stays Keras 3
in this process although TensorFlow runs with tf_keras); post-training
exports convert them directly, and training-time recipes get a tf_keras twin
(tfcompress.twin). An ExportedModel converts through ``from_saved_model``;
it has no layers to prune or fine-tune.

A ``.tflite`` file (from any converter) is a ``TFLiteModel``: it must be
float (no quantized tensors, no float16 weights); its fp32 row is the file
itself and recipes that quantize a .tflite file run on it, while the
converter's exports and the training-time recipes need a Keras model.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import zipfile

import numpy as np

from tfcompress._keras import keras, tf
from tfcompress._process import quiet_stderr
from tfcompress.measure.evaluate import load_interpreter, run_tflite
from tfcompress.models import ModelError
from tfcompress.twin import is_keras3

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
_QUANTIZED_IO = ("int8", "uint8", "int16")  # integer-quantized; int32/int64 token ids are not
_GRAPPLER_NOTICES = re.compile(r"tfg_optimizer_hook|when importing GraphDef to MLIR module")


@dataclasses.dataclass(frozen=True)
class _Spec:
    """The shape and dtype of a signature's tensor, read as a Keras model's ``inputs[0]``."""

    shape: tuple
    dtype: object


class ExportedModel:
    """A SavedModel without Keras layers (Keras 3's ``model.export``): a serving function and its variables.

    It answers what a study asks of a model (``name``, ``inputs``, ``outputs``,
    ``count_params``, calling it on a batch) so post-training recipes run on it;
    it has no layers, so training-time recipes do not.
    """

    def __init__(self, path: str):
        self.path = path
        self.name = model_name(path)
        self._loaded = tf.saved_model.load(path)
        signatures = self._loaded.signatures
        if "serving_default" not in signatures:
            raise ModelError(
                f"SavedModel {path!r} has no serving_default signature (it has {sorted(signatures) or 'none'}); "
                + "export it with model.export(path) or give the .keras file."
            )
        self._fn = signatures["serving_default"]
        args, kwargs = self._fn.structured_input_signature
        specs = list(args) + list(kwargs.values())
        self._input_name = next(iter(kwargs), None)
        outputs = self._fn.structured_outputs
        out_specs = list(outputs.values()) if isinstance(outputs, dict) else list(tf.nest.flatten(outputs))
        self._output_key = next(iter(outputs)) if isinstance(outputs, dict) else None
        self.inputs = [_Spec(tuple(s.shape), s.dtype) for s in specs]
        self.outputs = [_Spec(tuple(s.shape), s.dtype) for s in out_specs]

    def count_params(self) -> int:
        return int(sum(np.prod(v.shape) for v in self._loaded.variables))

    def __call__(self, x, training: bool = False):
        with quiet_stderr(_GRAPPLER_NOTICES):  # grappler cannot re-import Keras 3's exported graph; harmless
            out = self._fn(**{self._input_name: x}) if self._input_name else self._fn(x)
        return out[self._output_key] if self._output_key is not None else out


class TFLiteModel:
    """An fp32 .tflite file from any converter: its bytes, its input and output specs, running it.

    It answers what a study asks of a model (``name``, ``inputs``, ``outputs``,
    ``count_params``, calling it on a batch): the fp32 row is the file itself
    and recipes that quantize a .tflite file start from it; it has no Keras
    model, so the converter's other modes and training-time recipes do not run.
    ``inputs`` and ``outputs`` have the file's shape signature, batch axis
    included (None where the file leaves an axis free, as a Keras model has it).

    Raises:
      ModelError: the file cannot be read as a .tflite, or it is not float
        (integer-quantized input or output, quantized tensors, float16 weights).
    """

    def __init__(self, path: str):
        self.path = path
        self.name = model_name(path)
        try:
            with open(path, "rb") as f:
                self.content = f.read()
            if not self.content:
                raise ValueError("the file is empty")
            interpreter = load_interpreter(self.content)
        except (OSError, ValueError, RuntimeError) as e:
            reason = " ".join(str(e).split())[:300]
            raise ModelError(f"Cannot load the .tflite file {path!r}: {reason}; give an fp32 .tflite file.") from None
        self.inputs = [_tflite_spec(d) for d in interpreter.get_input_details()]
        self.outputs = [_tflite_spec(d) for d in interpreter.get_output_details()]
        _check_float(path, interpreter)
        self._params = _float_constants(self.content)

    def count_params(self) -> int:
        """Elements of the file's float constant tensors (its weights), each stored buffer counted once.

        Integer constants (shapes, axes, indices) are not parameters. The converter folds some weights
        (BatchNormalization into the convolution before it) and leaves out all-zero biases, so the count can
        be below the Keras model's ``count_params()``.
        """
        return self._params

    def __call__(self, x, training: bool = False):
        return tf.constant(run_tflite(self.content, np.asarray(x)))


def _tflite_spec(detail: dict) -> _Spec:
    signature = detail.get("shape_signature")
    dims = signature if signature is not None and len(signature) == len(detail["shape"]) else detail["shape"]
    return _Spec(tuple(None if d < 0 else int(d) for d in dims), tf.as_dtype(detail["dtype"]))


def _check_float(path: str, interpreter) -> None:
    """Refuses a quantized or float16 file: the study's fp32 row and its quantizing recipes need float."""
    need = f"--model needs an fp32 .tflite; {path!r}"
    hint = "give the float .tflite it was made from (the study quantizes it itself)."
    for kind, details in (("input", interpreter.get_input_details()), ("output", interpreter.get_output_details())):
        for d in details:
            if np.dtype(d["dtype"]).name in _QUANTIZED_IO:
                raise ModelError(f"{need} has {np.dtype(d['dtype']).name} {kind} {d['name']!r} (quantized); {hint}")
    for t in interpreter.get_tensor_details():
        dtype = np.dtype(t["dtype"])
        if dtype.kind in "iu" and len(t["quantization_parameters"]["scales"]):
            raise ModelError(f"{need} holds quantized {dtype.name} tensors (such as {t['name']!r}); {hint}")
        if dtype == np.float16:
            raise ModelError(f"{need} holds float16 weights (such as {t['name']!r}); {hint}")


def _float_constants(content: bytes) -> int:
    """Elements of the float tensors that have data in the file (constants), over all subgraphs."""
    from ai_edge_litert import schema_py_generated as schema

    floats = {schema.TensorType.FLOAT32, schema.TensorType.FLOAT16, schema.TensorType.FLOAT64,
              schema.TensorType.BFLOAT16}  # fmt: skip
    model = schema.Model.GetRootAsModel(content, 0)
    sizes = {}
    for g in range(model.SubgraphsLength()):
        graph = model.Subgraphs(g)
        for i in range(graph.TensorsLength()):
            tensor = graph.Tensors(i)
            if tensor.Type() not in floats or not 0 < tensor.Buffer() < model.BuffersLength():
                continue
            buffer = model.Buffers(tensor.Buffer())
            if buffer.DataLength() or buffer.Size():  # inline data, or (files over 2 GB) data after the flatbuffer
                sizes[tensor.Buffer()] = int(np.prod([tensor.Shape(d) for d in range(tensor.ShapeLength())]))
    return sum(sizes.values())


def flavour(model) -> str:
    """'tf_keras', 'keras3', 'saved_model' (an ExportedModel) or 'tflite' (a TFLiteModel)."""
    if isinstance(model, ExportedModel):
        return "saved_model"
    if isinstance(model, TFLiteModel):
        return "tflite"
    return "keras3" if is_keras3(model) else "tf_keras"


def load_model(path: str, safe_mode: bool = True):
    """Loads the user's model from a .keras or .h5 file or a SavedModel folder, whichever Keras wrote it, or a .tflite.

    Args:
      path: the model file or folder.
      safe_mode: refuse to deserialize arbitrary code (Lambda layers); keep it on
        unless the file comes from someone you trust.

    Returns:
      A tf_keras model, a Keras 3 model, an ExportedModel or a TFLiteModel (see the module docstring).

    Raises:
      ModelError: the path is missing, is not a model, or cannot be read; or a .tflite that is not fp32.
    """
    if not os.path.exists(path):
        raise ModelError(
            f"Model path {path!r} does not exist; give a .keras, .h5 or SavedModel folder, an fp32 .tflite, "
            + "or the name of a built-in model of the task."
        )
    if path.endswith(".tflite"):
        return TFLiteModel(path)
    is_saved_model = os.path.isdir(path) and os.path.exists(os.path.join(path, "saved_model.pb"))
    if not (is_saved_model or path.endswith(KERAS_SUFFIXES)):
        raise ModelError(
            f"Cannot tell the format of {path!r}; give a .keras or .h5 file, a SavedModel folder or a .tflite file."
        )
    if safe_mode and _holds_code(path):
        raise ModelError(
            f"{path!r} holds a Lambda layer, whose Python code would run while loading; refused (safe mode). "
            + "If you trust the file, pass --allow_unsafe_deserialization."
        )
    try:
        if is_saved_model and not os.path.exists(os.path.join(path, "keras_metadata.pb")):
            return ExportedModel(path)
        if not is_saved_model and saved_by_keras3(path):
            import keras as keras3

            model = keras3.saving.load_model(path, compile=False, safe_mode=safe_mode)
        else:
            model = keras.models.load_model(path, compile=False, safe_mode=safe_mode)
    except ModelError:
        raise
    except Exception as e:  # Keras raises many types for a bad file; report one line.
        missing = re.search(r"Could not locate class '([^']+)'", str(e))
        if missing:
            raise ModelError(
                f"Cannot load the Keras model {path!r}: it uses the custom class {missing.group(1)!r}, which is not "
                + "registered here; name the module that defines it (keras.saving.register_keras_serializable) "
                + "in --plugins."
            ) from None
        reason = " ".join(str(e).split())[:300]
        raise ModelError(f"Cannot load the Keras model {path!r}: {type(e).__name__}: {reason}") from None
    if not hasattr(model, "layers") or not callable(getattr(model, "count_params", None)):
        raise ModelError(f"{path!r} holds a {type(model).__name__}, not a Keras model.")
    return model


def saved_by_keras3(path: str) -> bool:
    """Whether a .keras or .h5 file was written by Keras 3 (its recorded keras_version is 3.x)."""
    try:
        if path.endswith(".keras"):
            with zipfile.ZipFile(path) as z:
                version = json.loads(z.read("metadata.json")).get("keras_version", "")
        else:
            import h5py

            with h5py.File(path, "r") as f:
                version = f.attrs.get("keras_version", "")
        version = version.decode() if isinstance(version, bytes) else str(version)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return False  # unreadable: the tf_keras loader reports it
    return version.split(".")[0] == "3"


def _holds_code(path: str) -> bool:
    """Whether a saved model declares a Lambda layer (Python code stored in the file).

    Keras' safe_mode refuses these in .keras files, but the legacy .h5 and
    SavedModel loaders would run them, so every format is checked here first,
    from the stored configuration, without deserializing anything.
    """
    marker = re.compile(rb'"class_name":\s*"Lambda"')
    try:
        if os.path.isdir(path):
            metadata = os.path.join(path, "keras_metadata.pb")
            if os.path.exists(metadata):
                with open(metadata, "rb") as f:
                    return bool(marker.search(f.read()))
            return False
        if path.endswith(".keras"):
            with zipfile.ZipFile(path) as z:
                return bool(marker.search(z.read("config.json")))
        import h5py

        with h5py.File(path, "r") as f:
            config = f.attrs.get("model_config")
        if config is None:
            return False
        return bool(marker.search(config if isinstance(config, bytes) else str(config).encode()))
    except (OSError, KeyError, zipfile.BadZipFile):
        return False  # unreadable: the loader reports it


def model_name(path_or_name: str) -> str:
    """A file-system-safe name for the model's output folder."""
    base = os.path.basename(os.path.normpath(path_or_name))
    for suffix in (*KERAS_SUFFIXES, ".tflite"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    safe = re.sub(r"[^\w.-]+", "_", base).strip("._")
    return safe or "model"
