"""The latency zoo: standard Keras application models through the post-training recipes, every figure explained.

Each model is built with random weights (``weights=None``: nothing is downloaded) at a chosen resolution,
converted in each post-training mode, and timed in the LiteRT interpreter. Next to the latency each row
carries what explains it: the model's MACs and the GFLOP/s they imply, the fraction of this CPU's
float32 matrix-multiply peak that is, how many ops XNNPACK runs, start-up time and memory. There is no
accuracy: the weights are random and there is no data; int8 is calibrated on random-normal inputs, which
sets plausible ranges for timing but says nothing of accuracy.

``run_zoo(config)`` returns the rows; ``zoo_table(rows)`` formats them; ``write_zoo`` saves JSON, CSV and
Markdown. ``experiments/latency_zoo.py`` is the command line.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import json
import os
import time
from collections.abc import Callable

import numpy as np

from tfcompress.measure import latency as benchmark
from tfcompress.measure import macs, peak
from tfcompress.recipes.converter import Quantization
from tfcompress.study.environment import environment as study_environment

ZOO_MODELS = ("MobileNetV2", "MobileNetV3Small", "MobileNetV3Large", "EfficientNetB0", "ResNet50")
# Every tf_keras.applications builder that takes (weights, input_shape, include_top, classes).
KNOWN_MODELS = (
    "MobileNet", "MobileNetV2", "MobileNetV3Small", "MobileNetV3Large", "EfficientNetB0", "EfficientNetB1",
    "EfficientNetV2B0", "ResNet50", "ResNet50V2", "ResNet101", "DenseNet121", "NASNetMobile", "InceptionV3",
    "Xception", "VGG16", "ConvNeXtTiny", "RegNetX002", "RegNetY002",
)  # fmt: skip
ZOO_RECIPES = ("fp32", "dynamic_range", "float16", "int8")
ACCURACY_NOTE = "accuracy: not applicable (random weights, no data)"
INT8_BYTES_PER_PARAM_LIMIT = 1.05  # int8 stores one byte per weight; the rest is graph, biases and scales
_MIN_RESOLUTION = {"InceptionV3": 75, "Xception": 71, "NASNetMobile": 32}


@dataclasses.dataclass(frozen=True)
class ZooConfig:
    """What the zoo runs. Field names equal the command line's flags (``zoo_models`` is --zoo_models)."""

    zoo_models: tuple[str, ...] = ZOO_MODELS
    resolution: int = 224
    recipes: tuple[str, ...] = ZOO_RECIPES
    threads: tuple[int, ...] = (1,)
    num_runs: int = 30
    warmup_runs: int = 5
    output_dir: str = "runs/zoo"
    calibration_samples: int = 8
    seed: int = 0
    classes: int = 1000
    peak_seconds: float = 1.0
    latency_timeout_s: float = 600.0

    def __post_init__(self):
        object.__setattr__(self, "zoo_models", tuple(self.zoo_models))
        object.__setattr__(self, "recipes", tuple(self.recipes))
        object.__setattr__(self, "threads", tuple(int(t) for t in self.threads))
        if not self.zoo_models:
            raise ValueError(f"No models given; choose from: {', '.join(KNOWN_MODELS)}.")
        unknown = [m for m in self.zoo_models if m not in KNOWN_MODELS]
        if unknown:
            raise ValueError(f"Unknown zoo model {unknown[0]!r}; choose from: {', '.join(KNOWN_MODELS)}.")
        choices = [q.value for q in Quantization]
        bad = [r for r in self.recipes if r not in choices]
        if bad or not self.recipes:
            raise ValueError(f"Unknown recipe {(bad or [''])[0]!r}; choose from: {', '.join(choices)}.")
        low = max(32, *(_MIN_RESOLUTION.get(m, 32) for m in self.zoo_models))
        if self.resolution < low:
            raise ValueError(f"resolution must be >= {low} for {', '.join(self.zoo_models)}, got {self.resolution}.")
        if not self.threads or any(t < 1 for t in self.threads):
            raise ValueError(f"threads must be positive integers, got {list(self.threads)}.")
        for name in ("num_runs", "calibration_samples", "classes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.warmup_runs < 0:
            raise ValueError(f"warmup_runs must be >= 0, got {self.warmup_runs}.")
        if self.peak_seconds <= 0:
            raise ValueError(f"peak_seconds must be > 0, got {self.peak_seconds}.")


def build_model(name: str, resolution: int, classes: int = 1000, seed: int = 0):
    """A tf_keras.applications model with random (seeded) weights and its classifier head; no download."""
    from tfcompress._keras import keras

    if name not in KNOWN_MODELS:
        raise ValueError(f"Unknown zoo model {name!r}; choose from: {', '.join(KNOWN_MODELS)}.")
    keras.utils.set_random_seed(seed)
    builder = getattr(keras.applications, name)
    return builder(weights=None, input_shape=(resolution, resolution, 3), include_top=True, classes=classes)


def calibration_inputs(samples: int, resolution: int, seed: int = 0) -> np.ndarray:
    """Random-normal images (samples, resolution, resolution, 3): there is no data to calibrate int8 with."""
    return np.random.default_rng(seed).standard_normal((samples, resolution, resolution, 3)).astype(np.float32)


def environment(threads: tuple[int, ...] = (1,), peak_seconds: float = 1.0) -> dict:
    """The study's machine facts, this CPU's instruction sets, and the float32 matmul peak per thread count."""
    return study_environment(tuple(threads), peak_seconds)


def size_breakdown(tflite: bytes) -> dict:
    """Where a .tflite file's bytes go: constant buffers, quantization parameters, and the rest (graph, names).

    Quantization parameters are 4 bytes (float32 scale) plus 8 bytes (int64 zero point) per channel of every
    per-channel quantized tensor, so models with many channels and few weights per channel (MobileNetV3's
    depthwise and squeeze-excite layers) pay visibly more than one byte per parameter in int8.
    """
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(tflite, 0)
    buffer_bytes = sum(model.Buffers(i).DataLength() + model.Buffers(i).Size() for i in range(model.BuffersLength()))
    quant_bytes = 0
    for g in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(g)
        for t in range(subgraph.TensorsLength()):
            q = subgraph.Tensors(t).Quantization()
            if q is not None:
                quant_bytes += 4 * q.ScaleLength() + 8 * q.ZeroPointLength()
    return {
        "buffer_bytes": buffer_bytes,
        "quant_params_bytes": quant_bytes,
        "other_bytes": len(tflite) - buffer_bytes - quant_bytes,
    }


def _row(model: str, recipe: str, threads: int, params: int | None, keras_macs: int | None) -> dict:
    return {
        "model": model, "recipe": recipe, "threads": threads, "params": params, "keras_macs": keras_macs,
        "tflite_path": None, "size_bytes": None, "gzip_bytes": None, "bytes_per_param": None, "buffer_bytes": None,
        "quant_params_bytes": None, "macs": None,
        "convert_s": None, "latency": None, "median_ms": None, "p90_ms": None, "gflops": None,
        "roofline_fraction": None, "scaling_efficiency": None, "accuracy": None, "error": None,
    }  # fmt: skip


def _measure_rows(path: str, base: dict, config: ZooConfig, peaks: dict) -> list[dict]:
    rows = []
    for t in config.threads:
        row = {**base, "threads": t}
        try:
            stats = benchmark.measure_latency(
                path, threads=t, num_runs=config.num_runs, warmup_runs=config.warmup_runs, seed=config.seed,
                timeout_s=config.latency_timeout_s,
            )  # fmt: skip
        except benchmark.LatencyError as e:
            row["error"] = f"latency at {t} thread(s): {e}"
            rows.append(row)
            continue
        row["latency"] = stats.to_dict()
        row["median_ms"], row["p90_ms"] = stats.median_ms, stats.p90_ms
        peak_gflops = (peaks.get(str(t)) or {}).get("peak_gflops")
        if row["macs"]:
            row["gflops"], row["roofline_fraction"] = peak.roofline(row["macs"], stats.median_ms, peak_gflops)
        rows.append(row)
    measured = [benchmark.LatencyStats.from_dict(r["latency"]) for r in rows if r["latency"]]
    if len(measured) > 1:
        efficiency = benchmark.scaling_efficiency(measured)
        for r in rows:
            if r["latency"]:
                r["scaling_efficiency"] = efficiency[r["threads"]]
    return rows


def run_zoo(config: ZooConfig, progress: Callable[[str], None] | None = None, env: dict | None = None) -> list[dict]:
    """Builds, converts and times every (model, recipe, thread count) of ``config``.

    Writes ``output_dir/<model>/<recipe>.tflite``. A failed build, conversion or measurement is a row
    with ``error`` set, not an exception. ``env`` is ``environment(...)`` (measured here when None); its
    peaks give the roofline fractions.

    Returns:
      One dict per (model, recipe, threads): model, recipe, threads, params, keras_macs, tflite_path
      (relative to output_dir), size_bytes, gzip_bytes, bytes_per_param, macs (counted in the .tflite),
      convert_s, latency (``LatencyStats.to_dict()``), median_ms, p90_ms, gflops, roofline_fraction,
      scaling_efficiency (with several thread counts), accuracy (always None: see ACCURACY_NOTE), error.
    """
    from tfcompress._keras import keras
    from tfcompress.recipes.converter import convert

    say = progress or (lambda line: None)
    if env is None:
        say("measuring the float32 matmul peak")
        env = environment(config.threads, config.peak_seconds)
    peaks = env.get("peak", {})
    os.makedirs(config.output_dir, exist_ok=True)
    calibration = calibration_inputs(config.calibration_samples, config.resolution, config.seed)
    rows = []
    total = len(config.zoo_models) * len(config.recipes)
    step = 0
    for name in config.zoo_models:
        keras.backend.clear_session()
        try:
            model = build_model(name, config.resolution, config.classes, config.seed)
            params, keras_macs = int(model.count_params()), macs.keras_macs(model)
        except Exception as e:  # e.g. an input size the architecture refuses
            for recipe in config.recipes:
                step += 1
                say(f"[{step}/{total}] {name} {recipe}: build failed: {e}")
                rows.append({**_row(name, recipe, config.threads[0], None, None), "error": f"build: {e}"})
            continue
        for recipe in config.recipes:
            step += 1
            base = _row(name, recipe, config.threads[0], params, keras_macs)
            say(f"[{step}/{total}] {name} {recipe}: converting")
            start = time.perf_counter()
            try:
                mode = Quantization(recipe)
                tflite = convert(model, mode, calibration if mode.needs_calibration else None)
            except Exception as e:  # the converter raises many types; any of them is this row's failure
                base["error"] = f"conversion: {type(e).__name__}: {' '.join(str(e).split())[:300]}"
                say(f"[{step}/{total}] {name} {recipe}: {base['error']}")
                rows.append(base)
                continue
            base["convert_s"] = time.perf_counter() - start
            relative = os.path.join(name, f"{recipe}.tflite")
            path = os.path.join(config.output_dir, relative)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(tflite)
            base.update(
                tflite_path=relative, size_bytes=len(tflite), gzip_bytes=len(gzip.compress(tflite, compresslevel=9)),
                bytes_per_param=len(tflite) / params if params else None, macs=macs.tflite_macs(tflite),
            )  # fmt: skip
            breakdown = size_breakdown(tflite)
            base.update(buffer_bytes=breakdown["buffer_bytes"], quant_params_bytes=breakdown["quant_params_bytes"])
            say(f"[{step}/{total}] {name} {recipe}: timing ({base['size_bytes']:,} bytes)")
            new = _measure_rows(path, base, config, peaks)
            for r in new:
                detail = f"{r['median_ms']:.2f} ms @{r['threads']}t" if r["median_ms"] is not None else r["error"]
                say(f"[{step}/{total}] {name} {recipe}: {detail}")
            rows += new
        del model
    return rows


def _fmt(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


def _delegation(row: dict) -> str:
    lat = row.get("latency") or {}
    if lat.get("delegated_ops") is None:
        return ""
    text = f"{lat['delegated_ops']}/{lat['total_ops']}"
    if lat.get("undelegated"):
        text += " (" + ", ".join(f"{op} x{n}" for op, n in lat["undelegated"].items()) + ")"
    return text


def zoo_cells(rows: list[dict]) -> tuple[list[str], list[list]]:
    """The zoo table's headers and cells, one row per model, recipe and thread count."""
    sweep = len({r["threads"] for r in rows}) > 1
    headers = ["model", "recipe"] + (["threads"] if sweep else [])
    headers += ["params", "size B", "gzip B", "B/param", "MMACs", "median ms", "p90 ms", "GFLOP/s", "of peak"]
    headers += ["XNNPACK ops", "init ms", "1st ms", "RSS MB"] + (["scaling"] if sweep else []) + ["error"]
    cells = []
    for r in rows:
        lat = r.get("latency") or {}
        cells.append(
            [r["model"], r["recipe"]] + ([r["threads"]] if sweep else [])
            + [_fmt(r["params"], ","), _fmt(r["size_bytes"], ","), _fmt(r["gzip_bytes"], ","),
               _fmt(r["bytes_per_param"], ".3f"), _fmt(r["macs"] and r["macs"] / 1e6, ".1f"),
               _fmt(r["median_ms"], ".2f"), _fmt(r["p90_ms"], ".2f"), _fmt(r["gflops"], ".1f"),
               _fmt(r["roofline_fraction"], ".0%"), _delegation(r), _fmt(lat.get("init_ms"), ".0f"),
               _fmt(lat.get("first_invoke_ms"), ".1f"), _fmt(lat.get("peak_rss_mb"), ".0f")]
            + ([_fmt(r["scaling_efficiency"], ".2f")] if sweep else []) + [r["error"] or ""]
        )  # fmt: skip
    return headers, cells


def zoo_notes() -> list[str]:
    """The footnotes that say what the zoo table's columns cannot."""
    return [
        f"{ACCURACY_NOTE}; int8 is calibrated on random-normal inputs.",
        "MMACs: multiply-accumulates of conv, depthwise, dense and matmul ops counted in the .tflite; "
        + "GFLOP/s = 2 x MACs / median; 'of peak' is that over the float32 matmul peak at the same threads.",
        "XNNPACK ops: graph ops run by XNNPACK / all ops, with the ops left to LiteRT's builtin kernels.",
    ]


def zoo_table(rows: list[dict], tablefmt: str = "github") -> str:
    """The zoo's rows as a table, with the footnotes that say what its columns cannot."""
    from tabulate import tabulate

    headers, cells = zoo_cells(rows)
    table = tabulate(cells, headers=headers, tablefmt=tablefmt, disable_numparse=True)
    return table + "\n\n" + "\n".join(f"* {note}" for note in zoo_notes())


def int8_size_check(rows: list[dict], min_params: int = 1_000_000) -> list[str]:
    """One line per int8 row of a model above ``min_params``: its bytes per parameter against the 1.05 limit."""
    lines = []
    seen = set()
    for r in rows:
        if r["recipe"] != "int8" or not r["bytes_per_param"] or (r["params"] or 0) <= min_params:
            continue
        if r["model"] in seen:
            continue
        seen.add(r["model"])
        verdict = "ok" if r["bytes_per_param"] <= INT8_BYTES_PER_PARAM_LIMIT else "ABOVE the limit"
        line = (
            f"{r['model']} int8: {r['bytes_per_param']:.3f} bytes/param (limit {INT8_BYTES_PER_PARAM_LIMIT}): {verdict}"
        )
        if r.get("buffer_bytes") is not None:
            line += (
                f"; weights and biases {r['buffer_bytes'] / r['params']:.3f}, per-channel scales and zero points "
                + f"{r['quant_params_bytes'] / r['params']:.3f}, graph "
                + f"{(r['size_bytes'] - r['buffer_bytes'] - r['quant_params_bytes']) / r['params']:.3f} bytes/param"
            )
        lines.append(line)
    return lines


_CSV_FIELDS = (
    "model", "recipe", "threads", "params", "size_bytes", "gzip_bytes", "bytes_per_param", "buffer_bytes",
    "quant_params_bytes", "macs", "keras_macs",
    "median_ms", "p90_ms", "gflops", "roofline_fraction", "scaling_efficiency", "convert_s", "tflite_path", "error",
)  # fmt: skip
_CSV_LATENCY = ("init_ms", "first_invoke_ms", "peak_rss_mb", "delegated_ops", "total_ops", "delegate_partitions")


def write_zoo(rows: list[dict], config: ZooConfig, env: dict, wall_s: float | None = None) -> dict[str, str]:
    """Writes zoo.json (config, environment, rows), zoo.csv and zoo.md into config.output_dir; returns their paths."""
    os.makedirs(config.output_dir, exist_ok=True)
    paths = {ext: os.path.join(config.output_dir, f"zoo.{ext}") for ext in ("json", "csv", "md")}
    document = {"config": dataclasses.asdict(config), "environment": env, "wall_s": wall_s,
                "accuracy_note": ACCURACY_NOTE, "rows": rows}  # fmt: skip
    with open(paths["json"], "w", encoding="utf-8") as f:
        json.dump(document, f, indent=1)
    with open(paths["csv"], "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*_CSV_FIELDS, *_CSV_LATENCY, "undelegated"])
        for r in rows:
            lat = r.get("latency") or {}
            undelegated = ";".join(f"{op}:{n}" for op, n in (lat.get("undelegated") or {}).items())
            writer.writerow([r.get(k) for k in _CSV_FIELDS] + [lat.get(k) for k in _CSV_LATENCY] + [undelegated])
    features = env.get("cpu_features", {})
    peaks = ", ".join(
        f"{p['peak_gflops']:.1f} GFLOP/s at {t} thread(s) ({p['method']})"
        for t, p in env.get("peak", {}).items()
        if p.get("peak_gflops")
    )
    lines = [
        "# Latency zoo",
        "",
        f"{len(config.zoo_models)} models at {config.resolution}x{config.resolution}, recipes "
        + f"{', '.join(config.recipes)}, threads {', '.join(map(str, config.threads))}, {config.num_runs} timed "
        + f"runs after {config.warmup_runs} warm-up runs."
        + (f" Wall time {wall_s:.0f} s." if wall_s is not None else ""),
        "",
        f"CPU: {features.get('model_name') or env.get('cpu')}. {features.get('note', '')}",
        f"Float32 peak: {peaks or 'not measured'}.",
        "",
        zoo_table(rows, "github"),
        "",
    ]
    checks = int8_size_check(rows)
    if checks:
        lines += ["## int8 bytes per parameter", ""] + [f"- {c}" for c in checks] + [""]
    with open(paths["md"], "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    return paths
