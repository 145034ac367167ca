r"""Runs a compression study: one model through many recipes, measured side by side.

    python -m experiments.study                       # cnn on mnist5k, every recipe
    python -m experiments.study --task=detection      # or generative, language, lora
    python -m experiments.study --task=all            # every task family, one combined report (overview.md)
    python -m experiments.study --model=my.keras --data=my.npz --recipes=fp32,int8 --threads=1,2

Writes OUTPUT_DIR/results.json, results.csv, report.md, size_vs_metric.png,
latency.png and OUTPUT_DIR/<model>/<recipe>.tflite, and prints the table.
Every recipe parameter and task option has a flag, declared by its Params or
Options dataclass (tfcompress.study.cli).
"""

import sys

from absl import app, flags, logging

from tfcompress.study import cli

cli.import_plugins_from_argv(sys.argv)  # a plugin recipe's parameters get flags too
cli.define_flags(module_name=__name__)  # listed by --help as this script's own
FLAGS = flags.FLAGS


def main(argv):
    del argv
    import tfcompress as tfc

    if not FLAGS["verbosity"].present:
        # TensorFlow raises absl's verbosity and then logs every conversion at INFO.
        logging.set_verbosity(logging.WARNING)
    run_all = FLAGS.task == "all"
    if run_all and (FLAGS.model or FLAGS.recipes or FLAGS.data or FLAGS.resume):
        print("error: --task=all runs every task with its own model, data and recipes; drop --model, --data, "
              + "--recipes and --resume, or choose one --task.", file=sys.stderr)  # fmt: skip
        return 2
    try:
        config = cli.config_from_flags(FLAGS, task="classification" if run_all else FLAGS.task)
        if run_all:
            return _run_all(config)
        results = tfc.run_study(config, progress=lambda line: print(line, flush=True))
    except (tfc.StudyError, tfc.RecipeError, tfc.DataError, tfc.ModelError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"\nInterrupted. Every finished row is in {FLAGS.output_dir}/results.json (and report.md, results.csv); "
            + "run the same command with --resume to continue where it stopped.",
            file=sys.stderr,
        )
        return 130
    from tfcompress.study import report

    print()
    print(tfc.format_table(results, "github"))
    print("\nLatency lab (what explains each latency; see report.md):")
    print(report.format_lab_table(results, "github"))
    print(f"\nResults, report and plots are in {config.output_dir}/")
    baseline = results.baseline()
    if baseline is None or not baseline.ok:
        print(f"error: the fp32 baseline failed: {baseline.error if baseline else 'no row'}", file=sys.stderr)
        return 1
    if config.run.fail_fast and any(r.status is tfc.Status.FAILED for r in results.rows):
        return 1
    return 0


def _run_all(config) -> int:
    """--task=all: every task's default study, then the summary; exit 1 if a task or its baseline failed."""
    from tabulate import tabulate

    from tfcompress.study import overview

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
