r"""Per-layer sensitivity of a model: to quantization (each layer alone) and to pruning (each layer, each level).

    python -m experiments.sensitivity                                  # the default CNN on mnist5k
    python -m experiments.sensitivity --task=language --quantize_activations=8
    python -m experiments.sensitivity --model=my.keras --data=my.npz --quantize_weights=4 --quantize_activations=float

Takes experiments.study's task, model, data and quantize flags (--quantize_weights, --quantize_activations,
--quantize_granularity, --quantize_algorithm). Writes OUTPUT_DIR/sensitivity.json (reused when the model,
data and settings are the same), sensitivity.md and sensitivity.png, and prints the tables. The advisor's
skip=auto, skip_top=N and allocation=sensitivity use the same measurements.
"""

import sys

from absl import app, flags, logging

from tfcompress.study import cli

cli.import_plugins_from_argv(sys.argv)
cli.define_flags(module_name=__name__)
flags.DEFINE_boolean("prune_layers", True, "Also measure each layer's sensitivity to pruning (Keras models).")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from tfcompress.advise import sensitivity
    from tfcompress.recipes.quantizer import QuantizeParams

    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    if FLAGS.task == "all":
        print("error: choose one --task (classification, detection, language, ...).", file=sys.stderr)
        return 2
    try:
        config = cli.config_from_flags(FLAGS)
        params = QuantizeParams(
            weights=FLAGS.quantize_weights, activations=FLAGS.quantize_activations,
            granularity=FLAGS.quantize_granularity, algorithm=FLAGS.quantize_algorithm,
        )  # fmt: skip
        result = sensitivity.analyze(config, params, lambda line: print(line, flush=True), FLAGS.prune_layers)
    except ValueError as e:  # StudyError, DataError, ModelError and QuantizeParams' own checks
        print(f"error: {e}", file=sys.stderr)
        return 2
    print()
    print(sensitivity.tables(result))
    print(f"Tables and plot: {config.output_dir}/sensitivity.md, sensitivity.png")
    return 0


if __name__ == "__main__":
    app.run(main)
