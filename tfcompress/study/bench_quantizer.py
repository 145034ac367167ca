"""The bench's ``quantizer`` section: the LiteRT Quantizer next to the converter, and a user's .tflite file.

Three studies of built-in tasks with their default models, each timed in one run with its latency rounds:

- language (the character transformer): fp32, the converter's int8 and dynamic_range, the quantizer's dynamic
  and full-integer rows, full-integer rows with the masked softmax (alone, ``SOFTMAX_ONLY``) and the LayerNorm
  statistics kept float, by name and by op type (``LANGUAGE_STATIC``), and 4-bit blockwise rows with min-max,
  GPTQ and OCTAV scales;
- classification (cnn on mnist5k) and detection: the two pairs ``int8`` / ``q_int8`` and ``dynamic_range`` /
  ``q_dynamic_int8``, and int4 weights with dynamic activations;

then the classification study's own fp32 file and the data as a user's ``.npz`` given to the study as
``--model=model.tflite --data=data.npz``, through ``fp32`` and three quantizer rows.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable

import numpy as np

from tfcompress.study import bench_render as md
from tfcompress.study import report
from tfcompress.study.bench_checks import by_recipe
from tfcompress.study.bench_keras3 import timed_study
from tfcompress.study.results import Results, Row

# 8-bit weights and activations except two groups of ops kept float, found from the rows' layer_errors: the
# masked softmax (the ADD of the causal mask's -1e9 constant, which sets the int8 range of the scores, its
# TRANSPOSE, the SOFTMAX and the BATCH_MATMUL that reads it) and each LayerNorm's statistics (mean, variance,
# the epsilon ADD and RSQRT: int8 cannot hold a variance near epsilon).
# The same two groups named by op type instead (float_ops reaches the mask's ADD through the TRANSPOSE).
LANGUAGE_STATIC = ("quantize:weights=8:activations=8:skip=softmax|moments|Rsqrt",
                   "quantize:weights=8:activations=8:float_ops=SOFTMAX|MEAN|SQUARED_DIFFERENCE|RSQRT")  # fmt: skip
SOFTMAX_ONLY = "quantize:weights=8:activations=8:float_ops=SOFTMAX"  # reported: the masked softmax alone
LANGUAGE_4BIT = tuple(f"quantize:weights=4:activations=float:granularity=block32{a}"
                      for a in ("", ":algorithm=gptq", ":algorithm=octav"))  # fmt: skip
LANGUAGE = ("fp32", "int8", "dynamic_range", "q_dynamic_int8", "q_int8", SOFTMAX_ONLY, *LANGUAGE_STATIC,
            *LANGUAGE_4BIT)  # fmt: skip
INT4 = "quantize:weights=4:activations=float"
PAIRS = ("fp32", "int8", "q_int8", "dynamic_range", "q_dynamic_int8", INT4)
USER = ("fp32", "q_dynamic_int8", "q_int8", "q_int4_block32")
TITLE = "The LiteRT Quantizer next to the converter"


def _yes(met: bool) -> str:
    return f"**{'yes' if met else 'no'}**"


def _ratio(row: Row, fp32: Row) -> float:
    return row.size_bytes / fp32.size_bytes


def language_checks(results: Results) -> list[dict]:
    """The static row within 1% of fp32's bits per char at <= 0.40x; the 4-bit rows at <= 0.32x, within 5%."""
    rows = by_recipe(results)
    fp32 = rows["fp32"]
    lines = []
    targets = [*((r, 0.40, 1.0) for r in LANGUAGE_STATIC), *((r, 0.32, 5.0) for r in LANGUAGE_4BIT)]
    for recipe, size_target, change_target in targets:
        row = rows[recipe]
        if not (row.ok and fp32.ok):
            lines.append(f"`{recipe}`: {row.status.value} ({row.error}): **no**.")
            continue
        ratio, change = _ratio(row, fp32), (row.metric / fp32.metric - 1) * 100
        lines.append(
            f"`{recipe}`: {ratio:.3f}x fp32's size (target <= {size_target:.2f}: {_yes(ratio <= size_target)}), "
            + f"{row.metric:.4f} bits per char, {change:+.2f}% against fp32's {fp32.metric:.4f} "
            + f"(target within {change_target:.0f}%: {_yes(abs(change) <= change_target)})."
        )
    for recipe, what in (("int8", "every activation int8"), ("q_int8", "every activation int8"),
                         (SOFTMAX_ONLY, "only the masked softmax float")):  # fmt: skip
        row = rows[recipe]
        if row.ok and fp32.ok:
            lines.append(f"For comparison, `{recipe}` ({what}): {_ratio(row, fp32):.3f}x, {row.metric:.4f} bits "
                         + f"per char ({(row.metric / fp32.metric - 1) * 100:+.2f}%).")  # fmt: skip
    return [md.bullets(lines)]


