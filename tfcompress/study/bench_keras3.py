"""The bench's ``keras3`` section: Keras 3 models, saved as users save them, through the study.

Two parts, each model written by tfcompress/study/make_keras3.py in a child process without
TF_USE_LEGACY_KERAS (as in a user's notebook):

- a Functional CNN (Conv2D, BatchNormalization, DepthwiseConv2D, Add) trained on mnist5k with Keras 3's own
  ``fit`` and saved as ``.keras``, through fp32, dynamic_range, float16, int8, prune, qat and channel_prune;
- keras.applications MobileNetV3Small, EfficientNetB0 and ResNet50 (weights=None, 48x48x3, 10 classes) on
  mnist5k as uint8 at that size, through the post-training recipes and one-epoch prune and channel_prune.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable

from tfcompress.study import bench_render as md
from tfcompress.study import report, runner
from tfcompress.study.config import from_flat
from tfcompress.study.results import Results, Status

MAKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "make_keras3.py")
TRAINED_RECIPES = ("fp32", "dynamic_range", "float16", "int8", "prune", "qat", "channel_prune")
POST_TRAINING = ("fp32", "dynamic_range", "float16", "int8", "int16x8")
APPLICATION_RECIPES = (*POST_TRAINING, "prune:finetune_epochs=1", "channel_prune:finetune_epochs=1")


def make_keras3(out: str, mode: str, *args: str) -> dict:
    """Runs make_keras3.py in a child without TF_USE_LEGACY_KERAS; returns its made.json."""
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    proc = subprocess.run([sys.executable, MAKER, out, mode, *args], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"make_keras3.py {mode} failed: {proc.stderr.strip().splitlines()[-1:]}")
    with open(os.path.join(out, "made.json")) as f:
        return json.load(f)


def timed_study(output_dir: str, recipes, progress, **flat) -> tuple[Results, float]:
    """A study from scratch into ``output_dir`` (``flat``: from_flat's names) and its wall time in seconds."""
    shutil.rmtree(output_dir, ignore_errors=True)
    start = time.perf_counter()
    results = runner.run(from_flat(recipes=recipes, output_dir=output_dir, **flat), progress=progress)
    return results, time.perf_counter() - start


def trained_checks(results: Results, keras_accuracy: float) -> list[dict]:
    """The acceptance list of the trained Keras 3 CNN's study."""
    rows = {r.recipe: r for r in results.rows}
    fp32, prune = rows["fp32"], rows.get("prune")
    gap = abs(fp32.metric - keras_accuracy) * 100
    lines = [
        f"fp32 .tflite accuracy {fp32.metric:.4f} vs Keras 3's own `evaluate` {keras_accuracy:.4f}: "
        + f"{gap:.2f} points apart (target <= 0.2): **{'yes' if gap <= 0.2 else 'no'}**.",
    ]
    if prune is not None and prune.ok:
        sparsity = prune.extras["sparsity"]
        met = abs(sparsity - 0.8) <= 0.01
        lines.append(f"`prune` sparsity {sparsity:.4f} (target 0.8 within 0.01): **{'yes' if met else 'no'}**.")
    bad = [f"`{r.recipe}` {r.status.value} ({r.error})" for r in results.rows if not r.ok]
    lines.append(f"Every row ok: **{'yes' if not bad else 'no'}**" + (f": {'; '.join(bad)}." if bad else "."))
    return [md.bullets(lines)]


def application_checks(name: str, results: Results) -> list[dict]:
    """Post-training rows ok and int8 <= 0.35x fp32; what prune and channel_prune did."""
    rows = {r.recipe.split(":")[0]: r for r in results.rows}
    post = [rows[r] for r in POST_TRAINING]
    ratio = rows["int8"].size_bytes / rows["fp32"].size_bytes if rows["int8"].ok and rows["fp32"].ok else None
    failed = [f"`{r.recipe}` {r.status.value} ({r.error})" for r in post if not r.ok]
    size = f"{ratio:.3f}x fp32 (target <= 0.35): **{'yes' if ratio <= 0.35 else 'no'}**" if ratio else "**no**"
    verdict = (f"{name}: every post-training row ok: **{'no' if failed else 'yes'}**"
               + (f" ({'; '.join(failed)})" if failed else "") + f"; int8 {size}.")  # fmt: skip
    training = []
    for recipe in ("prune", "channel_prune"):
        row = rows[recipe]
        detail = "" if row.status is Status.OK else f": {row.error}"
        training.append(f"`{row.recipe}`: {row.status.value}{detail}")
    return [md.bullets([{"text": verdict, "items": training}])]


def keras3_section(
    work_dir: str, num_runs: int, warmup_runs: int, progress: Callable[[str], None]
) -> tuple[str, list[dict]]:
    """The section's title and blocks (see the module docstring)."""
    folder = os.path.join(work_dir, "keras3")
    os.makedirs(folder, exist_ok=True)
    measure = {"num_runs": num_runs, "warmup_runs": warmup_runs}
    trained = make_keras3(folder, "trained", "8")
    results, wall_s = timed_study(os.path.join(folder, "trained_study"), TRAINED_RECIPES, progress,
                                  model=os.path.join(folder, trained["model"]), **measure)  # fmt: skip
    title = "Keras 3 models as saved (`--model=model.keras` written by `import keras`)"
    blocks = [
        md.p(
            f"A Keras {trained['keras_version']} Functional CNN ({trained['params']:,} parameters: Conv2D, "
            + "BatchNormalization, DepthwiseConv2D, Add) trained 8 epochs on mnist5k with Keras 3's own `fit` and "
            + "saved with `model.save('trained.keras')`, then studied with no code written for it "
            + f"({wall_s:.0f} s). Post-training rows convert the Keras 3 model itself; training-time rows run on its "
            + "tf_keras twin, checked against it before any recipe runs."
        ),
        md.table(*report.table(results)),
        *trained_checks(results, trained["keras_accuracy"]),
    ]
    apps = make_keras3(folder, "applications")
    data = os.path.join(folder, apps["data"])
    blocks += [
        md.h3("keras.applications, saved by Keras 3 (weights=None, 48x48x3, 10 classes)"),
        md.p(
            "Untrained (nothing may be downloaded), so accuracy is at chance and only sizes, status and latency mean "
            + "something here; the data is mnist5k resized to 48x48x3 as uint8 and scaled as `--input_scale=auto` "
            + "decides (none for the models that start with their own Rescaling layer)."
        ),
    ]
    for name in ("MobileNetV3Small", "EfficientNetB0", "ResNet50"):
        model = os.path.join(folder, apps[name]["model"])
        results, wall_s = timed_study(os.path.join(folder, name), APPLICATION_RECIPES, progress, model=model,
                                      data=data, **measure)  # fmt: skip
        blocks += [md.h4(f"{name} ({apps[name]['params']:,} parameters; {wall_s:.0f} s; "
                         + f"data: {results.config['preprocessing']})"), md.table(*report.table(results))]  # fmt: skip
        blocks += application_checks(name, results)
    return title, blocks
