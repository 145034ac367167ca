"""Per-layer sensitivity of a study's model, on its own: tables and a plot (``experiments.sensitivity``).

- Quantization: each layer quantized alone with the given settings (the rest
  float), the model output's SNR against fp32, and the layer's worst tensor
  SNR when the whole model is quantized (the quantizer's own comparison).
- Pruning: each prunable layer alone magnitude-pruned to each level, no
  fine-tuning (as Distiller's sensitivity analysis does): the task metric on
  the test split (computed in Keras) and the training loss on held-out
  training examples, which ``prune:...:allocation=sensitivity`` shares
  sparsity out by.

Results are cached in OUTPUT_DIR/sensitivity.json under a key of the model,
data and settings; a second run with the same key reads them back.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable
from typing import Any

from tabulate import tabulate

from tfcompress import loading, tasks
from tfcompress.models import clone, predict_logits
from tfcompress.recipes import quantizer, quantizer_layers
from tfcompress.recipes import sensitivity as sens
from tfcompress.recipes.converter import Quantization, convert
from tfcompress.study import job as job_lib
from tfcompress.study.cache import inside, prepare_output_dir
from tfcompress.study.config import StudyConfig
from tfcompress.study.results import write_atomic


def analyze(config: StudyConfig, params: quantizer.QuantizeParams, progress: Callable[[str], None],
            prune: bool = True) -> dict[str, Any]:  # fmt: skip
    """Measures (or reads back from the cache) both analyses; writes sensitivity.json, .md and .png."""
    out = prepare_output_dir(config.output_dir)
    prepared = job_lib.prepare(config, progress, 0, twin=prune)
    key = hashlib.sha256(json.dumps([prepared.basis, dataclasses.asdict(params), prune, sens.LEVELS],
                                    sort_keys=True, default=str).encode()).hexdigest()  # fmt: skip
    path = inside(out, "sensitivity.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            cached = json.load(f)
        if cached.get("key") == key:
            progress(f"Sensitivity read back from {path} (same model, data and settings).")
            write_reports(cached, out)
            return cached
    task = tasks.get(config.task)
    model = prepared.model.model
    fp32 = model.content if isinstance(model, loading.TFLiteModel) else convert(model, Quantization.FP32)
    calibration = prepared.context.calibration_data
    progress(f"Quantization: each layer alone with {params} ...")
    ranking = quantizer.rank_layers(fp32, params, calibration)
    _, extras = quantizer.quantize(fp32, params, calibration)
    worst = quantizer_layers.layer_snr(extras["layer_errors"])
    for r in ranking:
        r["worst_tensor_snr_db"] = worst.get(r["layer"])
    result = {"key": key, "task": config.task, "model": prepared.name, "quantize": dataclasses.asdict(params),
              "metric": task.metric.to_dict(), "quantization": ranking, "pruning": None,
              "pruning_note": None}  # fmt: skip
    trainable = prepared.model.trainable
    if prune and trainable is not None:
        progress(f"Pruning: each layer alone at {', '.join(map(str, sens.LEVELS))} (no fine-tuning) ...")
        result["pruning"] = _pruning(trainable, prepared, task)
    elif prune:
        result["pruning_note"] = f"not measured: {prepared.model.why_not_trainable}"
    write_atomic(path, json.dumps(result, indent=2))
    write_reports(result, out)
    return result


def _pruning(model, prepared, task) -> list[dict[str, Any]]:
    dataset = prepared.dataset
    base = task.score(predict_logits(model, dataset.x_test), dataset).metric

    def drop(m) -> float:
        return task.metric.drop(task.score(predict_logits(m, dataset.x_test), dataset).metric, base)

    x, y = sens.held_out(dataset, prepared.context.seed)
    probe = clone(model)
    metric = {c.layer: c for c in sens.curves(probe, drop)}
    loss = {c.layer: c for c in sens.curves(probe, sens.loss_score(probe, x, y, prepared.context.loss))}
    return [{"layer": n, "params": c.params, "levels": list(c.levels), "metric_drop": list(c.increase),
             "loss_increase": list(loss[n].increase)} for n, c in metric.items()]  # fmt: skip


def tables(result: dict[str, Any]) -> str:
    """The two analyses as Markdown tables."""
    unit = "pt" if result["metric"]["fraction"] else "%"
    q = result["quantize"]
    lines = [f"# Per-layer sensitivity: {result['task']} ({result['model']})", "",
             f"## Quantization (weights={q['weights']}, activations={q['activations']}, {q['granularity']})", "",
             "Most sensitive first: the model output's SNR against fp32 when the layer alone is quantized, and the "
             + "layer's worst tensor SNR with the whole model quantized (the quantizer's comparison).", ""]  # fmt: skip
    cells = [[r["layer"], r["ops"], _db(r["output_snr_db"]), _db(r.get("worst_tensor_snr_db"))]
             for r in result["quantization"]]  # fmt: skip
    lines += [tabulate(cells, ["layer", "ops", "output SNR alone (dB)", "worst tensor SNR, all quantized (dB)"],
                       tablefmt="github", disable_numparse=True), ""]  # fmt: skip
    if result["pruning"]:
        levels = result["pruning"][0]["levels"]
        lines += ["## Pruning (one layer at a time, no fine-tuning)", "",
                  f"{result['metric']['name']} drop in {unit} against the unpruned model on the test split, per "
                  + "layer and sparsity (training loss increase in parentheses).", ""]  # fmt: skip
        cells = [[p["layer"], p["params"], *[f"{m:+.2f} ({v:+.3f})" for m, v in zip(p["metric_drop"],
                 p["loss_increase"], strict=True)]] for p in result["pruning"]]  # fmt: skip
        lines += [tabulate(cells, ["layer", "params", *[f"{s:g}" for s in levels]], tablefmt="github",
                           disable_numparse=True), ""]  # fmt: skip
    elif result.get("pruning_note"):
        lines += [f"Pruning: {result['pruning_note']}", ""]
    return "\n".join(lines)


def _db(value) -> str:
    return "no change" if value is None else f"{value:.1f}"


def write_reports(result: dict[str, Any], out: str) -> None:
    write_atomic(inside(out, "sensitivity.md"), tables(result))
    plot(result, inside(out, "sensitivity.png"))


def plot(result: dict[str, Any], path: str) -> None:
    """Left: output SNR per layer (quantized alone). Right: metric drop against sparsity, one line per layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    q = [r for r in result["quantization"] if r["output_snr_db"] is not None]
    axes[0].barh([r["layer"] for r in q], [r["output_snr_db"] for r in q], color="tab:blue")
    axes[0].invert_yaxis()
    axes[0].set_xlabel("output SNR with the layer alone quantized (dB; lower is more sensitive)")
    for p in result["pruning"] or []:
        axes[1].plot(p["levels"], p["metric_drop"], marker="o", label=p["layer"])
    if result["pruning"]:
        axes[1].legend(fontsize=7)
    axes[1].set_xlabel("sparsity of the one pruned layer")
    axes[1].set_ylabel(f"{result['metric']['name']} drop ({'pt' if result['metric']['fraction'] else '%'})")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(f"Per-layer sensitivity: {result['task']} ({result['model']})")
    fig.tight_layout()
    fig.savefig(path + ".tmp.png", dpi=110)
    os.replace(path + ".tmp.png", path)
    plt.close(fig)
