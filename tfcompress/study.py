"""A study: one model x many recipes -> .tflite files, measured side by side.

``run(StudyConfig(...))`` is what ``experiments/study.py`` calls; a notebook can
call it too, or use the pieces (``convert``, ``run_tflite``,
``measure_latency``) directly.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import importlib
import importlib.metadata
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable

import numpy as np

from tfcompress import (
    catalog,  # noqa: F401  (registers every recipe)
    graph,
    isolation,
    peak,
    tasks,
)
from tfcompress import data as data_lib
from tfcompress import macs as macs_lib
from tfcompress import models as models_lib
from tfcompress import recipes as recipes_lib
from tfcompress import report as report_lib
from tfcompress import results as results_lib
from tfcompress.benchmark import LatencyError, measure_latency
from tfcompress.evaluate import accuracy, as_input, run_tflite
from tfcompress.results import Results, Row, Status


class StudyError(ValueError):
    """A study that cannot start: bad configuration, model or data."""


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """Everything that decides a study's results. Field names equal the script's flags.

    Attributes:
      task: the task family (tfcompress.tasks): classification, language (a
        character-level model whose metric is validation bits per character,
        lower is better), and the others registered there.
      model: a built-in model name of the task (empty: the task's default) or
        a path to a .keras, .h5 or SavedModel.
      dataset: a built-in dataset name, used when ``data`` is not given.
      data: a path to an .npz file (x_train, y_train, x_test, y_test) or an image folder.
      recipes: recipe specs (names, aliases or pipelines such as
        'prune:0.9>int8'; see tfcompress.recipes); empty means every
        registered recipe. fp32 always runs first, as the reference for
        ratios and agreement.
      threads: interpreter thread counts to time.
      num_runs: timed invoke() runs per latency measurement.
      warmup_runs: untimed runs before timing.
      calibration_samples: training examples used to calibrate int8 and int16x8.
      epochs: training epochs of a built-in model (a user's model is never retrained).
      seed: seeds the data split, training, calibration draw and latency inputs.
      output_dir: where every file is written.
      latency_timeout_s: a latency child running longer than this is killed.
      sparsity, pruning_schedule, clusters, centroid_init, finetune_epochs,
        finetune_learning_rate: defaults of the training-time recipes'
        parameters (a recipe spec can override them, e.g. 'prune:0.9').
      keep_fraction, channel_criterion: defaults of channel_prune (and of
        distill's default student): the fraction of each conv's filters kept,
        ranked by 'l1' kernel norm or 'bn_gamma'.
      temperature, distill_alpha, student: distill's softening temperature,
        weight of the teacher's soft targets, and student model file ('' for
        the teacher narrowed to keep_fraction).
      sparse_tflite: also convert training-time results with the converter's
        EXPERIMENTAL_SPARSITY and report that file's size.
      cache_dir: where trained built-in models are kept; default OUTPUT_DIR/models.
      resume: keep the rows already finished (ok or not_applicable) in
        OUTPUT_DIR/results.json when it was made with the same configuration,
        and run only the rest.
      fail_fast: stop at the first failed row.
      allow_unsafe_deserialization: load a user's model with Keras safe_mode
        off (runs code stored in the file, such as Lambda layers); only for
        files you trust.
      isolate: run each recipe in its own process (tfcompress.isolation), so
        that a native crash or a time-out is a failed row, not a dead study.
      recipe_timeout_s: an isolated recipe running longer than this is killed.
      plugins: Python modules to import before the recipes are parsed, so that
        the recipes they register can be named (e.g. 'mypackage.recipes').
      text_file: the language task's UTF-8 corpus; default CPython's bundled
        documentation (pydoc_data.topics).
      context: the language model's context length in characters.
      adapt_text_file: the lora task's adaptation corpus (UTF-8); default the
        source code of a fixed list of Python standard-library modules.
      lora_rank: the rank of lora's adapters (the recipe's `rank`).
      rank_fraction: lowrank's kept rank as a fraction of full rank.
    """

    task: str = "classification"
    model: str = ""
    dataset: str = "mnist5k"
    data: str | None = None
    recipes: tuple[str, ...] = ()
    threads: tuple[int, ...] = (1,)
    num_runs: int = 100
    warmup_runs: int = 10
    calibration_samples: int = 200
    epochs: int = 10
    seed: int = 0
    output_dir: str = os.path.join("runs", "latest")
    latency_timeout_s: float = 600.0
    sparsity: float = 0.8
    pruning_schedule: str = "polynomial"
    clusters: int = 16
    centroid_init: str = "kmeans++"
    finetune_epochs: int = 3
    finetune_learning_rate: float = 5e-4
    sparse_tflite: bool = False
    cache_dir: str | None = None
    resume: bool = False
    fail_fast: bool = False
    isolate: bool = True
    recipe_timeout_s: float = 3600.0
    plugins: tuple[str, ...] = ()
    allow_unsafe_deserialization: bool = False
    text_file: str | None = None
    context: int = 64
    adapt_text_file: str | None = None
    lora_rank: int = 8
    rank_fraction: float = 0.25
    keep_fraction: float = 0.5
    channel_criterion: str = "l1"
    temperature: float = 4.0
    distill_alpha: float = 0.5
    student: str = ""

    # Fields that change how a study runs or where it writes, but not its rows. (The recipe list is not
    # hashed either: rows are matched by recipe, so a resumed study may add recipes.)
    _NOT_HASHED = (
        "output_dir", "cache_dir", "resume", "fail_fast", "latency_timeout_s", "isolate", "recipe_timeout_s", "recipes"
    )  # fmt: skip

    def config_hash(self) -> str:
        """A digest of every setting that decides the rows; --resume requires it to match."""
        d = {k: v for k, v in self.to_dict().items() if k not in self._NOT_HASHED}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def recipe_defaults(self) -> dict:
        """The study-wide values of recipe parameters."""
        keys = (
            "sparsity",
            "pruning_schedule",
            "clusters",
            "centroid_init",
            "finetune_epochs",
            "finetune_learning_rate",
            "keep_fraction",
            "channel_criterion",
            "temperature",
            "distill_alpha",
            "student",
        )
        # Recipe parameters whose flag names differ from the parameter's: --lora_rank sets lora's rank.
        return {k: getattr(self, k) for k in keys} | {"rank": self.lora_rank, "rank_fraction": self.rank_fraction}

    def pipelines(self) -> list[recipes_lib.Pipeline]:
        """The recipes to run, parsed, with fp32 first."""
        pipelines = recipes_lib.parse_recipes(list(self.recipes), self.recipe_defaults())
        if all(p.name != recipes_lib.BASELINE for p in pipelines):
            pipelines.insert(0, recipes_lib.parse(recipes_lib.BASELINE))
        return sorted(pipelines, key=lambda p: p.name != recipes_lib.BASELINE)

    def __post_init__(self):
        object.__setattr__(self, "plugins", tuple(self.plugins))
        for module in self.plugins:
            try:
                importlib.import_module(module)
            except ImportError as e:
                raise StudyError(f"Cannot import plugin module {module!r} ({e}); check --plugins.") from None
        if self.task not in tasks.names():
            raise StudyError(f"Unknown task {self.task!r}; choose one of: {', '.join(tasks.names())}.")
        task = tasks.get(self.task)
        if not self.model:
            object.__setattr__(self, "model", task.default_model)
        if not self.recipes:
            object.__setattr__(self, "recipes", task.default_recipes)
        if self.context < 2:
            raise StudyError(f"context must be >= 2, got {self.context}.")
        object.__setattr__(self, "recipes", tuple(p.name for p in self.pipelines()))
        object.__setattr__(self, "threads", tuple(int(t) for t in self.threads))
        if not self.threads or min(self.threads) < 1:
            raise StudyError(f"threads must be positive integers, got {list(self.threads)}.")
        for name, low in [("num_runs", 1), ("warmup_runs", 0), ("calibration_samples", 1), ("epochs", 1)]:
            if getattr(self, name) < low:
                raise StudyError(f"{name} must be >= {low}, got {getattr(self, name)}.")
        if self.data is None and self.dataset not in data_lib.BUILTIN_DATASETS:
            raise StudyError(
                f"Unknown dataset {self.dataset!r}; choose one of {', '.join(data_lib.BUILTIN_DATASETS)} "
                + "or give your own with data=PATH (.npz or image folder)."
            )

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["recipes"] = list(self.recipes)
        d["threads"] = list(self.threads)
        d["plugins"] = list(self.plugins)
        return d


def environment(peak_threads: tuple[int, ...] = (), peak_seconds: float = 0.5) -> dict:
    """Versions and machine facts recorded with every study.

    Args:
      peak_threads: thread counts at which to measure this machine's float32
        matrix-multiply peak (tfcompress.peak), the denominator of the
        report's roofline column; empty: not measured (nor the CPU features).
      peak_seconds: how long each peak measurement runs. A thread count and
        duration are measured once per process.
    """

    def version(pkg):
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return None

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    env = {
        "python": platform.python_version(),
        "tensorflow": version("tensorflow") or version("tensorflow-cpu"),
        "tf_keras": version("tf-keras"),
        "tensorflow_model_optimization": version("tensorflow-model-optimization"),
        "ai_edge_litert": version("ai-edge-litert"),
        "numpy": version("numpy"),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
    }
    if peak_threads:
        env["cpu_features"] = peak.cpu_features()
        env["peak"] = {str(t): _peak(t, peak_seconds) for t in sorted(set(peak_threads))}
    return env


@functools.cache
def _peak(threads: int, seconds: float) -> dict:
    """The matmul peak at a thread count, measured once per process."""
    try:
        return peak.measure_peak_gflops(threads, seconds)
    except peak.PeakError as e:
        return {"peak_gflops": None, "threads": threads, "error": str(e)}


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


def _inside(root: str, *parts: str) -> str:
    """Joins parts under root and refuses any result outside it (no path traversal)."""
    path = os.path.join(root, *parts)
    real_root = os.path.realpath(root)
    if os.path.commonpath([real_root, os.path.realpath(path)]) != real_root:
        raise StudyError(f"Refusing to write {path!r}: it lies outside the output directory {root!r}.")
    return path


def cache_dir(config: StudyConfig) -> str:
    """Where trained built-in models are kept."""
    return config.cache_dir or os.path.join(config.output_dir, "models")


def builtin_model(config: StudyConfig, dataset: data_lib.Dataset | None = None, verbose: int = 0):
    """The task's trained built-in model ``config.model``, from the cache or trained now.

    The cache file name carries everything that changes the weights (model,
    data, input shape, classes, epochs, seed), so a re-run with the same
    settings, or another task that starts from the same model, reuses it.

    Returns:
      (model, loaded_from_cache).
    """
    from tfcompress._keras import keras

    task = tasks.get(config.task)
    dataset = dataset if dataset is not None else task.load_data(config)
    if task.caches_own_model:  # its model is another cache entry (lora: the language model; generative: the VAE)
        return task.build(config, dataset, verbose)
    path = os.path.join(cache_dir(config), task.cache_name(config.model, dataset, config) + ".keras")
    if os.path.exists(path):
        return keras.models.load_model(path, compile=False, safe_mode=True), True
    model = task.build(config, dataset, verbose)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path[: -len(".keras")] + ".tmp.keras"
    model.save(tmp)
    os.replace(tmp, path)
    return model, False


def _load_model_and_data(config: StudyConfig, progress: Callable[[str], None]):
    """Returns (keras model, its output-folder name, dataset), checked against each other."""
    task = tasks.get(config.task)
    if config.model in task.builtin_models:
        dataset = task.load_data(config)
        model, cached = builtin_model(config, dataset, verbose=2)
        progress(f"Model {config.model}: {'loaded from the cache' if cached else 'trained'} on {dataset.name}.")
        name = config.model
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
        model = models_lib.load_model(config.model, safe_mode=not config.allow_unsafe_deserialization)
        name = models_lib.model_name(config.model)
        dataset = task.load_data(config, model)
        progress(f"Model {name}: loaded from {config.model}.")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise StudyError(
            f"Model {name!r} has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
            + f"the {config.task} task needs exactly one of each."
        )
    classes = models_lib.num_classes(model) if task.metric.name == "accuracy" else None
    data_lib.check_fits(dataset, tuple(model.inputs[0].shape), classes)
    return model, name, dataset


def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())}"


def _measure_row(row: Row, tflite: bytes, path: str, dataset, fp32_top1, config: StudyConfig) -> None:
    """Fills a row's sizes, metric, agreement and latency from its .tflite."""
    row.size_bytes = len(tflite)
    row.gzip_bytes = len(gzip.compress(tflite, compresslevel=9))
    row.bytes_per_param = row.size_bytes / row.params if row.params else None
    row.macs = macs_lib.tflite_macs(tflite)
    task = tasks.get(config.task)
    score = task.score(run_tflite(tflite, dataset.x_test), dataset)
    row.metric_name = task.metric.name
    row.metric = score.metric
    row.extras.update(score.extras)
    if score.predictions is not None:
        row.extras["_top1"] = score.predictions  # dropped before saving; fp32's feeds agreement
        if fp32_top1 is not None:
            row.agreement = accuracy(score.predictions, fp32_top1)
    # Time the model on a real test example, prepared as its input tensor takes it.
    fd, sample_path = tempfile.mkstemp(prefix=".tmp-input-", suffix=".npy", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, as_input(dataset.x_test[:1], tflite), allow_pickle=False)
        for threads in config.threads:
            try:
                row.latency.append(
                    measure_latency(
                        path,
                        threads=threads,
                        num_runs=config.num_runs,
                        warmup_runs=config.warmup_runs,
                        seed=config.seed,
                        timeout_s=config.latency_timeout_s,
                        input_path=sample_path,
                    )
                )
            except LatencyError as e:
                row.status = Status.FAILED
                row.error = f"latency at {threads} thread(s): {e}"
    finally:
        os.unlink(sample_path)


def _weight_columns(pipeline: recipes_lib.Pipeline, tflite: bytes) -> dict:
    """The sparsity and clustering columns of a training-time row, measured in the .tflite."""
    stats = graph.weight_stats(tflite)
    stage_names = {s.recipe.name for s in pipeline.stages}
    columns = {}
    if stage_names & {"prune", "prune_2of4", "prune_xnnpack", "cluster"}:
        columns = {"sparsity": stats["sparsity"], "layer_sparsity": stats["layer_sparsity"]}
    if "prune_2of4" in stage_names:
        columns["two_four"] = stats["two_four"]
        columns["two_four_exempt"] = stats["two_four_exempt"]
    if "cluster" in stage_names:
        columns["unique_weights"] = stats["unique_weights"]
    return columns


@dataclasses.dataclass
class _Prepared:
    """What every recipe of a study shares: the baseline model, its name, the data and the context."""

    model: object
    name: str
    dataset: data_lib.Dataset
    context: recipes_lib.RecipeContext
    params: int


def _prepare(config: StudyConfig, progress: Callable[[str], None], verbose: int) -> _Prepared:
    model, name, dataset = _load_model_and_data(config, progress)
    rng = np.random.default_rng(config.seed)
    calibration = dataset.x_train[
        rng.choice(len(dataset.x_train), min(config.calibration_samples, len(dataset.x_train)), replace=False)
    ]
    task = tasks.get(config.task)
    context = recipes_lib.RecipeContext(
        calibration_data=calibration,
        dataset=dataset,
        seed=config.seed,
        sparse_tflite=config.sparse_tflite,
        verbose=verbose,
        loss=task.loss() if task.loss else None,
        batch_size=task.batch_size,
    )
    return _Prepared(model, name, dataset, context, int(model.count_params()))


class _TransformCache:
    """Transformed models saved as .keras files, so that recipe processes share transform prefixes.

    Models that cannot be saved as plain Keras (QAT's wrappers) are simply not cached.
    """

    def __init__(self, folder: str):
        self.folder = folder

    def _path(self, key) -> str:
        return os.path.join(self.folder, hashlib.sha256(repr(key).encode()).hexdigest()[:20])

    def __contains__(self, key) -> bool:
        return os.path.exists(self._path(key) + ".json")

    def __getitem__(self, key) -> recipes_lib.Transformed:
        from tfcompress._keras import keras

        path = self._path(key)
        with open(path + ".json", encoding="utf-8") as f:
            extras = json.load(f)
        return recipes_lib.Transformed(keras.models.load_model(path + ".keras", compile=False), extras)

    def __setitem__(self, key, value: recipes_lib.Transformed) -> None:
        path = self._path(key)
        os.makedirs(self.folder, exist_ok=True)
        try:
            value.model.save(path + ".tmp.keras")
        except Exception:  # e.g. QAT-wrapped models need TFMOT's scope to save: skip caching them
            if os.path.exists(path + ".tmp.keras"):
                os.unlink(path + ".tmp.keras")
            return
        os.replace(path + ".tmp.keras", path + ".keras")
        results_lib.write_atomic(path + ".json", json.dumps(value.extras))


def _run_recipe(prepared: _Prepared, pipeline: recipes_lib.Pipeline, config: StudyConfig, fp32_top1, cache):
    """Runs one pipeline in this process; any failure becomes the row's status. Returns (row, top-1)."""
    row = Row(task=config.task, model=prepared.name, recipe=pipeline.name, params=prepared.params)
    start = time.perf_counter()
    try:
        compressed = recipes_lib.run(pipeline, prepared.model, prepared.context, cache)
        row.convert_s = time.perf_counter() - start
        row.extras.update(compressed.extras)
        row.params = row.extras.pop("params", row.params)  # a transform that changes the model's size says so
        path = _inside(config.output_dir, prepared.name, f"{pipeline.file_stem}.tflite")
        results_lib.write_atomic(path, compressed.tflite)
        row.tflite_path = os.path.relpath(path, config.output_dir)
        if pipeline.transforms:
            row.extras.update(_weight_columns(pipeline, compressed.tflite))
        _measure_row(row, compressed.tflite, path, prepared.dataset, fp32_top1, config)
    except recipes_lib.NotApplicable as e:
        row.status = Status.NOT_APPLICABLE
        row.error = " ".join(str(e).split())
    except Exception as e:  # one recipe's failure is a row, not the end of the study
        row.status = Status.FAILED
        row.error = _one_line(e)
    top = row.extras.pop("_top1", None)
    if pipeline.name == recipes_lib.BASELINE and top is not None:
        row.agreement = 1.0
    return row, top


def run_one(config: StudyConfig, recipe: str, fp32_top1=None) -> tuple[Row, np.ndarray | None]:
    """Runs a single recipe of a study in this process (what an isolated recipe process does).

    Returns the row and its top-1 predictions on the test split (None if it has none).
    """
    prepared = _prepare(config, lambda _: None, verbose=2)
    cache = _TransformCache(os.path.join(config.output_dir, ".transforms", config.config_hash()))
    return _run_recipe(prepared, recipes_lib.parse(recipe, config.recipe_defaults()), config, fp32_top1, cache)


def run(config: StudyConfig, progress: Callable[[str], None] | None = None) -> Results:
    """Runs every recipe of the study and writes results.json, results.csv, report.md and plots.

    results.json is rewritten (atomically) after each finished row. A recipe
    that fails becomes a failed row with its reason and the study goes on.
    With ``config.isolate`` (the default) each recipe runs in its own process,
    so native crashes and time-outs become failed rows too.

    Args:
      config: the study's configuration.
      progress: called with one line of text per step (the script prints them).

    Returns:
      The results, as also saved in OUTPUT_DIR/results.json.

    Raises:
      StudyError, data.DataError, models.ModelError: the study cannot start;
        nothing is written to the output directory in that case except a
        trained model's cache.
    """
    verbose = 2 if progress else 0  # Keras prints a line per fine-tuning epoch when the caller shows progress
    progress = progress or (lambda _: None)
    pipelines = config.pipelines()
    prepare_output_dir(config.output_dir)
    prepared = _prepare(config, progress, verbose)
    config_dict = config.to_dict() | {"config_hash": config.config_hash()}
    results = Results(config=config_dict, environment=environment(config.threads))
    results_path = os.path.join(config.output_dir, "results.json")
    finished = _finished_rows(config, results_path, progress) if config.resume else {}
    fp32_top1, fp32_top1_path = None, None
    transformed_cache: dict = {}  # shared transform prefixes: prune, prune_int8 and pqat prune once
    work_dir = tempfile.mkdtemp(prefix=".work-", dir=config.output_dir) if config.isolate else None
    try:
        for i, pipeline in enumerate(pipelines, 1):
            done = finished.get(pipeline.name)
            if done is not None:
                results.rows.append(done)
                if pipeline.name == recipes_lib.BASELINE:
                    outputs = run_tflite(os.path.join(config.output_dir, done.tflite_path), prepared.dataset.x_test)
                    fp32_top1 = tasks.get(config.task).score(outputs, prepared.dataset).predictions
                    if work_dir and fp32_top1 is not None:
                        fp32_top1_path = os.path.join(work_dir, "fp32-top1.npy")
                        np.save(fp32_top1_path, fp32_top1, allow_pickle=False)
                progress(_progress_line(i, len(pipelines), done) + " [kept from the earlier run]")
                continue
            if pipeline.transforms:
                progress(f"[{i}/{len(pipelines)}] {pipeline.name}: fine-tuning ...")
            if config.isolate:
                skeleton = Row(task=config.task, model=prepared.name, recipe=pipeline.name, params=prepared.params)
                row, top_path = isolation.run_isolated(
                    config.to_dict(), pipeline.name, skeleton, work_dir, fp32_top1_path, config.recipe_timeout_s
                )
                if pipeline.name == recipes_lib.BASELINE and top_path:
                    fp32_top1_path = top_path
            else:
                row, top = _run_recipe(prepared, pipeline, config, fp32_top1, transformed_cache)
                if pipeline.name == recipes_lib.BASELINE:
                    fp32_top1 = top
            results.rows.append(row)
            results_lib.save(results, results_path)
            progress(_progress_line(i, len(pipelines), row))
            if config.fail_fast and row.status is Status.FAILED:
                progress(f"Stopping at the first failure (--fail_fast): {row.recipe}.")
                break
    finally:
        if work_dir:
            shutil.rmtree(work_dir, ignore_errors=True)
    shutil.rmtree(os.path.join(config.output_dir, ".transforms"), ignore_errors=True)
    report_lib.write_all(results, config.output_dir)
    return results


def _finished_rows(config: StudyConfig, results_path: str, progress) -> dict[str, Row]:
    """The rows of an earlier run of the same configuration that need not run again."""
    if not os.path.exists(results_path):
        progress(f"Nothing to resume in {config.output_dir}; starting from the beginning.")
        return {}
    try:
        earlier = results_lib.load(results_path)
    except ValueError as e:
        raise StudyError(f"Cannot resume: {e} Remove it or choose another --output_dir.") from None
    if earlier.config.get("config_hash") != config.config_hash():
        raise StudyError(
            f"Cannot resume: {results_path} was made with another configuration; run without --resume to "
            + "start over, or use another --output_dir."
        )
    kept = {}
    for row in earlier.rows:
        has_file = row.tflite_path and os.path.isfile(os.path.join(config.output_dir, row.tflite_path))
        if row.status is Status.NOT_APPLICABLE or (row.ok and has_file):
            kept[row.recipe] = row
    progress(f"Resuming: {len(kept)} finished row(s) kept from {results_path}.")
    return kept


def _progress_line(i: int, n: int, row: Row) -> str:
    text = f"[{i}/{n}] {row.recipe}: {row.status.value}"
    if row.size_bytes is not None:
        text += f", {row.size_bytes / 1024:.1f} KB"
    if row.metric is not None:
        text += f", {row.metric_name} {row.metric:.4f}"
    if row.latency:
        text += ", " + ", ".join(f"{s.median_ms:.3f} ms @{s.threads}t" for s in row.latency)
    if row.error:
        text += f" ({row.error})"
    return text
