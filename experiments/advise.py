r"""Finds the recipe to ship under your limits: searches, measures on each .tflite, and says why.

    python -m experiments.advise --max_drop=1 --objective=gzip
    python -m experiments.advise --task=language --max_drop=1 --objective=size
    python -m experiments.advise --model=my.keras --data=my.npz --max_drop=0.5 --max_latency_ms=2 --objective=size

Takes every flag of experiments.study (task, model, data, measurement) and
the limits below. Writes OUTPUT_DIR/advice.json, advice.md, pareto.png,
pick.tflite and the trials' study in OUTPUT_DIR/study. The last line printed
is --recipes=SPEC, which reproduces the pick with experiments.study. Exit
status 1 when no trial meets the limits (the closest one is named).
"""

import sys

from absl import app, flags, logging

from tfcompress.study import cli

cli.import_plugins_from_argv(sys.argv)
cli.define_flags(module_name=__name__)
flags.DEFINE_float(
    "max_drop",
    None,
    "The most the metric may get worse than fp32's on the .tflite: points for "
    + "fractions (accuracy, mAP), percent of fp32's value otherwise (bits per char, PSNR).",
)
flags.DEFINE_float("max_size_kb", None, "The .tflite file's size limit in KB.", lower_bound=0.0)
flags.DEFINE_float("max_gzip_kb", None, "The gzipped .tflite's size limit in KB.", lower_bound=0.0)
flags.DEFINE_float(
    "max_latency_ms", None, "The median latency limit in ms at the first --threads count.", lower_bound=0.0
)
flags.DEFINE_enum(
    "objective",
    "size",
    ["size", "gzip", "latency", "metric"],
    "What to minimize among the feasible " + "trials (metric: the smallest drop).",
)
flags.DEFINE_integer(
    "trials", 24, "Trials to run at most (fp32 and de-duplicated proposals not counted).", lower_bound=1
)
flags.DEFINE_float("time_budget_s", None, "Stop asking for trials after this much search time.", lower_bound=0.0)
flags.DEFINE_integer(
    "trial_rounds", 3, "Latency rounds per trial; the pick is re-measured with --rounds.", lower_bound=1
)
flags.DEFINE_integer("batch", 4, "Training-time trials asked and run together (one latency phase).", lower_bound=1)
FLAGS = flags.FLAGS


def main(argv):
    del argv
    import tfcompress as tfc
    from tfcompress import advise

    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    if FLAGS.task == "all":
        print(
            "error: the advisor works on one task; choose --task=classification, detection, language, ...",
            file=sys.stderr,
        )
        return 2
    try:
        config = cli.config_from_flags(FLAGS)
        limits = advise.Constraints(
            FLAGS.max_drop, FLAGS.max_size_kb, FLAGS.max_gzip_kb, FLAGS.max_latency_ms, FLAGS.objective
        )
        options = advise.SearchOptions(FLAGS.trials, FLAGS.time_budget_s, FLAGS.trial_rounds, FLAGS.batch, FLAGS.resume)
        result = advise.advise(config, limits, options, progress=lambda line: print(line, flush=True))
    except (advise.AdviseError, tfc.StudyError, tfc.RecipeError, tfc.DataError, tfc.ModelError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"\nInterrupted. The search is in {FLAGS.output_dir}/advice.journal; run the same command with "
            + "--resume to continue it.",
            file=sys.stderr,
        )
        return 130
    print(f"\nThe advice is in {config.output_dir}/advice.md (and advice.json, pareto.png).")
    if result["pick"] is None:
        near = result["closest"]
        detail = f"; the closest is trial {near['number']} ({near['spec']}): {near['misses_by']}" if near else ""
        print(f"no recipe meets {limits.describe()}{detail}.", file=sys.stderr)
        return 1
    r = result["pick"].get("remeasured") or {}
    if r and not r["meets_limits"]:
        print(f"WARNING: re-measured on its own, the pick no longer meets the limits: {r['misses']}.")
    print(f"Pick: {config.output_dir}/pick.tflite")
    print(result["reproduce"])
    return 0


if __name__ == "__main__":
    app.run(main)
