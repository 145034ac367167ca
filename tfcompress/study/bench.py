"""make bench: runs the sections of BENCHMARKS.md, saves each as ``benchmarks/<name>.json``, renders the file.

The sections: every task's study (``overview``), a sparsity sweep (``sweep``), fuzzing (``fuzz``), MobileNetV2
latency vs litert-benchmark (``mobilenet``), real CPU speed-ups from filter removal, distillation and pipelines
(``speedups``), the latency zoo (``zoo``), Keras 3 models as saved (``keras3``, in bench_keras3) and the LiteRT
Quantizer next to the converter (``quantizer``, in bench_quantizer), the advisor's picks (``advise``, in
bench_advise) and the default study with ``--jobs`` and on Ray (``scale``, in bench_scale). Each builder
returns its title and blocks (tables as headers and cells: tfcompress.study.bench_render); ``run`` writes the
document of every section it ran, with the run's date, machine and wall time, then renders BENCHMARKS.md from
all the section files, so sections it did not run come from their files as they are. BENCHMARKS.md is never
written any other way. The acceptance lists come from tfcompress.study.bench_checks.
"""

from __future__ import annotations

import datetime
import os
import shutil
import time
from collections.abc import Callable, Iterable

from tfcompress import fuzzing
from tfcompress.recipes.training import FinetuneParams
from tfcompress.study import (
    bench_advise,
    bench_keras3,
    bench_latency,
    bench_quantizer,
    bench_scale,
    latency_report,
    overview,
    report,
    runner,
    sweep,
    zoo,
)
from tfcompress.study import bench_render as md
from tfcompress.study.bench_checks import FT8, TASK_CHECKS, speedup_checks
from tfcompress.study.config import StudyConfig, from_flat
from tfcompress.study.environment import environment

SECTIONS = md.SECTIONS
# Real CPU speed-ups: per built-in classification model, the recipes studied (fp32 first).
SPEEDUP_STUDIES = {
    "cnn": ("fp32", "dynamic_range", "int8", "prune", "channel_prune:0.5", "channel_prune:0.25",
            "channel_prune:0.25>int8", "channel_prune_sparse_int8", "distill"),
    "resnet_small": ("fp32", "int8", f"channel_prune:0.5{FT8}", f"channel_prune:0.5:channel_criterion=bn_gamma{FT8}",
                     f"channel_prune:0.25{FT8}", f"channel_prune:0.5{FT8}>prune>int8"),
    "mobilenet_v2": ("fp32", "dynamic_range", "int8", f"channel_prune:0.5{FT8}"),
}  # fmt: skip
Section = tuple[str, list[dict]]  # a builder's title and blocks


def _print(line: str) -> None:
    print(line, flush=True)


def _finetune_epochs(config: StudyConfig) -> int:
    """The training-time recipes' fine-tuning epochs: the study's override if it has one, else their default."""
    for values in config.recipe_defaults.values():
        if "finetune_epochs" in values:
            return values["finetune_epochs"]
    return FinetuneParams().finetune_epochs


def _overview_section(work_dir: str, progress: Callable[[str], None]) -> Section:
    """Every task family with its defaults (`--task=all`), as on a fresh clone: every model trained first."""
    config = from_flat(output_dir=os.path.join(work_dir, "all"))
    shutil.rmtree(config.output_dir, ignore_errors=True)
    start = time.perf_counter()
    outcomes = overview.run_all(config, progress=progress)
    wall_s = time.perf_counter() - start
    intro = (
        f"Wall time {wall_s:.0f} s on this machine, including training every built-in model ({config.epochs} "
        + f"epochs; {_finetune_epochs(config)} fine-tuning epochs per training-time recipe) and running every recipe "
        + "in its own process. The summary gives, per task, the smallest .tflite and the fastest one whose metric "
        + "(computed on the .tflite) stays within 1 point (accuracy, mAP) or 1% (PSNR, bits per char) of fp32's."
    )
    blocks = [md.p(intro), md.table(*overview.summary_table(outcomes))]
    for outcome in outcomes:
        blocks.append(md.h3(f"{outcome.task} ({outcome.wall_s:.0f} s)"))
        if outcome.results is None:
            blocks.append(md.p(f"Could not run: {outcome.error}"))
            continue
        blocks += [md.table(*report.table(outcome.results)), *TASK_CHECKS[outcome.task](outcome.results)]
    return "The whole study (`python -m experiments.study --task=all`)", blocks


