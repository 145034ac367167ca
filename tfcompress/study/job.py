"""One recipe job of a study: the shared preparation, running a pipeline, measuring its .tflite, its key.

Every executor (tfcompress.study.executor) runs a job through
``run_recipe``; what differs is only where (this process or a child).
``prepare`` loads or trains the model and data once per process. A row's
``key`` digests what decides its result: the study's basis (task, model and
data by content, task options, seed, epochs, measurement options) and the
row's resolved pipeline; --resume keeps a row only while its key holds.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import re
import time
from collections.abc import Callable

import numpy as np

from tfcompress import data as data_lib
from tfcompress import loading, tasks
from tfcompress import models as models_lib
from tfcompress import recipes as recipes_lib
from tfcompress import twin as twin_lib
from tfcompress.fields import content_hash, resolved
from tfcompress.measure import macs as macs_lib
from tfcompress.measure.evaluate import accuracy, run_compiled_model, run_tflite
from tfcompress.recipes.pipeline import Pipeline
from tfcompress.recipes.training import StopIfWorse
from tfcompress.study.cache import ModelCache, inside
from tfcompress.study.config import StudyConfig, StudyError
from tfcompress.study.reference import Reference, fill_intervals
from tfcompress.study.results import Row, Status, fail_non_finite, write_atomic
from tfcompress.tasks.base import fingerprint

_FLAVOURS = {"tf_keras": "tf_keras", "keras3": "Keras 3", "saved_model": "a SavedModel exported without layers",
             "tflite": "an fp32 .tflite file"}  # fmt: skip


@dataclasses.dataclass
class Prepared:
    """What every recipe of a study shares: the baseline model, its name, the data, the context, the basis."""

    model: recipes_lib.Baseline
    name: str
    dataset: data_lib.Dataset
    context: recipes_lib.RecipeContext
    params: int
    basis: dict


def one_line(e: BaseException) -> str:
    """An exception as one line: 'ValueError: the message', a sentence repeated back to back said once.

    The converter repeats its message once per op (19 times "not yet supported for op: 'HARD_SWISH'").
    """
    sentences = re.split(r"(?<=\.) ", " ".join(str(e).split()))
    kept = [s for i, s in enumerate(sentences) if i == 0 or s != sentences[i - 1]]
    return f"{type(e).__name__}: {' '.join(kept)}"


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def model_digest(model) -> str:
    """A digest of a Keras model's architecture and weights, an exported SavedModel's files or a .tflite's bytes."""
    if isinstance(model, loading.ExportedModel):
        return content_hash(model.path)
    if isinstance(model, loading.TFLiteModel):
        return hashlib.sha256(model.content).hexdigest()
    digest = hashlib.sha256(model.to_json().encode())
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()


