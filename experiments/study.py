r"""Runs a compression study: one model through many recipes, measured side by side.

    python -m experiments.study                       # cnn on mnist5k, every recipe
    python -m experiments.study --task=detection      # or generative, language, lora
    python -m experiments.study --task=all            # every task family, one combined report (overview.md)
    python -m experiments.study --model=my.keras --data=my.npz --recipes=fp32,int8 --threads=1,2

Writes OUTPUT_DIR/results.json, results.csv, report.md, size_vs_metric.png,
latency.png and OUTPUT_DIR/<model>/<recipe>.tflite, and prints the table.
"""

import sys

from absl import app, flags, logging

# Values of --epochs and --finetune_epochs per --preset (flags given explicitly win).
PRESETS = {"quick": {"epochs": 10, "finetune_epochs": 3}, "full": {"epochs": 20, "finetune_epochs": 10}}

# tfcompress.tasks.names(), spelled out so that --help does not wait for TensorFlow (a test checks they match).
TASKS = ["classification", "detection", "generative", "language", "lora"]
_TASK = flags.DEFINE_enum(
    "task",
    "classification",
    TASKS + ["all"],
    "Task family: classification (accuracy); detection (digits on canvases, COCO mAP@.5); generative (a VAE "
    + "decoder, PSNR); language (a character-level transformer, bits per char, lower is better); lora (that "
    + "transformer adapted to --adapt_text_file); all (each with its defaults, one combined report).",
)
_MODEL = flags.DEFINE_string(
    "model",
    "",
    "The task's built-in model (classification: cnn, resnet_small, mobilenet_v2; detector, vae_decoder, "
    + "transformer; default the task's own) or, for "
    + "classification and language, a path to a .keras, .h5 or SavedModel folder (never retrained).",
)
_TEXT_FILE = flags.DEFINE_string(
    "text_file", None, "--task=language: a UTF-8 corpus (default: CPython's bundled documentation text)."
)
_ADAPT_TEXT_FILE = flags.DEFINE_string(
    "adapt_text_file",
    None,
    "--task=lora: the UTF-8 corpus to adapt to (default: the source code of some Python standard-library modules).",
)
_LORA_RANK = flags.DEFINE_integer("lora_rank", 8, "Rank of the lora recipe's adapters.", lower_bound=1)
_RANK_FRACTION = flags.DEFINE_float(
    "rank_fraction", 0.25, "Kept rank of the lowrank recipe, as a fraction of full rank.", lower_bound=1e-6,
    upper_bound=1.0,
)  # fmt: skip
_KEEP_FRACTION = flags.DEFINE_float(
    "keep_fraction", 0.5, "Fraction of each conv's filters that channel_prune keeps (and distill's default student).",
    lower_bound=1e-6, upper_bound=1.0,
)  # fmt: skip
_CHANNEL_CRITERION = flags.DEFINE_enum(
    "channel_criterion", "l1", ["l1", "bn_gamma"], "How channel_prune ranks filters: kernel L1 norm or BN |gamma|."
)
_TEMPERATURE = flags.DEFINE_float("temperature", 4.0, "distill: softmax temperature of the soft targets.",
                                  lower_bound=1e-6)  # fmt: skip
