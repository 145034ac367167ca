"""Runs the sections of BENCHMARKS.md (the default study, every task's study, a sparsity sweep, fuzzing,
MobileNetV2 latency vs litert-benchmark, real CPU speed-ups, the latency zoo, Keras 3 models, the LiteRT Quantizer
next to the converter), saves each as
benchmarks/<section>.json and renders BENCHMARKS.md from all of those files.

python -m experiments.bench                                 # or: make bench (every section)
python -m experiments.bench --sections=speedups --sections=zoo   # only these; the others' files are kept
python -m experiments.bench --render_only                   # no measuring: BENCHMARKS.md from the files

The sections are built by tfcompress.study.bench; this script only reads the flags.
"""

from absl import app, flags, logging

# The section names come from the library, so the flag's choices cannot drift from what it runs.
from tfcompress.study import bench

_OUTPUT = flags.DEFINE_string("output", "BENCHMARKS.md", "The Markdown file to render.")
_JSON_DIR = flags.DEFINE_string("json_dir", "benchmarks", "The folder of section documents (<section>.json).")
_RENDER_ONLY = flags.DEFINE_bool("render_only", False, "Only render --output from --json_dir; run no section.")
_WORK_DIR = flags.DEFINE_string("work_dir", "runs/bench", "Where studies and .tflite files go.")
_NUM_RUNS = flags.DEFINE_integer("num_runs", 200, "Timed runs per latency measurement.", lower_bound=1)
_WARMUP_RUNS = flags.DEFINE_integer("warmup_runs", 20, "Untimed runs first.", lower_bound=0)
_THREADS = flags.DEFINE_list("threads", ["1", "2"], "Thread counts for the MobileNetV2 comparison.")
_TOLERANCE = flags.DEFINE_float("tolerance", 0.05, "Allowed relative gap to litert-benchmark's median.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Interleaved rounds per file, tool and thread count (mobilenet).",
                               lower_bound=1)  # fmt: skip
_SECTIONS = flags.DEFINE_multi_enum(
    "sections",
    list(bench.SECTIONS),
    bench.SECTIONS,
    "Sections to run. The others keep their --json_dir files, each still saying which run it comes from.",
)


def main(argv):
    del argv
    if not flags.FLAGS["verbosity"].present:
        # TensorFlow raises absl's verbosity and then logs every conversion at INFO.
        logging.set_verbosity(logging.WARNING)
    if _RENDER_ONLY.value:
        print(f"Wrote {bench.render(_JSON_DIR.value, _OUTPUT.value)} from {_JSON_DIR.value}/*.json")
        return
    bench.run(
        sections=_SECTIONS.value,
        output=_OUTPUT.value,
        json_dir=_JSON_DIR.value,
        work_dir=_WORK_DIR.value,
        num_runs=_NUM_RUNS.value,
        warmup_runs=_WARMUP_RUNS.value,
        threads=_THREADS.value,  # converted to ints only if the mobilenet section runs, as before
        tolerance=_TOLERANCE.value,
        rounds=_ROUNDS.value,
    )


if __name__ == "__main__":
    app.run(main)
