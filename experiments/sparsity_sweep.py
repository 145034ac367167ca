"""Accuracy and gzipped size of pruning recipes at several target sparsities.

    python -m experiments.sparsity_sweep --sparsities=0.5,0.75,0.9,0.95 --recipes=prune,prune_int8,pqat

Each sparsity runs the ordinary study (same flags as experiments.study) into
OUTPUT_DIR/sparsity_<s>/; the sweep's table goes to stdout and sweep.md, its
plot to sweep.png, its points to sweep.json.
"""

import sys

from absl import app, flags, logging

_SPARSITIES = flags.DEFINE_list("sparsities", ["0.5", "0.75", "0.9", "0.95"], "Target sparsities (comma list).")
_RECIPES = flags.DEFINE_list("recipes", ["prune", "prune_int8", "pqat"], "Recipes swept (comma list).")
_MODEL = flags.DEFINE_string("model", "cnn", "A built-in model (cnn) or a path to a Keras model.")
_DATASET = flags.DEFINE_enum("dataset", "mnist5k", ["mnist5k", "digits"], "Built-in dataset.")
_DATA = flags.DEFINE_string("data", None, "Your own .npz or image folder (overrides --dataset).")
_EPOCHS = flags.DEFINE_integer("epochs", 10, "Training epochs of a built-in model.", lower_bound=1)
_FINETUNE_EPOCHS = flags.DEFINE_integer("finetune_epochs", 3, "Fine-tuning epochs per recipe.", lower_bound=1)
_NUM_RUNS = flags.DEFINE_integer("num_runs", 50, "At least this many timed runs per latency round.", lower_bound=1)
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Interleaved latency rounds per row (each a fresh process).", lower_bound=1)
_MIN_TIME_S = flags.DEFINE_float(
    "min_time_s", 0.5, "At least this many seconds of timed runs per round.", lower_bound=0.0
)
_SEED = flags.DEFINE_integer("seed", 0, "Seed.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "runs/sweep", "Where everything is written.")
_ISOLATE = flags.DEFINE_bool(
    "isolate", True, "Run each recipe in its own process, so a native crash or a time-out is a failed row."
)


def _floats(values):
    try:
        return all(0 <= float(v) < 1 for v in values) and len(values) > 0
    except ValueError:
        return False


flags.register_validator("sparsities", _floats, message="--sparsities must be numbers in [0, 1), e.g. 0.5,0.9.")


def main(argv):
    del argv
    import tfcompress as tfc
    from tfcompress.study import sweep

    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    try:
        base = tfc.from_flat(
            model=_MODEL.value,
            dataset=_DATASET.value,
            data=_DATA.value,
            recipes=tuple(_RECIPES.value),
            epochs=_EPOCHS.value,
            finetune_epochs=_FINETUNE_EPOCHS.value,
            num_runs=_NUM_RUNS.value,
            rounds=_ROUNDS.value,
            min_time_s=_MIN_TIME_S.value,
            seed=_SEED.value,
            output_dir=_OUTPUT_DIR.value,
            isolate=_ISOLATE.value,
        )
        points, _ = sweep.run(base, [float(s) for s in _SPARSITIES.value], progress=lambda s: print(s, flush=True))
    except (tfc.StudyError, tfc.RecipeError, tfc.DataError, tfc.ModelError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print()
    print(sweep.table(points))
    print(f"\nSweep table, plot and points are in {_OUTPUT_DIR.value}/ (sweep.md, sweep.png, sweep.json)")
    return 0


if __name__ == "__main__":
    app.run(main)
