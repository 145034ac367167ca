r"""The latency zoo: Keras application models (random weights) x post-training recipes, every latency explained.

    python -m experiments.latency_zoo                                   # 5 models at 224 px, 4 recipes
    python -m experiments.latency_zoo --resolution=96 --num_runs=10     # a quick look
    python -m experiments.latency_zoo --zoo_models=MobileNetV2,ResNet50 --threads=1,2

Builds each tf_keras.applications model with weights=None (nothing is downloaded), converts it in each
recipe (int8 calibrated on random-normal inputs: there is no data), times it in a child process and
writes OUTPUT_DIR/zoo.json (config, environment with the float32 matmul peak and CPU features, rows),
zoo.csv, zoo.md and OUTPUT_DIR/<model>/<recipe>.tflite, and prints the table. There is no accuracy column:
random weights and no data make it meaningless. A failed conversion or measurement is a row with an error;
the exit status is then 1. The default run takes about 10 minutes on 2 cores (conversions most of it).
"""

import sys
import time

from absl import app, flags, logging

# tfcompress.zoo.KNOWN_MODELS and the Quantization values, spelled out so that a bad flag is refused before
# TensorFlow loads (a test checks they match).
KNOWN_MODELS = [
    "MobileNet", "MobileNetV2", "MobileNetV3Small", "MobileNetV3Large", "EfficientNetB0", "EfficientNetB1",
    "EfficientNetV2B0", "ResNet50", "ResNet50V2", "ResNet101", "DenseNet121", "NASNetMobile", "InceptionV3",
    "Xception", "VGG16", "ConvNeXtTiny", "RegNetX002", "RegNetY002",
]  # fmt: skip
RECIPES = ["fp32", "dynamic_range", "float16", "int8", "int16x8"]

_ZOO_MODELS = flags.DEFINE_list(
    "zoo_models",
    ["MobileNetV2", "MobileNetV3Small", "MobileNetV3Large", "EfficientNetB0", "ResNet50"],
    "tf_keras.applications models to build with random weights (comma list): " + ", ".join(KNOWN_MODELS) + ".",
)
_RESOLUTION = flags.DEFINE_integer(
    "resolution", 224, "Input height and width in pixels (InceptionV3 needs 75, Xception 71).", lower_bound=32
)
_RECIPES = flags.DEFINE_list(
    "recipes", ["fp32", "dynamic_range", "float16", "int8"], "Post-training modes (comma list): " + ", ".join(RECIPES)
)
_THREADS = flags.DEFINE_list("threads", ["1"], "Interpreter thread counts to time (comma list).")
_NUM_RUNS = flags.DEFINE_integer("num_runs", 30, "Timed invoke() runs per measurement.", lower_bound=1)
_WARMUP_RUNS = flags.DEFINE_integer("warmup_runs", 5, "Untimed runs before timing.", lower_bound=0)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "runs/zoo", "Where every output is written.")
_CALIBRATION_SAMPLES = flags.DEFINE_integer(
    "calibration_samples", 8, "Random-normal images that calibrate int8 (there is no data).", lower_bound=1
)
_SEED = flags.DEFINE_integer("seed", 0, "Seeds the random weights, calibration inputs and latency inputs.")
_PEAK_SECONDS = flags.DEFINE_float(
    "peak_seconds", 1.0, "Seconds of the float32 matmul peak microbenchmark per thread count.", lower_bound=0.01
)


def _threads_valid(values):
    return len(values) > 0 and all(v.strip().isdigit() and int(v) >= 1 for v in values)


def _first_unknown(values, choices):
    return next((v for v in values if v.strip() not in choices), None)


flags.register_validator("threads", _threads_valid, message="--threads must be a comma list of positive integers.")
for _name, _choices in (("zoo_models", KNOWN_MODELS), ("recipes", RECIPES)):
    flags.register_validator(
        _name,
        lambda values, choices=_choices: bool(values) and _first_unknown(values, choices) is None,
        message=f"--{_name} must be a comma list of: {', '.join(_choices)}.",
    )


def main(argv):
    if len(argv) > 1:
        print(f"error: unexpected arguments {argv[1:]}; flags are written --name=value.", file=sys.stderr)
        return 2
    from tfcompress.study import zoo  # after flag parsing, so --help does not wait for TensorFlow
    from tfcompress.study.cache import prepare_output_dir
    from tfcompress.study.config import StudyError

    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # TensorFlow logs every conversion at INFO
    try:
        config = zoo.ZooConfig(
            zoo_models=tuple(m.strip() for m in _ZOO_MODELS.value),
            resolution=_RESOLUTION.value,
            recipes=tuple(r.strip() for r in _RECIPES.value),
            threads=tuple(int(t) for t in _THREADS.value),
            num_runs=_NUM_RUNS.value,
            warmup_runs=_WARMUP_RUNS.value,
            output_dir=_OUTPUT_DIR.value,
            calibration_samples=_CALIBRATION_SAMPLES.value,
            seed=_SEED.value,
            peak_seconds=_PEAK_SECONDS.value,
        )
        prepare_output_dir(config.output_dir)
    except (ValueError, StudyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    def say(line):
        print(line, flush=True)

    start = time.perf_counter()
    say("measuring the float32 matmul peak and reading the CPU's features")
    env = zoo.environment(config.threads, config.peak_seconds)
    rows = zoo.run_zoo(config, progress=say, env=env)
    wall_s = time.perf_counter() - start
    paths = zoo.write_zoo(rows, config, env, wall_s)
    print()
    print(zoo.zoo_table(rows, "github"))
    for line in zoo.int8_size_check(rows):
        print(line)
    print(f"\n{env['cpu_features']['note']}")
    print(f"Wall time {wall_s:.0f} s. Results: {paths['json']}, {paths['csv']}, {paths['md']}")
    return 1 if any(r["error"] for r in rows) else 0


if __name__ == "__main__":
    app.run(main)
