"""Fuzzing the model-loading and latency path with mutated .tflite files, and the .npz loader.

Every mutated .tflite (bit flips, truncation, overwritten, deleted or
duplicated spans, random bytes) goes through ``measure_latency``, which
loads, allocates and invokes it in a child process: the parent must always
survive and get either statistics or a LatencyError. Every mutated .npz goes
through ``load_npz``, which must return a dataset or raise DataError.
``experiments/fuzz.py`` (``make fuzz``) runs a campaign; the tests run a
bounded one.
"""

import collections
import json
import os
import time

import numpy as np

MUTATIONS = ("bit_flips", "truncate", "overwrite_span", "random_bytes", "delete_span", "duplicate_span")


def mutate(data: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    """One random mutation of a file's bytes; returns (its kind, the new bytes)."""
    kind = MUTATIONS[rng.integers(len(MUTATIONS))]
    buf = bytearray(data)
    n = len(buf)
    if kind == "bit_flips":
        for _ in range(rng.integers(1, 9)):
            i = rng.integers(n)
            buf[i] ^= 1 << int(rng.integers(8))
    elif kind == "truncate":
        buf = buf[: rng.integers(n)]
    elif kind == "overwrite_span":
        start = rng.integers(n)
        length = min(int(rng.integers(1, 65)), n - start)
        buf[start : start + length] = rng.integers(0, 256, length, dtype=np.uint8).tobytes()
    elif kind == "random_bytes":
        buf = bytearray(rng.integers(0, 256, int(rng.integers(0, 2 * n)), dtype=np.uint8).tobytes())
    elif kind == "delete_span":
        start = rng.integers(n)
        del buf[start : start + int(rng.integers(1, 65))]
    else:
        start = rng.integers(n)
        buf[start:start] = buf[start : start + int(rng.integers(1, 65))]
    return kind, bytes(buf)


def seed_tflite_files() -> list[bytes]:
    """Small valid .tflite files (fp32 and int8) to mutate."""
    import tfcompress as tfc

    keras = tfc.keras
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.layers.InputLayer(input_shape=(8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
         keras.layers.Flatten(), keras.layers.Dense(10)]
    )  # fmt: skip
    calibration = np.random.default_rng(0).random((16, 8, 8, 1), dtype=np.float32)
    return [tfc.convert(model, mode, calibration) for mode in (tfc.Quantization.FP32, tfc.Quantization.INT8)]


def seed_npz_file(folder: str) -> bytes:
    rng = np.random.default_rng(0)
    path = os.path.join(folder, "seed.npz")
    np.savez(path, x_train=rng.integers(0, 256, (20, 8, 8), dtype=np.uint8), y_train=np.arange(20) % 10,
             x_test=rng.integers(0, 256, (10, 8, 8), dtype=np.uint8), y_test=np.arange(10))  # fmt: skip
    with open(path, "rb") as f:
        return f.read()


def fuzz_tflite_case(path: str, data: bytes) -> str:
    """Writes one case and runs it through the latency path; returns 'ok' or 'error: <kind>'."""
    from tfcompress.measure.latency import LatencyError, measure_latency

    with open(path, "wb") as f:
        f.write(data)
    try:
        measure_latency(path, num_runs=1, warmup_runs=0, timeout_s=60)
        return "ok"
    except LatencyError as e:
        text = str(e)
        return "error: child " + ("crashed" if "signal" in text else "timed out" if "timed out" in text else "refused")


def fuzz_npz_case(path: str, data: bytes) -> str:
    """Writes one case and loads it; returns 'ok' or 'error: DataError'. Any other exception propagates."""
    from tfcompress.data import DataError, load_npz

    with open(path, "wb") as f:
        f.write(data)
    try:
        load_npz(path)
        return "ok"
    except DataError:
        return "error: DataError"


def run(tflite_cases: int, npz_cases: int, seed: int, output_dir: str) -> dict:
    """Runs the fuzz campaign; returns (and writes to fuzz.json) a summary of outcomes."""
    os.makedirs(output_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    summary = {"seed": seed}
    start = time.perf_counter()
    seeds = seed_tflite_files()
    outcomes = collections.Counter()
    for i in range(tflite_cases):
        kind, data = mutate(seeds[i % len(seeds)], rng)
        outcomes[fuzz_tflite_case(os.path.join(output_dir, "case.tflite"), data)] += 1
        outcomes[f"mutation: {kind}"] += 1
    summary["tflite"] = {"cases": tflite_cases, "outcomes": dict(sorted(outcomes.items())),
                         "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip
    start = time.perf_counter()
    npz_seed = seed_npz_file(output_dir)
    outcomes = collections.Counter()
    for _ in range(npz_cases):
        kind, data = mutate(npz_seed, rng)
        outcomes[fuzz_npz_case(os.path.join(output_dir, "case.npz"), data)] += 1
        outcomes[f"mutation: {kind}"] += 1
    summary["npz"] = {"cases": npz_cases, "outcomes": dict(sorted(outcomes.items())),
                      "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip
    with open(os.path.join(output_dir, "fuzz.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    return summary
