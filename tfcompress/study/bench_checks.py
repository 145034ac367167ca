"""The acceptance lines of BENCHMARKS.md: each study's figures read off its rows and set against their targets.

Every function takes finished Results (or, for the speed-ups, Results by model) and returns blocks of a section
document (tfcompress.study.bench_render): a list of the figures against their targets; none runs anything.
"""

from __future__ import annotations

from tfcompress.study import bench_render as md
from tfcompress.study.results import Results, Row

# Residual and BatchNorm models recover more slowly from losing half their filters than the plain CNN: after 3
# fine-tuning epochs resnet_small was 1.2 points below fp32, after 8 epochs (same learning rate) 0.4.
FT8 = ":finetune_epochs=8"
# (model, recipe, least speed-up at 1 thread, most accuracy points lost): the acceptance lines.
SPEEDUP_TARGETS = (
    ("cnn", "channel_prune:0.5", 3.0, 0.5),
    ("cnn", "channel_prune:0.25", 8.0, 1.0),
    ("resnet_small", f"channel_prune:0.5{FT8}", 3.0, 0.5),
)
# (model, pipeline, least gzip ratio to fp32, most accuracy points lost).
GZIP_TARGET = ("cnn", "channel_prune_sparse_int8", 25.0, 1.0)


def by_recipe(results: Results) -> dict[str, Row]:
    """The study's rows by their recipe spec."""
    return {r.recipe: r for r in results.rows}


def _failures(results: Results) -> list[str]:
    return [f"`{row.recipe}` is {row.status.value}: {row.error}" for row in results.rows if not row.ok]


def _listed(items: list[str]) -> list[dict]:
    """A list block of the items, or no block when there are none."""
    return [md.bullets(items)] if items else []


def training_checks(results: Results) -> list[dict]:
    """The training-time acceptance figures, read off the default classification study's rows."""
    rows = by_recipe(results)
    fp32 = rows["fp32"]
    lines = []

    def delta(name):
        return (rows[name].metric - fp32.metric) * 100 if rows.get(name) and rows[name].ok else None

    prune = rows.get("prune")
    if prune and prune.ok:
        layers = [layer["sparsity"] for layer in prune.extras["layer_sparsity"]]
        lines.append(
            f"`prune` (target 0.8): per-layer sparsity {min(layers):.4f} to {max(layers):.4f} over {len(layers)} "
            + f"kernels (overall {prune.extras['sparsity']:.4f}); accuracy {delta('prune'):+.2f} points vs fp32."
        )
    if rows.get("qat") and rows["qat"].ok:
        lines.append(f"`qat`: accuracy {delta('qat'):+.2f} points vs fp32 (int8 file).")
    pcqat = rows.get("pcqat")
    if pcqat and pcqat.ok:
        lines.append(
            f"`pcqat` (0.8 sparsity, 16 clusters): gzip {pcqat.gzip_bytes:,} B vs fp32's {fp32.gzip_bytes:,} B "
            + f"({fp32.gzip_bytes / pcqat.gzip_bytes:.1f}x smaller); accuracy {delta('pcqat'):+.2f} points; "
            + f"sparsity {pcqat.extras['sparsity']:.3f} in the int8 kernels."
        )
    return [md.p("Training-time recipes against their targets:"), *_listed(lines + _failures(results))]


def detection_checks(results: Results) -> list[dict]:
    """mAP of fp32 and of the quantized detectors against the detection targets."""
    rows = by_recipe(results)
    fp32 = rows["fp32"]
    lines = [f"fp32: mAP@.5 {fp32.metric:.4f}, mAP@[.5:.95] {fp32.extras.get('map', float('nan')):.4f} (target "
             + "mAP@.5 >= 0.8)."]  # fmt: skip
    for name in ("dynamic_range", "int8"):
        row = rows.get(name)
        if row is not None and row.ok:
            lines.append(f"{name}: mAP@.5 {row.metric:.4f} ({(row.metric - fp32.metric) * 100:+.2f} points vs fp32; "
                         + "target within 2).")  # fmt: skip
    return _listed(lines + _failures(results))


def generative_checks(results: Results) -> list[dict]:
    """The decoder's PSNR per recipe, and how well the classifier reads fp32's decoded digits."""
    rows = by_recipe(results)
    fp32 = rows["fp32"]
    lines = [f"fp32 decoder: PSNR {fp32.metric:.2f} dB; the classifier's accuracy on the decoded test digits "
             + f"{fp32.extras.get('sample_accuracy', float('nan')):.4f}."]  # fmt: skip
    for name in ("dynamic_range", "float16", "int8"):
        row = rows.get(name)
        if row is not None and row.ok:
            lines.append(f"{name}: PSNR {row.metric:.2f} dB ({row.metric - fp32.metric:+.2f} dB vs fp32"
                         + ("; target within 0.5" if name != "int8" else "") + ").")  # fmt: skip
    return _listed(lines + _failures(results))


def language_checks(results: Results) -> list[dict]:
    """Bits per char of the quantized language models against fp32's."""
    rows = by_recipe(results)
    fp32, dynamic = rows["fp32"], rows.get("dynamic_range")
    lines = []
    if dynamic is not None and dynamic.ok:
        change = (dynamic.metric - fp32.metric) / fp32.metric * 100
        lines.append(f"dynamic_range: {dynamic.metric:.4f} vs fp32 {fp32.metric:.4f} bits per char ({change:+.2f}%; "
                     + "target within 1%).")  # fmt: skip
    for name in ("int8", "int16x8"):
        row = rows.get(name)
        if row is not None:
            outcome = f"{row.metric:.4f} bits per char" if row.ok else f"{row.status.value}: {row.error}"
            lines.append(f"{name}: {outcome.rstrip('.')}.")
    return _listed(lines)