def _sweep_section(work_dir: str, progress: Callable[[str], None]) -> Section:
    base = from_flat(
        recipes=("prune", "prune_int8", "pqat"),
        output_dir=os.path.join(work_dir, "sweep"),
        cache_dir=os.path.join(work_dir, "all", "models"),  # the model the whole study trained
    )
    start = time.perf_counter()
    points, _ = sweep.run(base, [0.5, 0.75, 0.9, 0.95], progress=progress)
    intro = (
        f"Recipes prune, prune_int8 and pqat at four target sparsities, {_finetune_epochs(base)} fine-tuning epochs "
        + f"each; {time.perf_counter() - start:.0f} s. `sparsity` is measured in the .tflite kernels. The plot "
        + f"(accuracy vs sparsity; gzip KB vs sparsity) is written to `{base.output_dir}/sweep.png` by this run "
        + "(generated files are not committed)."
    )
    return "Sparsity sweep (`python -m experiments.sparsity_sweep`, mnist5k)", [
        md.p(intro),
        md.table(*sweep.table_cells(points)),
    ]


def _fuzz_section(work_dir: str) -> Section:
    summary = fuzzing.run(1000, 1000, seed=0, output_dir=os.path.join(work_dir, "fuzz"))
    items = []
    for name, what in (("tflite", ".tflite files through the latency path (load, allocate, invoke in a child)"),
                       ("npz", ".npz files through load_npz")):  # fmt: skip
        part = summary[name]
        outcomes = ", ".join(f"{k}: {v}" for k, v in part["outcomes"].items() if not k.startswith("mutation"))
        mutations = ", ".join(f"{k[10:]} {v}" for k, v in part["outcomes"].items() if k.startswith("mutation"))
        items.append(f"{part['cases']:,} mutated {what}, {part['seconds']:.0f} s. Outcomes: {outcomes}. "
                     + f"Mutations: {mutations}.")  # fmt: skip
    return "Fuzzing (`make fuzz`)", [
        md.bullets(items),
        md.p(
            "The parent process survived every .tflite case (a crash of the measuring child is an error it reports); "
            + "every .npz case gave a dataset or a DataError, never another exception."
        ),
    ]


def _speedups_section(work_dir, num_runs, warmup_runs, progress) -> Section:
    """Filter removal, distillation and pipelines on each built-in classifier, with the latency lab."""
    intro = (
        "Each built-in classifier trained on mnist5k and studied at 1 and 2 threads "
        + f"({warmup_runs} warm-up and {num_runs} timed runs per measurement). `channel_prune:K` keeps the fraction "
        + "K of every conv's filters (L1 norm; residual-joined convs as one group), rebuilds a narrower model and "
        + "fine-tunes it (3 epochs, or the `finetune_epochs` its spec gives); `channel_prune_sparse_int8` = "
        + "`channel_prune>prune>int8` (keep 0.5, then 80% "
        + "TFMOT sparsity, then full-integer quantization); `distill` trains the half-width student with the "
        + "teacher's soft targets (T=4, alpha 0.5) and, beside it, the same student from labels alone with the "
        + "same epochs, seed and optimizer. Accuracy is measured on each .tflite over the 1,000 test digits."
    )
    blocks = [md.p(intro)]
    outcomes = {}
    for model, recipe_list in SPEEDUP_STUDIES.items():
        config = from_flat(
            model=model,
            recipes=recipe_list,
            threads=(1, 2),
            num_runs=num_runs,
            warmup_runs=warmup_runs,
            output_dir=os.path.join(work_dir, "speedups", model),
            cache_dir=os.path.join(work_dir, "all", "models"),  # the cnn the whole study trained, if it ran
        )
        shutil.rmtree(config.output_dir, ignore_errors=True)
        start = time.perf_counter()
        results = runner.run(config, progress=progress)
        outcomes[model] = results
        blocks += [md.h3(f"{model} ({time.perf_counter() - start:.0f} s)"), md.table(*report.table(results)),
                   md.p("Latency lab:"), md.table(*latency_report.lab_table(results))]  # fmt: skip
    blocks += [md.h3("Against the targets"), *speedup_checks(outcomes)]
    notes = latency_report.lab_notes(next(iter(outcomes.values())))  # "- " lines
    blocks += [md.p("Machine:"), md.bullets(note.removeprefix("- ") for note in notes)] if notes else []
    return "Real CPU speed-ups: filter removal, distillation and pipelines (mnist5k)", blocks