def dataset_digest(dataset: data_lib.Dataset) -> str:
    """A digest of a Dataset's arrays (for data given as an object)."""
    digest = hashlib.sha256(dataset.name.encode())
    for array in (dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test):
        digest.update(str(array.dtype).encode() + str(array.shape).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def load_model_and_data(config: StudyConfig, progress: Callable[[str], None], model=None, dataset=None):
    """Returns (keras model, its output-folder name, dataset, basis), checked against each other.

    ``model`` and ``dataset`` are objects the caller already holds (the
    Python API); otherwise they come from the config: a built-in model from
    the cache (trained if missing), or the user's file.
    """
    task = tasks.get(config.task)
    given_dataset = dataset is not None
    cache = ModelCache(config.run.models_dir)
    setup = config.setup(cache)
    basis = {"task": config.task, "options": resolved(setup.options), "seed": config.seed,
             "measure": config.measure.key()}  # fmt: skip
    if model is not None:
        name = getattr(model, "name", None) or "model"
        basis["model"] = {"object_sha256": model_digest(model)}
        dataset = dataset if dataset is not None else task.load_data(setup, model)
        progress(f"Model {name}: given by the caller.")
    elif config.model in task.builtin_models:
        dataset = dataset if dataset is not None else task.load_data(setup)
        model, cached = cache.builtin(config.task, setup, verbose=2, dataset=dataset)
        progress(f"Model {config.model}: {'loaded from the cache' if cached else 'trained'} on {dataset.name}.")
        name = config.model
        basis["model"] = {"builtin": name, "epochs": config.epochs}
    elif not task.user_models:
        raise StudyError(
            f"The {task.name} task studies its built-in model ({', '.join(task.builtin_models)}); "
            + f"--model={config.model!r} is not one of them."
        )
    else:
        if config.allow_unsafe_deserialization:
            progress(
                "WARNING: --allow_unsafe_deserialization is on: the model file may run code while it loads; "
                + "use it only for files you trust."
            )
        model = loading.load_model(config.model, safe_mode=not config.allow_unsafe_deserialization)
        name = loading.model_name(config.model)
        basis["model"] = {"sha256": content_hash(config.model)}
        dataset = dataset if dataset is not None else task.load_data(setup, model)
        progress(f"Model {name}: loaded from {config.model} ({_FLAVOURS[loading.flavour(model)]}).")
    # The data by content: the caller's arrays, or the user's file (or the built-in set's name) and options.
    basis["data"] = {"object_sha256": dataset_digest(dataset)} if given_dataset else fingerprint(setup)
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise StudyError(
            f"Model {name!r} has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
            + f"the {config.task} task needs exactly one of each."
        )
    classes = models_lib.num_classes(model) if task.labels_are_classes else None
    data_lib.check_fits(dataset, tuple(model.inputs[0].shape), classes)
    return model, name, dataset, basis


def prepare(
    config: StudyConfig, progress: Callable[[str], None], verbose: int, model=None, dataset=None, twin: bool = True
) -> Prepared:
    """Loads (or trains) the model and the data and draws the calibration set: once per process.

    ``twin``: build and check a Keras 3 model's tf_keras twin; False when no pipeline this process runs has a
    transform (the twin would go unused).
    """
    model, name, dataset, basis = load_model_and_data(config, progress, model, dataset)
    rng = np.random.default_rng(config.seed)
    samples = min(config.measure.calibration_samples, len(dataset.x_train))
    calibration = dataset.x_train[rng.choice(len(dataset.x_train), samples, replace=False)]
    task = tasks.get(config.task)
    context = recipes_lib.RecipeContext(
        calibration_data=calibration,
        dataset=dataset,
        seed=config.seed,
        sparse_tflite=config.measure.sparse_tflite,
        verbose=verbose,
        loss=task.loss() if task.loss else None,
        batch_size=task.batch_size * (config.run.workers if config.run.strategy == "multi_worker" else 1),
        scope=_strategy_scope(config.run.strategy),
        learning_rate_scale=float(config.run.workers) if config.run.strategy == "multi_worker" else 1.0,
    )
    baseline = trainable_form(model, name, calibration, progress, build_twin=twin)
    if config.run.finetune_stop_drop is not None and baseline.trainable is not None:
        stop = StopIfWorse(_keras_drop(task, dataset, baseline.trainable), config.run.finetune_stop_drop)
        context = dataclasses.replace(context, finetune_callbacks=(stop,))
    return Prepared(baseline, name, dataset, context, int(model.count_params()), basis)


def _strategy_scope(kind: str) -> Callable | None:
    """RecipeContext.scope for a strategy: its scope, the strategy created on first use (None for 'none')."""
    if kind == "none":
        return None

    def scope():
        from tfcompress.study import distribute

        return distribute.strategy(kind).scope()

    return scope


def _keras_drop(task, dataset, baseline) -> Callable:
    """drop(model): how much worse a fine-tuning model's metric is in Keras than the baseline's (Metric.drop)."""
    reference = []

    def drop(model) -> float:
        if not reference:
            reference.append(task.score(models_lib.predict_logits(baseline, dataset.x_test), dataset).metric)
        value = task.score(models_lib.predict_logits(model, dataset.x_test), dataset).metric
        return task.metric.drop(value, reference[0])

    return drop


def trainable_form(
    model, name: str, batch, progress: Callable[[str], None], build_twin: bool = True
) -> recipes_lib.Baseline:
    """The model with the tf_keras form its training-time recipes need, checked on ``batch`` for Keras 3.

    A tf_keras model is its own; a Keras 3 model gets a twin (tfcompress.twin) whose outputs must match
    within 1e-5 on the batch (unless ``build_twin`` is False); a SavedModel without layers or a .tflite has none.
    Without one, training-time rows are not_applicable with the reason and post-training rows still run.
    """
    kind = loading.flavour(model)
    if kind == "tf_keras":
        return recipes_lib.Baseline(model, model)
    if kind == "saved_model":
        why = (f"{name} is a SavedModel exported without its layers (Keras 3's model.export); give the "
               + ".keras or .h5 file the model was saved to.")  # fmt: skip
        progress(f"Model {name}: post-training recipes only; {why}")
        return recipes_lib.Baseline(model, None, why)
    if kind == "tflite":
        why = (f"{name} is a .tflite file, which has no Keras layers to train; give the Keras model it came from "
               + "(.keras, .h5 or SavedModel).")  # fmt: skip
        progress(f"Model {name}: a .tflite file: fp32 and quantize recipes run; converter exports and "
                 + "training-time recipes are not_applicable.")  # fmt: skip
        return recipes_lib.Baseline(model, None, why)
    if not build_twin:
        return recipes_lib.Baseline(model, None, "its tf_keras twin was not built in this process.")
    try:
        twin = twin_lib.build_twin(model)
        difference = twin_lib.check_twin(model, twin, batch)
    except twin_lib.TwinError as e:
        why = " ".join(str(e).split())
        progress(f"Model {name}: no tf_keras twin for training-time recipes ({why}); post-training recipes run.")
        return recipes_lib.Baseline(model, None, why)
    progress(f"Model {name}: its tf_keras twin for training-time recipes matches the Keras 3 model "
             + f"(largest output difference {difference:.1e} on {len(batch)} calibration inputs).")  # fmt: skip
    return recipes_lib.Baseline(model, twin)


def basis_key(basis: dict) -> str:
    """The digest of what every row of a study shares."""
    return _digest(basis)[:16]


def row_key(basis: dict, pipeline: Pipeline, strategy: dict | None = None) -> str:
    """The digest of what decides one row: the study's basis and the pipeline with its resolved parameters.

    ``strategy`` (RunOptions.strategy_key) counts only for a pipeline that fine-tunes.
    """
    stages = [{"recipe": s.recipe.name, "params": resolved(s.params)} for s in pipeline.stages]
    decided = {"basis": basis, "stages": stages}
    if strategy is not None and pipeline.transforms:
        decided["strategy"] = strategy
    return _digest(decided)[:16]


def model_outputs(config: StudyConfig, model: bytes | str, x: np.ndarray) -> np.ndarray:
    """A .tflite's outputs on ``x`` in the runtime the task metric is computed in (``--metric_runtime``)."""
    if config.measure.metric_runtime == "compiled_model":
        return run_compiled_model(model, x)
    return run_tflite(model, x)


def measure_row(row: Row, tflite: bytes, path: str, dataset, reference: Reference, config: StudyConfig) -> None:
    """Fills a row's sizes, MACs, metric (and its intervals) and agreement from its .tflite.

    Latency is not measured here: the study times every row afterwards, in interleaved rounds
    (tfcompress.study.timing).
    """
    row.size_bytes = len(tflite)
    row.gzip_bytes = len(gzip.compress(tflite, compresslevel=9))
    row.bytes_per_param = row.size_bytes / row.params if row.params else None
    row.macs = macs_lib.tflite_macs(tflite)
    row.compute_dtype = macs_lib.compute_dtype(tflite)
    task = tasks.get(config.task)
    score = task.score(model_outputs(config, tflite, dataset.x_test), dataset)
    row.metric_name = task.metric.name
    row.metric = score.metric
    row.extras.update(score.extras)
    if score.predictions is not None:
        row.extras["_top1"] = score.predictions  # dropped before saving; fp32's feeds agreement
        if reference.top1 is not None:
            row.agreement = accuracy(score.predictions, reference.top1)
    if score.examples is not None:
        row.extras["_examples"] = score.examples  # dropped before saving; fp32's feed the paired bootstrap
        fill_intervals(row, task, score.examples, reference.examples, config.seed)


def skeleton(config: StudyConfig, prepared: Prepared, pipeline: Pipeline) -> Row:
    """The row of a pipeline before it runs (what a failed child leaves)."""
    return Row(task=config.task, model=prepared.name, recipe=pipeline.name, params=prepared.params,
               key=row_key(prepared.basis, pipeline, config.run.strategy_key()))  # fmt: skip


def run_recipe(prepared: Prepared, pipeline: Pipeline, config: StudyConfig, reference: Reference, cache):
    """Runs one pipeline in this process; any failure becomes the row's status.

    Returns (row, its Reference: what later rows compare with if it is fp32's).
    """
    row = skeleton(config, prepared, pipeline)
    start = time.perf_counter()
    try:
        compressed = recipes_lib.run(pipeline, prepared.model, prepared.context, cache)
        row.convert_s = time.perf_counter() - start
        row.extras.update(compressed.extras)
        row.params = row.extras.pop("params", row.params)  # a transform that changes the model's size says so
        path = inside(config.output_dir, prepared.name, f"{pipeline.file_stem}.tflite")
        write_atomic(path, compressed.tflite)
        row.tflite_path = os.path.relpath(path, config.output_dir)
        measure_row(row, compressed.tflite, path, prepared.dataset, reference, config)
    except recipes_lib.NotApplicable as e:
        row.status = Status.NOT_APPLICABLE
        row.error = " ".join(str(e).split())
    except Exception as e:  # one recipe's failure is a row, not the end of the study
        row.status = Status.FAILED
        row.error = one_line(e)
    own = Reference(row.extras.pop("_top1", None), row.extras.pop("_examples", None))
    if pipeline.name == recipes_lib.BASELINE and own.top1 is not None:
        row.agreement = 1.0
    if pipeline.name == recipes_lib.BASELINE and own.examples is not None:
        row.metric_delta_ci, row.delta_within_noise = [0.0, 0.0], True  # its difference to itself
    return fail_non_finite(row), own  # a NaN or inf is a failed row, and the isolated child can write it


def save_inputs(folder: str, model=None, dataset: data_lib.Dataset | None = None) -> dict[str, str]:
    """Writes a model and a dataset given as objects into ``folder``, for child processes to load."""
    paths = {}
    if isinstance(model, (loading.ExportedModel, loading.TFLiteModel)):
        paths["model"] = model.path  # already a folder or file the child can load
    elif model is not None:
        paths["model"] = os.path.join(folder, "model.keras")
        model.save(paths["model"])  # with its own Keras (tf_keras or Keras 3); keeps the name, which names the row
    if dataset is not None:
        if dataset.meta is not None:
            raise StudyError(f"Dataset {dataset.name!r} carries task data (meta) a child process cannot receive; "
                             + "run with isolate=False.")  # fmt: skip
        paths["dataset"] = os.path.join(folder, "dataset.npz")
        arrays = {k: getattr(dataset, k) for k in ("x_train", "y_train", "x_test", "y_test")}
        np.savez(paths["dataset"], **arrays, num_classes=dataset.num_classes, name=dataset.name)
    return paths


def load_inputs(paths: dict[str, str]):
    """The (model, dataset) objects ``save_inputs`` wrote; None for each it did not."""
    model = dataset = None
    if "model" in paths:
        model = loading.load_model(paths["model"], safe_mode=True)
    if "dataset" in paths:
        with np.load(paths["dataset"], allow_pickle=False) as f:
            dataset = data_lib.Dataset(str(f["name"]), f["x_train"], f["y_train"], f["x_test"], f["y_test"],
                                       int(f["num_classes"]))  # fmt: skip
    return model, dataset
