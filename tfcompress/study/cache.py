"""What a study keeps on disk between recipes and runs: trained built-in models, transformed models, its folder.

- ``ModelCache``: trained built-in models in OUTPUT_DIR/models (or
  --cache_dir), named by everything that changes their weights, the user's
  data and corpus files by content; a re-run, or another task that starts
  from the same model, reuses them.
- ``TransformCache``: transformed models of one study, so that recipe
  processes share transform prefixes (``prune``, ``prune_int8`` and ``pqat``
  prune once).
- ``prepare_output_dir`` and ``inside``: the output folder, and the rule that
  nothing is written outside it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile

from tfcompress import tasks
from tfcompress._keras import keras
from tfcompress.recipes import Transformed
from tfcompress.study.config import StudyError
from tfcompress.study.results import write_atomic
from tfcompress.tasks.base import TaskSetup


class ModelCache:
    """Trained built-in models kept as .keras files in one folder (tfcompress.tasks.base.ModelCache)."""

    def __init__(self, folder: str):
        self.folder = folder

    def builtin(self, task: str, setup: TaskSetup, verbose: int = 0, dataset=None) -> tuple[keras.Model, bool]:
        """The task's trained built-in model ``setup.model``, from the cache or trained now.

        Returns:
          (model, loaded_from_cache).
        """
        spec = tasks.get(task)
        setup = dataclasses.replace(setup, cache=self)
        if spec.caches_own_model:  # its model is another cache entry (lora: the language model; generative: the VAE)
            return spec.build(setup, dataset if dataset is not None else spec.load_data(setup), verbose)
        dataset = dataset if dataset is not None else spec.load_data(setup)
        path = os.path.join(self.folder, spec.cache_name(setup.model, dataset, setup) + ".keras")
        if os.path.exists(path):
            return keras.models.load_model(path, compile=False, safe_mode=True), True
        model = spec.build(setup, dataset, verbose)
        os.makedirs(self.folder, exist_ok=True)
        tmp = path[: -len(".keras")] + ".tmp.keras"
        model.save(tmp)
        os.replace(tmp, path)
        return model, False


class TransformCache:
    """Transformed models saved as .keras files, so that recipe processes share transform prefixes.

    Models that cannot be saved as plain Keras (QAT's wrappers) are simply not cached.
    """

    def __init__(self, folder: str):
        self.folder = folder

    def _path(self, key) -> str:
        return os.path.join(self.folder, hashlib.sha256(repr(key).encode()).hexdigest()[:20])

    def __contains__(self, key) -> bool:
        return os.path.exists(self._path(key) + ".json")

    def __getitem__(self, key) -> Transformed:
        path = self._path(key)
        with open(path + ".json", encoding="utf-8") as f:
            extras = json.load(f)
        return Transformed(keras.models.load_model(path + ".keras", compile=False), extras)

    def __setitem__(self, key, value: Transformed) -> None:
        path = self._path(key)
        os.makedirs(self.folder, exist_ok=True)
        try:
            value.model.save(path + ".tmp.keras")
        except Exception:  # e.g. QAT-wrapped models need TFMOT's scope to save: skip caching them
            if os.path.exists(path + ".tmp.keras"):
                os.unlink(path + ".tmp.keras")
            return
        os.replace(path + ".tmp.keras", path + ".keras")
        write_atomic(path + ".json", json.dumps(value.extras))


def prepare_output_dir(path: str) -> str:
    """Creates the output directory, or raises StudyError saying why it cannot be used."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise StudyError(f"Output directory {path!r} is a file; choose a folder with --output_dir.")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise StudyError(
            f"Cannot create output directory {path!r} ({e.strerror}); choose another --output_dir."
        ) from None
    try:  # a real write: permission bits do not tell the whole story (root, read-only mounts, /proc)
        fd, probe = tempfile.mkstemp(prefix=".tmp-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError:
        raise StudyError(f"Output directory {path!r} is not writable; choose another --output_dir.") from None
    for stale in os.listdir(path):  # work folders of an earlier run that was killed
        if stale.startswith(".work-"):
            shutil.rmtree(os.path.join(path, stale), ignore_errors=True)
    return path


def inside(root: str, *parts: str) -> str:
    """Joins parts under root and refuses any result outside it (no path traversal)."""
    path = os.path.join(root, *parts)
    real_root = os.path.realpath(root)
    if os.path.commonpath([real_root, os.path.realpath(path)]) != real_root:
        raise StudyError(f"Refusing to write {path!r}: it lies outside the output directory {root!r}.")
    return path