_DISTILL_ALPHA = flags.DEFINE_float(
    "distill_alpha", 0.5, "distill: weight of the teacher's soft targets (1 - it: the labels).", lower_bound=0.0,
    upper_bound=1.0,
)  # fmt: skip
_STUDENT = flags.DEFINE_string(
    "student", "", "distill: a Keras model file to train as the student (default: the teacher narrowed to "
    + "--keep_fraction)."
)  # fmt: skip
_CONTEXT = flags.DEFINE_integer("context", 64, "--task=language: context length in characters.", lower_bound=2)
_DATASET = flags.DEFINE_enum(
    "dataset", "mnist5k", ["mnist5k", "digits"], "Built-in dataset, used when --data is not given."
)
_DATA = flags.DEFINE_string(
    "data", None, "Your own data: an .npz with x_train, y_train, x_test, y_test, or a folder of class sub-folders."
)
_RECIPES = flags.DEFINE_list(
    "recipes",
    [],
    "Recipes to run (comma list); default every registered recipe. A recipe may take parameters and chain into "
    + "a pipeline: 'prune:0.9', 'prune:sparsity=0.9:pruning_schedule=constant', 'prune:0.8>int8'.",
)
_THREADS = flags.DEFINE_list("threads", ["1"], "Interpreter thread counts to time (comma list).")
_NUM_RUNS = flags.DEFINE_integer("num_runs", 100, "Timed invoke() runs per latency measurement.", lower_bound=1)
_WARMUP_RUNS = flags.DEFINE_integer("warmup_runs", 10, "Untimed runs before timing.", lower_bound=0)
_CALIBRATION_SAMPLES = flags.DEFINE_integer(
    "calibration_samples", 200, "Training examples that calibrate int8 and int16x8.", lower_bound=1
)
_EPOCHS = flags.DEFINE_integer(
    "epochs", None, "Training epochs of a built-in model (default: the preset's).", lower_bound=1
)
_SEED = flags.DEFINE_integer("seed", 0, "Seeds the split, training, calibration and latency inputs.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "runs/latest", "Where every output is written.")
_SPARSITY = flags.DEFINE_float("sparsity", 0.8, "Target sparsity of prune recipes.", lower_bound=0.0, upper_bound=0.999)
_PRUNING_SCHEDULE = flags.DEFINE_enum(
    "pruning_schedule", "polynomial", ["polynomial", "constant"], "TFMOT pruning schedule of prune recipes."
)
_CLUSTERS = flags.DEFINE_integer("clusters", 16, "Distinct values per kernel for cluster recipes.", lower_bound=2)
_CENTROID_INIT = flags.DEFINE_enum(
    "centroid_init", "kmeans++", ["kmeans++", "linear", "density", "random"], "Centroid initialization of cluster."
)
_FINETUNE_EPOCHS = flags.DEFINE_integer(
    "finetune_epochs", None, "Fine-tuning epochs of training-time recipes (default: the preset's).", lower_bound=1
)
_FINETUNE_LEARNING_RATE = flags.DEFINE_float(
    "finetune_learning_rate", 5e-4, "Adam learning rate of training-time recipes.", lower_bound=1e-8
)
_SPARSE_TFLITE = flags.DEFINE_boolean(
    "sparse_tflite", False, "Also convert training-time results with EXPERIMENTAL_SPARSITY and report that size."
)
_RESUME = flags.DEFINE_boolean(
    "resume", False, "Keep the rows an interrupted run of the same configuration finished, and run the rest."
)
_FAIL_FAST = flags.DEFINE_boolean("fail_fast", False, "Stop at the first failed recipe (and exit 1).")
_ALLOW_UNSAFE = flags.DEFINE_boolean(
    "allow_unsafe_deserialization",
    False,
    "Load --model with Keras safe_mode off (Lambda layers run code from the file). Only for files you trust.",
)
_ISOLATE = flags.DEFINE_boolean(
    "isolate", True, "Run each recipe in its own process, so a native crash or a time-out is a failed row."
)
_RECIPE_TIMEOUT_S = flags.DEFINE_float(
    "recipe_timeout_s", 3600.0, "Kill an isolated recipe after this many seconds (a failed row).", lower_bound=1.0
)
_PLUGINS = flags.DEFINE_list("plugins", [], "Python modules to import first; the recipes they register can be used.")
_PRESET = flags.DEFINE_enum(
    "preset",
    "quick",
    list(PRESETS),
    "quick: the default study within minutes on 2 cores; full: longer training and fine-tuning. "
    + "Flags given explicitly win over the preset.",
)


def _threads_valid(values):
    return all(v.strip().isdigit() and int(v) >= 1 for v in values) and len(values) > 0


flags.register_validator("threads", _threads_valid, message="--threads must be a comma list of positive integers.")


def main(argv):
    del argv
    import tfcompress as tfc  # after flag parsing, so --help does not wait for TensorFlow

    if not flags.FLAGS["verbosity"].present:
        # TensorFlow raises absl's verbosity and then logs every conversion at INFO.
        logging.set_verbosity(logging.WARNING)

    preset = PRESETS[_PRESET.value]
    run_all = _TASK.value == "all"
    if run_all and (_MODEL.value or _RECIPES.value or _DATA.value or _RESUME.value):
        print("error: --task=all runs every task with its own model, data and recipes; drop --model, --data, "
              + "--recipes and --resume, or choose one --task.", file=sys.stderr)  # fmt: skip
        return 2
    try:
        config = tfc.StudyConfig(
            task="classification" if run_all else _TASK.value,
            model=_MODEL.value,
            dataset=_DATASET.value,
            data=_DATA.value,
            recipes=tuple(_RECIPES.value),
            threads=tuple(int(t) for t in _THREADS.value),
            num_runs=_NUM_RUNS.value,
            warmup_runs=_WARMUP_RUNS.value,
            calibration_samples=_CALIBRATION_SAMPLES.value,
            epochs=_EPOCHS.value or preset["epochs"],
            seed=_SEED.value,
            output_dir=_OUTPUT_DIR.value,
            sparsity=_SPARSITY.value,
            pruning_schedule=_PRUNING_SCHEDULE.value,
            clusters=_CLUSTERS.value,
            centroid_init=_CENTROID_INIT.value,
            finetune_epochs=_FINETUNE_EPOCHS.value or preset["finetune_epochs"],
            finetune_learning_rate=_FINETUNE_LEARNING_RATE.value,
            sparse_tflite=_SPARSE_TFLITE.value,
            resume=_RESUME.value,
            fail_fast=_FAIL_FAST.value,
            allow_unsafe_deserialization=_ALLOW_UNSAFE.value,
            isolate=_ISOLATE.value,
            recipe_timeout_s=_RECIPE_TIMEOUT_S.value,
            plugins=tuple(_PLUGINS.value),
            text_file=_TEXT_FILE.value,
            context=_CONTEXT.value,
            adapt_text_file=_ADAPT_TEXT_FILE.value,
            lora_rank=_LORA_RANK.value,
            rank_fraction=_RANK_FRACTION.value,
            keep_fraction=_KEEP_FRACTION.value,
            channel_criterion=_CHANNEL_CRITERION.value,
            temperature=_TEMPERATURE.value,
            distill_alpha=_DISTILL_ALPHA.value,
            student=_STUDENT.value,
        )
        if run_all:
            return _run_all(config)
        results = tfc.run_study(config, progress=lambda line: print(line, flush=True))
    except (tfc.StudyError, tfc.RecipeError, tfc.DataError, tfc.ModelError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"\nInterrupted. Every finished row is in {_OUTPUT_DIR.value}/results.json; run the same command "
            + "with --resume to continue where it stopped.",
            file=sys.stderr,
        )
        return 130
    from tfcompress import report

    print()
    print(tfc.format_table(results, "github"))
    print("\nLatency lab (what explains each latency; see report.md):")
    print(report.format_lab_table(results, "github"))
    print(f"\nResults, report and plots are in {config.output_dir}/")
    baseline = results.baseline()
    if baseline is None or not baseline.ok:
        print(f"error: the fp32 baseline failed: {baseline.error if baseline else 'no row'}", file=sys.stderr)
        return 1
    if config.fail_fast and any(r.status is tfc.Status.FAILED for r in results.rows):
        return 1
    return 0


def _run_all(config) -> int:
    """--task=all: every task's default study, then the summary; exit 1 if a task or its baseline failed."""
    from tabulate import tabulate

    from tfcompress import overview

    outcomes = overview.run_all(config, progress=lambda line: print(line, flush=True))
    headers, cells = overview.summary_table(outcomes)
    print()
    print(tabulate(cells, headers=headers, tablefmt="github", disable_numparse=True))
    print(f"\nThe combined report is {config.output_dir}/overview.md; each task's files are in "
          + f"{config.output_dir}/<task>/.")  # fmt: skip
    failed = [o.task for o in outcomes if o.results is None or not (o.results.baseline() and o.results.baseline().ok)]
    if failed:
        print(f"error: these tasks did not produce an fp32 baseline: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    app.run(main)