def pair_checks(results: Results) -> list[dict]:
    """q_int8 within 2% of int8's size and 1 point of its metric; the dynamic pair and int4 reported."""
    rows = by_recipe(results)
    lines = []
    for converter, quantizer in (("int8", "q_int8"), ("dynamic_range", "q_dynamic_int8")):
        a, b = rows[converter], rows[quantizer]
        if not (a.ok and b.ok):
            bad = [f"`{r.recipe}` {r.status.value} ({r.error})" for r in (a, b) if not r.ok]
            lines.append(f"`{quantizer}` against `{converter}`: {'; '.join(bad)}: **no**.")
            continue
        size, points = b.size_bytes / a.size_bytes, (b.metric - a.metric) * 100
        verdict = ""
        if converter == "int8":
            verdict = (f" (targets: size within 2%: {_yes(abs(size - 1) <= 0.02)}; metric within 1 point: "
                       + f"{_yes(abs(points) <= 1)})")  # fmt: skip
        lines.append(f"`{quantizer}` against `{converter}`: {size:.4f}x its size, {b.metric:.4f} against "
                     + f"{a.metric:.4f} ({points:+.2f} points){verdict}.")  # fmt: skip
    int4, fp32 = rows[INT4], rows["fp32"]
    if int4.ok and fp32.ok:
        lines.append(f"`{INT4}`: {_ratio(int4, fp32):.3f}x fp32's size, metric {int4.metric:.4f} "
                     + f"(fp32 {fp32.metric:.4f}); its weights: {int4.extras.get('quantized_weights')}.")  # fmt: skip
    else:
        lines.append(f"`{INT4}`: {int4.status.value} ({int4.error}).")
    return [md.bullets(lines)]


def user_checks(results: Results, source: str, output_dir: str) -> list[dict]:
    """Every row ok, and the fp32 row is the user's file byte for byte."""
    rows = by_recipe(results)
    bad = [f"`{r.recipe}` {r.status.value} ({r.error})" for r in results.rows if not r.ok]
    same = False
    fp32 = rows["fp32"]
    if fp32.ok:
        with open(source, "rb") as a, open(os.path.join(output_dir, fp32.tflite_path), "rb") as b:
            same = a.read() == b.read()
    return [md.bullets([
        f"Every row ok: {_yes(not bad)}" + (f" ({'; '.join(bad)})." if bad else "."),
        f"The fp32 row's file is the user's file byte for byte: {_yes(same)}.",
    ])]  # fmt: skip


def _user_files(fp32_file: str, folder: str) -> tuple[str, str]:
    """The classification study's fp32 .tflite and mnist5k (its split) written as a user's model.tflite and data.npz."""
    from tfcompress.data import load_mnist5k

    model = os.path.join(folder, "model.tflite")
    shutil.copyfile(fp32_file, model)
    dataset = load_mnist5k(seed=0)  # the study's split (seed 0), as floats in [0, 1]: the npz is taken as it is
    data = os.path.join(folder, "data.npz")
    np.savez(data, x_train=dataset.x_train, y_train=dataset.y_train, x_test=dataset.x_test, y_test=dataset.y_test)
    return model, data


def quantizer_section(
    work_dir: str, num_runs: int, warmup_runs: int, progress: Callable[[str], None]
) -> tuple[str, list[dict]]:
    """The section's title and blocks (see the module docstring)."""
    folder = os.path.join(work_dir, "quantizer")
    os.makedirs(folder, exist_ok=True)
    cache = os.path.join(work_dir, "all", "models")  # the models the whole study trained, if it ran
    measure = {"num_runs": num_runs, "warmup_runs": warmup_runs, "cache_dir": cache, "progress": progress}
    blocks = [
        md.p(
            "The LiteRT Quantizer (`quantize` recipes, `litert-quantizer`) starts from the fp32 .tflite file; the "
            + "converter rows (`int8`, `dynamic_range`) quantize inside the TFLite converter. Both are calibrated "
            + "on the same 200 training examples; every metric is computed on the .tflite file. The `layer_errors` "
            + "of each quantizer row (per-tensor SNR against fp32) are in its results.json and report.md."
        )
    ]
    results, wall_s = timed_study(os.path.join(folder, "language"), LANGUAGE, task="language", **measure)
    blocks += [md.h3(f"Language: the built-in character transformer ({wall_s:.0f} s)"),
               md.table(*report.table(results)), *language_checks(results)]  # fmt: skip
    fp32_file = None
    for task in ("classification", "detection"):
        output_dir = os.path.join(folder, task)
        results, wall_s = timed_study(output_dir, PAIRS, task=task, **measure)
        if task == "classification" and by_recipe(results)["fp32"].ok:
            fp32_file = os.path.join(output_dir, by_recipe(results)["fp32"].tflite_path)
        blocks += [md.h3(f"{task.capitalize()} ({wall_s:.0f} s)"), md.table(*report.table(results)),
                   *pair_checks(results)]  # fmt: skip
    if fp32_file is None:
        return TITLE, [*blocks, md.p("The user-file study did not run: the classification fp32 row failed.")]
    model, data = _user_files(fp32_file, folder)
    output_dir = os.path.join(folder, "user")
    results, wall_s = timed_study(output_dir, USER, model=model, data=data, **measure)
    blocks += [
        md.h3(f"A user's fp32 .tflite with an .npz ({wall_s:.0f} s)"),
        md.p(
            "The classification study's fp32 file copied to `model.tflite` and mnist5k saved with `numpy.savez` "
            + "as `data.npz`, then `python -m experiments.study --model=model.tflite --data=data.npz "
            + f"--recipes={','.join(USER)}`, with no code written for it."
        ),
        md.table(*report.table(results)),
        *user_checks(results, model, output_dir),
    ]
    return TITLE, blocks
