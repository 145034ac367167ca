"""What decides a study: StudyConfig, with its measurement and run options.

A study's own settings are few (task, model, data, recipes, epochs, seed);
each recipe's parameters live in its Params dataclass and each task's options
in its Options dataclass, and the config holds only the overrides, by name
(``recipe_defaults``: recipe -> {parameter: value}; ``task_options``: task ->
{option: value}). ``from_flat`` maps the script's flat flag names onto this
shape, so a flag a recipe declares reaches every recipe that has it.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from collections.abc import Mapping
from typing import Any

from tfcompress import data as data_lib
from tfcompress import recipes as recipes_lib
from tfcompress import tasks
from tfcompress._process import usable_cpus
from tfcompress.fields import spread
from tfcompress.measure.latency import RUNTIMES
from tfcompress.recipes import pipeline as pipeline_lib
from tfcompress.tasks.base import TaskSetup


class StudyError(ValueError):
    """A study that cannot start: bad configuration, model or data."""


@dataclasses.dataclass(frozen=True)
class MeasureOptions:
    """How every row is measured (these decide the rows' numbers, so the resume key includes them).

    Attributes:
      threads: thread counts to time.
      runtime: the LiteRT runtimes to time each file in: "interpreter" (the Interpreter, which also
        computes the task metrics) and/or "compiled_model" (the CompiledModel API litert-benchmark uses).
      num_runs: at least this many timed runs per round.
      warmup_runs: untimed runs before timing, in each round.
      rounds: rounds per latency, each a fresh process, interleaved with the other rows' rounds.
      min_time_s: at least this many seconds of timed runs per round.
      metric_runtime: the runtime the task metric is computed in: "interpreter" (the default) or
        "compiled_model".
      calibration_samples: training examples used to calibrate int8 and int16x8.
      latency_timeout_s: a latency child running longer than this is killed (not in the resume key).
      sparse_tflite: also export training-time results with sparse weight
        storage (the converter's EXPERIMENTAL_SPARSITY) and report that size.
    """

    threads: tuple[int, ...] = (1,)
    runtime: tuple[str, ...] = ("interpreter",)
    num_runs: int = 100
    warmup_runs: int = 10
    rounds: int = 8
    min_time_s: float = 0.5
    metric_runtime: str = "interpreter"
    calibration_samples: int = 200
    latency_timeout_s: float = 600.0
    sparse_tflite: bool = False

    def __post_init__(self):
        object.__setattr__(self, "threads", tuple(int(t) for t in self.threads))
        if not self.threads or min(self.threads) < 1:
            raise StudyError(f"threads must be positive integers, got {list(self.threads)}.")
        object.__setattr__(self, "runtime", tuple(dict.fromkeys(str(r) for r in self.runtime)))
        unknown = [r for r in self.runtime if r not in RUNTIMES]
        if not self.runtime or unknown:
            raise StudyError(
                f"runtime must be a list of {', '.join(RUNTIMES)}, got {list(self.runtime)}; e.g. "
                + "--runtime=interpreter,compiled_model."
            )
        if self.metric_runtime not in RUNTIMES:
            raise StudyError(f"metric_runtime must be one of {', '.join(RUNTIMES)}, got {self.metric_runtime!r}.")
        if self.min_time_s < 0:
            raise StudyError(f"min_time_s must be >= 0, got {self.min_time_s}.")
        for name, low in [("num_runs", 1), ("warmup_runs", 0), ("rounds", 1), ("calibration_samples", 1)]:
            if getattr(self, name) < low:
                raise StudyError(f"{name} must be >= {low}, got {getattr(self, name)}.")

    def key(self) -> dict[str, Any]:
        """What of these options decides a row's numbers (the time-out does not)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "latency_timeout_s"} | {
            "threads": list(self.threads),
            "runtime": list(self.runtime),
        }


EXECUTORS = ("local", "ray")
STRATEGIES = ("none", "mirrored", "multi_worker")


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How a study runs and where it writes; none of these change a row's result.

    Attributes:
      output_dir: where every file is written.
      cache_dir: where trained built-in models are kept; default OUTPUT_DIR/models.
      isolate: run each recipe in its own process (tfcompress.study.executor),
        so that a native crash or a time-out is a failed row, not a dead study.
      resume: keep the rows already finished in OUTPUT_DIR/results.json whose
        settings are unchanged, and run only the rest.
      fail_fast: stop at the first failed row.
      recipe_timeout_s: an isolated recipe running longer than this is killed.
      plugins: Python modules to import before the recipes are parsed, so that
        the recipes they register can be named (e.g. 'mypackage.recipes').
      finetune_stop_drop: stop a fine-tuning half-way through its epochs (a failed
        row, FinetuneStopped) when its Keras metric is this much worse than
        the baseline's (Metric.drop units); the advisor's pruned trials.
      jobs: isolated recipe processes run at once (building and scoring the
        .tflite files; the latency phase always runs alone); None: one per
        CPU core this process may use.
      executor: 'local' (this machine's processes) or 'ray'
        (tfcompress.study.ray_executor).
      ray_address: with executor='ray': empty starts an embedded local Ray;
        'auto' or 'HOST:PORT' joins a cluster.
      cpus_per_job: with executor='ray': the CPUs each job's task declares
        (and its TensorFlow threads).
      strategy: 'none', 'mirrored' or 'multi_worker': the tf.distribute
        strategy training-time recipes fine-tune under
        (tfcompress.study.distribute); part of those rows' keys.
      workers: with strategy='multi_worker': worker processes per job (the
        global batch is the task's batch x workers).
    """

    output_dir: str = os.path.join("runs", "latest")
    cache_dir: str | None = None
    isolate: bool = True
    resume: bool = False
    fail_fast: bool = False
    recipe_timeout_s: float = 3600.0
    plugins: tuple[str, ...] = ()
    finetune_stop_drop: float | None = None
    jobs: int | None = None
    executor: str = "local"
    ray_address: str = ""
    cpus_per_job: int = 1
    strategy: str = "none"
    workers: int = 2

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise StudyError(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}.")
        if self.workers < 1:
            raise StudyError(f"workers must be >= 1, got {self.workers}.")
        if self.strategy == "multi_worker" and not self.isolate:
            raise StudyError("strategy=multi_worker starts worker processes from each recipe's own process; "
                             + "drop --noisolate.")  # fmt: skip
        if self.jobs is not None and self.jobs < 1:
            raise StudyError(f"jobs must be >= 1, got {self.jobs}; leave it out for one per CPU core.")
        if self.executor not in EXECUTORS:
            raise StudyError(f"executor must be one of {', '.join(EXECUTORS)}, got {self.executor!r}.")
        if self.cpus_per_job < 1:
            raise StudyError(f"cpus_per_job must be >= 1, got {self.cpus_per_job}.")
        if self.executor == "ray" and not self.isolate:
            raise StudyError("executor=ray runs every recipe in its own process; drop --noisolate.")
        object.__setattr__(self, "plugins", tuple(self.plugins))
        import_plugins(self.plugins)

    def strategy_key(self) -> dict | None:
        """What of the strategy decides a training-time row (None for 'none': keys as before strategies)."""
        if self.strategy == "none":
            return None
        return {"strategy": self.strategy, "workers": self.workers if self.strategy == "multi_worker" else 1}

    @property
    def parallel_jobs(self) -> int:
        """``jobs``, or the number of CPU cores this process may use."""
        if self.jobs is not None:
            return self.jobs
        return usable_cpus()

    @property
    def models_dir(self) -> str:
        return self.cache_dir or os.path.join(self.output_dir, "models")


def import_plugins(modules) -> None:
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise StudyError(f"Cannot import plugin module {module!r} ({e}); check --plugins.") from None


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """Everything that decides a study's results.

    Attributes:
      task: the task family (tfcompress.tasks): classification, detection,
        generative, language, lora, or one a plugin registers.
      model: a built-in model name of the task (empty: the task's default) or
        a path to a .keras, .h5 or SavedModel, or an fp32 .tflite file.
      dataset: a built-in dataset name, used when ``data`` is not given.
      data: a path to an .npz file (x_train, y_train, x_test, y_test) or an image folder.
      recipes: recipe specs (names, aliases or pipelines such as
        'prune:0.9>int8'; see tfcompress.recipes); empty means the task's
        default recipes. fp32 always runs first, as the reference for ratios
        and agreement.
      recipe_defaults: recipe name -> {parameter: value}, this study's values
        of recipes' parameters (a spec's own parameters win over them).
      task_options: task name -> {option: value}, for the tasks' Options.
      epochs: training epochs of a built-in model (a user's model is never retrained).
      seed: seeds the data split, training, calibration draw and latency inputs.
      allow_unsafe_deserialization: load a user's model with Keras safe_mode
        off (runs code stored in the file, such as Lambda layers); only for
        files you trust.
      measure: how rows are measured (MeasureOptions).
      run: how the study runs and where it writes (RunOptions).
    """

    task: str = "classification"
    model: str = ""
    dataset: str = "mnist5k"
    data: str | None = None
    recipes: tuple[str, ...] = ()
    recipe_defaults: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    task_options: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    epochs: int = 10
    seed: int = 0
    allow_unsafe_deserialization: bool = False
    measure: MeasureOptions = dataclasses.field(default_factory=MeasureOptions)
    run: RunOptions = dataclasses.field(default_factory=RunOptions)

    def __post_init__(self):
        if isinstance(self.measure, Mapping):
            object.__setattr__(self, "measure", MeasureOptions(**self.measure))
        if isinstance(self.run, Mapping):
            object.__setattr__(self, "run", RunOptions(**self.run))
        if self.task not in tasks.names():
            raise StudyError(f"Unknown task {self.task!r}; choose one of: {', '.join(tasks.names())}.")
        task = tasks.get(self.task)
        object.__setattr__(self, "recipe_defaults", {k: dict(v) for k, v in self.recipe_defaults.items()})
        object.__setattr__(self, "task_options", {k: dict(v) for k, v in self.task_options.items()})
        pipeline_lib.check_defaults(self.recipe_defaults)
        self.options()  # checks the task's options
        if not self.model:
            object.__setattr__(self, "model", task.default_model)
        if not self.recipes:
            object.__setattr__(self, "recipes", task.default_recipes)
        object.__setattr__(self, "recipes", tuple(p.name for p in self.pipelines()))
        if self.epochs < 1:
            raise StudyError(f"epochs must be >= 1, got {self.epochs}.")
        if self.data is None and self.dataset not in data_lib.BUILTIN_DATASETS:
            raise StudyError(
                f"Unknown dataset {self.dataset!r}; choose one of {', '.join(data_lib.BUILTIN_DATASETS)} "
                + "or give your own with data=PATH (.npz or image folder)."
            )

    @property
    def output_dir(self) -> str:
        return self.run.output_dir

    def options(self) -> Any:
        """The task's Options instance, with this study's overrides."""
        try:
            return tasks.get(self.task).make_options(self.task_options.get(self.task))
        except ValueError as e:
            raise StudyError(str(e)) from None

    def setup(self, cache=None) -> TaskSetup:
        """What the task's callables receive (tfcompress.tasks.base.TaskSetup)."""
        return TaskSetup(self.model, self.dataset, self.data, self.seed, self.epochs, self.options(), cache)

    def pipelines(self) -> list[pipeline_lib.Pipeline]:
        """The recipes to run, parsed, with fp32 first."""
        pipelines = pipeline_lib.parse_recipes(list(self.recipes), self.recipe_defaults)
        if all(p.name != recipes_lib.BASELINE for p in pipelines):
            pipelines.insert(0, pipeline_lib.parse(recipes_lib.BASELINE))
        return sorted(pipelines, key=lambda p: p.name != recipes_lib.BASELINE)

    def replace(self, **changes) -> StudyConfig:
        """A copy with top-level fields or, by their names, measurement and run options changed."""
        measure = {k: changes.pop(k) for k in list(changes) if k in _MEASURE_FIELDS}
        run = {k: changes.pop(k) for k in list(changes) if k in _RUN_FIELDS}
        return dataclasses.replace(
            self,
            measure=dataclasses.replace(self.measure, **measure),
            run=dataclasses.replace(self.run, **run),
            **changes,
        )

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["recipes"] = list(self.recipes)
        d["measure"] = dataclasses.asdict(self.measure) | {
            "threads": list(self.measure.threads),
            "runtime": list(self.measure.runtime),
        }
        d["run"] = dataclasses.asdict(self.run) | {"plugins": list(self.run.plugins)}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StudyConfig:
        # RunOptions, built first in __post_init__, imports the plugins before their recipes are parsed.
        return cls(**{k: v for k, v in d.items() if k in _TOP_FIELDS})


_TOP_FIELDS = {f.name for f in dataclasses.fields(StudyConfig)}
_MEASURE_FIELDS = {f.name for f in dataclasses.fields(MeasureOptions)}
_RUN_FIELDS = {f.name for f in dataclasses.fields(RunOptions)}


def flat_names() -> dict[str, str]:
    """Every name ``from_flat`` takes -> where it goes: 'config', 'measure', 'run', 'recipe' or 'task'."""
    names = dict.fromkeys(_TOP_FIELDS - {"measure", "run", "recipe_defaults", "task_options"}, "config")
    names |= dict.fromkeys(_MEASURE_FIELDS, "measure") | dict.fromkeys(_RUN_FIELDS, "run")
    names |= dict.fromkeys(recipes_lib.base.param_flags(), "recipe")
    names |= dict.fromkeys(tasks.base.option_flags(), "task")
    return names


def from_flat(**values: Any) -> StudyConfig:
    """A StudyConfig from flat names, as the script's flags give them.

    Names of StudyConfig fields, of MeasureOptions and RunOptions fields, of
    recipe parameter flags (``sparsity``, ``keep_fraction``, ``lora_rank``:
    the flag names the Params fields declare) and of task option flags
    (``text_file``, ``context``) are accepted. A recipe parameter reaches
    every recipe that has it, a task option every task that has it; a value
    equal to a field's default is left out of the overrides.

    Raises:
      StudyError: a name that is none of these, or a bad value.
    """
    import_plugins(values.get("plugins", ()))
    where = flat_names()
    unknown = sorted(set(values) - set(where))
    if unknown:
        raise StudyError(f"Unknown study setting {unknown[0]!r}; see tfcompress.study.config.flat_names().")
    parts: dict[str, dict[str, Any]] = {"config": {}, "measure": {}, "run": {}}
    for name, value in values.items():
        if where[name] in parts and (value is not None or name in ("data", "cache_dir")):
            parts[where[name]][name] = value
    return StudyConfig(
        **parts["config"],
        recipe_defaults=recipes_lib.spread({k: v for k, v in values.items() if where[k] == "recipe"}),
        task_options=spread(tasks.base.option_flags(), {k: v for k, v in values.items() if where[k] == "task"}),
        measure=MeasureOptions(**parts["measure"]),
        run=RunOptions(**parts["run"]),
    )


__all__ = ["MeasureOptions", "RunOptions", "StudyConfig", "StudyError", "flat_names", "from_flat"]
