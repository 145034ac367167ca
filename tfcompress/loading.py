"""Loading the user's own model, as saved: Keras 3 or tf_keras, .keras, .h5 or a SavedModel folder.

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
from tfcompress.models import ModelError
from tfcompress.twin import is_keras3

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
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


def flavour(model) -> str:
    """'tf_keras', 'keras3' or 'saved_model' (an ExportedModel)."""
    if isinstance(model, ExportedModel):
        return "saved_model"
    return "keras3" if is_keras3(model) else "tf_keras"


def load_model(path: str, safe_mode: bool = True):
    """Loads the user's model from a .keras or .h5 file or a SavedModel folder, whichever Keras wrote it.

    Args:
      path: the model file or folder.
      safe_mode: refuse to deserialize arbitrary code (Lambda layers); keep it on
        unless the file comes from someone you trust.

    Returns:
      A tf_keras model, a Keras 3 model, or an ExportedModel (see the module docstring).

    Raises:
      ModelError: the path is missing, is not a model, or cannot be read.
    """
    if not os.path.exists(path):
        raise ModelError(
            f"Model path {path!r} does not exist; give a .keras, .h5 or SavedModel folder, "
            + "or the name of a built-in model of the task."
        )
    if path.endswith(".tflite"):
        raise ModelError(
            f"{path!r} is a .tflite file; --model needs the Keras model it came from "
            + "(.keras, .h5 or a SavedModel folder)."
        )
    is_saved_model = os.path.isdir(path) and os.path.exists(os.path.join(path, "saved_model.pb"))
    if not (is_saved_model or path.endswith(KERAS_SUFFIXES)):
        raise ModelError(f"Cannot tell the format of {path!r}; give a .keras or .h5 file or a SavedModel folder.")
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
    for suffix in KERAS_SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    safe = re.sub(r"[^\w.-]+", "_", base).strip("._")
    return safe or "model"