def lora_checks(results: Results) -> list[dict]:
    """LoRA's adaptation gain and trainable share against their targets, beside full fine-tuning."""
    rows = by_recipe(results)
    base, lora, full = rows["fp32"], rows.get("lora"), rows.get("finetune")
    lines = [f"Frozen base (the language model pretrained on the documentation text): {base.metric:.4f} bits per "
             + "char on the adaptation corpus's validation split."]  # fmt: skip
    if lora is not None and lora.ok:
        lines.append(
            f"lora: {lora.metric:.4f} bits per char ({(lora.metric - base.metric) / base.metric * 100:+.1f}% vs the "
            + f"frozen base; target at least 10% lower), training {lora.extras['trainable_fraction']:.2%} of the "
            + f"parameters ({lora.extras['trainable_params']:,}; target at most 5%)."
        )
    if full is not None and full.ok:
        lines.append(f"full fine-tuning, same epochs: {full.metric:.4f} bits per char "
                     + f"({(full.metric - base.metric) / base.metric * 100:+.1f}%).")  # fmt: skip
    return _listed(lines + _failures(results))


# Task -> its acceptance lines, for the whole study's per-task sections.
TASK_CHECKS = {"classification": training_checks, "detection": detection_checks, "generative": generative_checks,
               "language": language_checks, "lora": lora_checks}  # fmt: skip


def speedup_checks(outcomes: dict[str, Results]) -> list[dict]:
    """The speed-up, gzip and distillation targets, from the speed-up studies' Results by model name."""
    lines = []
    for model, recipe, least, points in SPEEDUP_TARGETS:
        rows = by_recipe(outcomes[model])
        fp32, row = rows["fp32"], rows.get(recipe)
        if row is None or not row.ok:
            lines.append(f"{model} `{recipe}`: {row.status.value if row else 'missing'}: {row and row.error}")
            continue
        speedup = fp32.latency_at(1).median_ms / row.latency_at(1).median_ms
        delta = (row.metric - fp32.metric) * 100
        met = speedup >= least and delta >= -points
        lines.append(
            f"{model} `{recipe}`: {speedup:.2f}x lower median latency at 1 thread ({fp32.latency_at(1).median_ms:.3f}"
            + f" -> {row.latency_at(1).median_ms:.3f} ms; target >= {least:g}x), accuracy {delta:+.2f} points "
            + f"(target within {points:g}); MACs {fp32.macs / 1e6:.2f} M -> {row.macs / 1e6:.2f} M. "
            + f"**{'met' if met else 'not met'}**."
        )
    model, name, least, points = GZIP_TARGET
    if model in outcomes:
        rows = by_recipe(outcomes[model])
        fp32, pipeline = rows["fp32"], rows.get(name)
        if pipeline is not None and pipeline.ok:
            ratio = fp32.gzip_bytes / pipeline.gzip_bytes
            delta = (pipeline.metric - fp32.metric) * 100
            lines.append(
                f"{model} `{name}` (= channel_prune:0.5>prune:0.8>int8): gzip {pipeline.gzip_bytes:,} B vs fp32's "
                + f"{fp32.gzip_bytes:,} B ({ratio:.1f}x smaller; target >= {least:g}x), accuracy {delta:+.2f} points "
                + f"(target within {points:g}). **{'met' if ratio >= least and delta >= -points else 'not met'}**."
            )
    for model, results in outcomes.items():
        rows = by_recipe(results)
        fp32 = rows["fp32"]
        within = [r for r in results.rows if r.ok and r.gzip_bytes and (r.metric - fp32.metric) * 100 >= -1.0]
        if within:
            smallest = min(within, key=lambda r: r.gzip_bytes)
            lines.append(
                f"{model}: the smallest gzip within 1 point of fp32 is `{smallest.recipe}`, "
                + f"{fp32.gzip_bytes / smallest.gzip_bytes:.1f}x below fp32 "
                + f"({(smallest.metric - fp32.metric) * 100:+.2f} points)."
            )
    cnn = by_recipe(outcomes["cnn"]) if "cnn" in outcomes else {}
    distill = cnn.get("distill")
    if distill is not None and distill.ok:
        gain = (distill.extras["distill_keras_accuracy"] - distill.extras["labels_only_keras_accuracy"]) * 100
        lines.append(
            f"cnn `distill` (half-width student): distilled {distill.extras['distill_keras_accuracy']:.4f} vs "
            + f"labels only {distill.extras['labels_only_keras_accuracy']:.4f} at the same budget (Keras, test "
            + f"split): {gain:+.2f} points from the teacher's soft targets (teacher "
            + f"{distill.extras['teacher_keras_accuracy']:.4f}); the distilled .tflite scores {distill.metric:.4f}."
        )
    prune = cnn.get("prune")
    if prune is not None and prune.ok:
        speedup = cnn["fp32"].latency_at(1).median_ms / prune.latency_at(1).median_ms
        lines.append(
            f"cnn `prune` (TFMOT, 80% zeros, same shapes): {speedup:.2f}x at 1 thread: zeros are still "
            + "multiplied; removing filters is what makes the model faster."
        )
    return _listed(lines)
