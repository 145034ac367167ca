r"""Runs a compression study: one model through many recipes, measured side by side.

    python -m experiments.study                       # cnn on mnist5k, every recipe
    python -m experiments.study --model=my.keras --data=my.npz --recipes=fp32,int8 --threads=1,2

Writes OUTPUT_DIR/results.json, results.csv, report.md, size_vs_metric.png,
latency.png and OUTPUT_DIR/<model>/<recipe>.tflite, and prints the table.
"""

import sys

from absl import app, flags, logging

_TASK = flags.DEFINE_enum("task", "classification", ["classification"], "Task family.")
_MODEL = flags.DEFINE_string(
    "model", "cnn", "A built-in model (cnn) or a path to a .keras, .h5 or SavedModel folder (never retrained)."
)
_DATASET = flags.DEFINE_enum(
    "dataset", "mnist5k", ["mnist5k", "digits"], "Built-in dataset, used when --data is not given."
)
_DATA = flags.DEFINE_string(
    "data", None, "Your own data: an .npz with x_train, y_train, x_test, y_test, or a folder of class sub-folders."
)
_RECIPES = flags.DEFINE_list("recipes", [], "Recipes to run (comma list); default every registered recipe.")
_THREADS = flags.DEFINE_list("threads", ["1"], "Interpreter thread counts to time (comma list).")
_NUM_RUNS = flags.DEFINE_integer("num_runs", 100, "Timed invoke() runs per latency measurement.", lower_bound=1)
_WARMUP_RUNS = flags.DEFINE_integer("warmup_runs", 10, "Untimed runs before timing.", lower_bound=0)
_CALIBRATION_SAMPLES = flags.DEFINE_integer(
    "calibration_samples", 200, "Training examples that calibrate int8 and int16x8.", lower_bound=1
)
_EPOCHS = flags.DEFINE_integer("epochs", 10, "Training epochs of a built-in model.", lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Seeds the split, training, calibration and latency inputs.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "runs/latest", "Where every output is written.")


def _threads_valid(values):
    return all(v.strip().isdigit() and int(v) >= 1 for v in values) and len(values) > 0


flags.register_validator("threads", _threads_valid, message="--threads must be a comma list of positive integers.")


def main(argv):
    del argv
    import tfcompress as tfc  # after flag parsing, so --help does not wait for TensorFlow

    if not flags.FLAGS["verbosity"].present:
        # TensorFlow raises absl's verbosity and then logs every conversion at INFO.
        logging.set_verbosity(logging.WARNING)

    try:
        config = tfc.StudyConfig(
            task=_TASK.value,
            model=_MODEL.value,
            dataset=_DATASET.value,
            data=_DATA.value,
            recipes=tuple(_RECIPES.value),
            threads=tuple(int(t) for t in _THREADS.value),
            num_runs=_NUM_RUNS.value,
            warmup_runs=_WARMUP_RUNS.value,
            calibration_samples=_CALIBRATION_SAMPLES.value,
            epochs=_EPOCHS.value,
            seed=_SEED.value,
            output_dir=_OUTPUT_DIR.value,
        )
        results = tfc.run_study(config, progress=lambda line: print(line, flush=True))
    except (tfc.StudyError, tfc.RecipeError, tfc.DataError, tfc.ModelError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print()
    print(tfc.format_table(results, "github"))
    print(f"\nResults, report and plots are in {config.output_dir}/")
    return 0


if __name__ == "__main__":
    app.run(main)
