"""Fuzzes the model-loading and latency path with mutated .tflite files, and the .npz loader.

    python -m experiments.fuzz --tflite_cases=1000 --npz_cases=1000      # or: make fuzz

Every mutated .tflite (bit flips, truncation, overwritten spans, random
bytes) goes through ``measure_latency``, which loads, allocates and invokes it
in a child process; the parent must always survive and get either statistics
or a LatencyError. Every mutated .npz goes through ``load_npz``, which must
return a dataset or raise DataError, nothing else.
"""

from absl import app, flags, logging

_TFLITE_CASES = flags.DEFINE_integer("tflite_cases", 1000, "Mutated .tflite files to try.", lower_bound=0)
_NPZ_CASES = flags.DEFINE_integer("npz_cases", 1000, "Mutated .npz files to try.", lower_bound=0)
_SEED = flags.DEFINE_integer("seed", 0, "Seeds the mutations.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "runs/fuzz", "Where cases and the summary go.")


def main(argv):
    del argv
    import json

    from tfcompress import fuzzing

    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    summary = fuzzing.run(_TFLITE_CASES.value, _NPZ_CASES.value, _SEED.value, _OUTPUT_DIR.value)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    app.run(main)