def _zoo_section(work_dir: str, progress: Callable[[str], None]) -> Section:
    """The latency zoo at its defaults (5 application models x 4 post-training modes, 224 px, 1 thread)."""
    config = zoo.ZooConfig(output_dir=os.path.join(work_dir, "zoo"))
    shutil.rmtree(config.output_dir, ignore_errors=True)
    env = zoo.environment(config.threads, config.peak_seconds)
    start = time.perf_counter()
    rows = zoo.run_zoo(config, progress=progress, env=env)
    wall_s = time.perf_counter() - start
    zoo.write_zoo(rows, config, env, wall_s)
    peak = env["peak"][str(config.threads[0])]
    checks = zoo.int8_size_check(rows)
    return "Latency zoo (`python -m experiments.latency_zoo`)", [
        md.p(
            f"tf_keras.applications models with random weights at {config.resolution}x{config.resolution}, "
            + f"{config.classes} classes, batch 1, {config.threads[0]} thread, {config.warmup_runs} warm-up and "
            + f"{config.num_runs} timed runs; {wall_s:.0f} s. Float32 matmul peak "
            + (f"{peak['peak_gflops']:.1f} GFLOP/s ({peak['method']})" if peak.get("peak_gflops") else "not measured")
            + f". {env['cpu_features']['note']}"
        ),
        md.table(*zoo.zoo_cells(rows)),
        md.bullets(zoo.zoo_notes(), marker="*"),
        md.p("int8 bytes per parameter (target <= 1.05 for models above 1 M parameters):"),
        *([md.bullets(checks)] if checks else []),
    ]


def render(json_dir: str = "benchmarks", output: str = "BENCHMARKS.md") -> str:
    """Renders ``output`` from every section document in ``json_dir`` (atomically); returns ``output``."""
    md.write_text(output, md.render_file(md.load_docs(json_dir)))
    return output


def _run_facts(env: dict, wall_s: float) -> dict:
    """A section document's ``run``: today, this machine, the section's wall time and the software versions."""
    return {"date": datetime.date.today().isoformat(), "cpu": env["cpu"], "cpu_count": env["cpu_count"],
            "wall_s": round(wall_s, 1), "software": {key: env.get(key) for key in md.SOFTWARE_KEYS}}  # fmt: skip


def run(
    sections: Iterable[str] = SECTIONS,
    output: str = "BENCHMARKS.md",
    json_dir: str = "benchmarks",
    work_dir: str = "runs/bench",
    num_runs: int = 200,
    warmup_runs: int = 20,
    threads: Iterable[int | str] = (1, 2),
    tolerance: float = 0.05,
    rounds: int = 3,
    progress: Callable[[str], None] = _print,
) -> str:
    """Runs the chosen sections, writes each one's ``json_dir/<name>.json``, and renders ``output`` from them all.

    After each finished section its document is written and ``output`` re-rendered (both atomically), so a run
    that stops later keeps what it finished. Sections not chosen keep the documents ``json_dir`` has.

    Args:
      sections: names from SECTIONS to run; they run, and the file shows them, in SECTIONS order.
      output: the Markdown file to render.
      json_dir: the folder of section documents (``benchmarks`` at the repository root).
      work_dir: where studies and .tflite files go.
      num_runs: timed runs per latency measurement (mobilenet, speedups).
      warmup_runs: untimed runs before timing (mobilenet, speedups).
      threads: thread counts of the MobileNetV2 comparison (strings, as the script's list flag gives them, or ints).
      tolerance: allowed relative gap to litert-benchmark's median.
      rounds: interleaved rounds per file, tool and thread count in the MobileNetV2 comparison.
      progress: called with one line of text per step.

    Returns:
      ``output``.

    Raises:
      ValueError: a section name that is not in SECTIONS.
    """
    chosen = set(sections)
    unknown = sorted(chosen - set(SECTIONS))
    if unknown:
        raise ValueError(f"Unknown section {unknown[0]!r}; choose from: {', '.join(SECTIONS)}.")
    builders = {
        "overview": lambda: _overview_section(work_dir, progress),
        "sweep": lambda: _sweep_section(work_dir, progress),
        "fuzz": lambda: _fuzz_section(work_dir),
        "mobilenet": lambda: bench_latency.mobilenet_section(
            work_dir, [int(t) for t in threads], num_runs, warmup_runs, tolerance, rounds, progress
        ),
        "study": lambda: bench_latency.study_section(work_dir, progress),
        "speedups": lambda: _speedups_section(work_dir, num_runs, warmup_runs, progress),
        "zoo": lambda: _zoo_section(work_dir, progress),
        "keras3": lambda: bench_keras3.keras3_section(work_dir, num_runs, warmup_runs, progress),
        "quantizer": lambda: bench_quantizer.quantizer_section(work_dir, num_runs, warmup_runs, progress),
        "advise": lambda: bench_advise.advise_section(work_dir, progress),
        "scale": lambda: bench_scale.scale_section(work_dir, progress),
    }
    md.load_docs(json_dir)  # a broken document fails now, not after an hour of measuring
    env = environment()
    for name in (n for n in SECTIONS if n in chosen):
        progress(f"== {name} ==")
        start = time.perf_counter()
        title, blocks = builders[name]()
        md.write_doc(json_dir, md.section_doc(name, title, blocks, _run_facts(env, time.perf_counter() - start)))
        render(json_dir, output)
    render(json_dir, output)
    progress(f"Wrote {output} from {json_dir}/*.json")
    return output
