"""make bench: the sections of BENCHMARKS.md, each run here and written between its section markers.

The sections: every task's study (``overview``), a sparsity sweep (``sweep``), fuzzing (``fuzz``), MobileNetV2
latency vs litert-benchmark (``mobilenet``), real CPU speed-ups from filter removal, distillation and pipelines
(``speedups``), the latency zoo (``zoo``) and Keras 3 models as saved (``keras3``, in bench_keras3). ``run``
re-runs the chosen sections and keeps the others as an earlier BENCHMARKS.md has them; the acceptance lines
come from tfcompress.study.bench_checks.
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable

import numpy as np
from tabulate import tabulate

from tfcompress import fuzzing
from tfcompress._keras import keras
from tfcompress.measure.latency import litert_benchmark, measure_latency
from tfcompress.recipes import RecipeContext
from tfcompress.recipes import get as get_recipe
from tfcompress.recipes.training import FinetuneParams
from tfcompress.study import bench_keras3, overview, report, runner, sweep, zoo
from tfcompress.study.bench_checks import FT8, TASK_CHECKS, speedup_checks
from tfcompress.study.config import StudyConfig, from_flat
from tfcompress.study.environment import environment

SECTIONS = ("overview", "sweep", "fuzz", "mobilenet", "speedups", "zoo", "keras3")
MOBILENET_RECIPES = ("fp32", "dynamic_range", "float16", "int8")
# Real CPU speed-ups: per built-in classification model, the recipes studied (fp32 first).
SPEEDUP_STUDIES = {
    "cnn": ("fp32", "dynamic_range", "int8", "prune", "channel_prune:0.5", "channel_prune:0.25",
            "channel_prune:0.25>int8", "channel_prune_sparse_int8", "distill"),
    "resnet_small": ("fp32", "int8", f"channel_prune:0.5{FT8}", f"channel_prune:0.5:channel_criterion=bn_gamma{FT8}",
                     f"channel_prune:0.25{FT8}", f"channel_prune:0.5{FT8}>prune>int8"),
    "mobilenet_v2": ("fp32", "dynamic_range", "int8", f"channel_prune:0.5{FT8}"),
}  # fmt: skip
_MARK = re.compile(r"<!-- section: (\w+) -->\n(.*?)<!-- /section: \1 -->\n", re.S)


def _print(line: str) -> None:
    print(line, flush=True)


def _finetune_epochs(config: StudyConfig) -> int:
    """The training-time recipes' fine-tuning epochs: the study's override if it has one, else their default."""
    for values in config.recipe_defaults.values():
        if "finetune_epochs" in values:
            return values["finetune_epochs"]
    return FinetuneParams().finetune_epochs


def _overview_section(work_dir: str, progress: Callable[[str], None]) -> list[str]:
    """Every task family with its defaults (`--task=all`), as on a fresh clone: every model trained first."""
    config = from_flat(output_dir=os.path.join(work_dir, "all"))
    shutil.rmtree(config.output_dir, ignore_errors=True)
    start = time.perf_counter()
    outcomes = overview.run_all(config, progress=progress)
    wall_s = time.perf_counter() - start
    headers, cells = overview.summary_table(outcomes)
    lines = [
        "## The whole study (`python -m experiments.study --task=all`)",
        "",
        f"Wall time {wall_s:.0f} s on this machine, including training every built-in model ({config.epochs} "
        + f"epochs; {_finetune_epochs(config)} fine-tuning epochs per training-time recipe) and running every recipe "
        + "in its own process. The summary gives, per task, the smallest .tflite and the fastest one whose metric "
        + "(computed on the .tflite) stays within 1 point (accuracy, mAP) or 1% (PSNR, bits per char) of fp32's.",
        "",
        tabulate(cells, headers=headers, tablefmt="github", disable_numparse=True),
        "",
    ]
    for outcome in outcomes:
        lines += [f"### {outcome.task} ({outcome.wall_s:.0f} s)", ""]
        if outcome.results is None:
            lines += [f"Could not run: {outcome.error}", ""]
            continue
        lines += [report.format_table(outcome.results, "github"), ""]
        lines += TASK_CHECKS[outcome.task](outcome.results)
    return lines


def _sweep_section(work_dir: str, progress: Callable[[str], None]) -> list[str]:
    base = from_flat(
        recipes=("prune", "prune_int8", "pqat"),
        output_dir=os.path.join(work_dir, "sweep"),
        cache_dir=os.path.join(work_dir, "all", "models"),  # the model the whole study trained
    )
    start = time.perf_counter()
    points, _ = sweep.run(base, [0.5, 0.75, 0.9, 0.95], progress=progress)
    return [
        "## Sparsity sweep (`python -m experiments.sparsity_sweep`, mnist5k)",
        "",
        f"Recipes prune, prune_int8 and pqat at four target sparsities, {_finetune_epochs(base)} fine-tuning epochs "
        + f"each; {time.perf_counter() - start:.0f} s. `sparsity` is measured in the .tflite kernels. The plot "
        + f"(accuracy vs sparsity; gzip KB vs sparsity) is written to `{base.output_dir}/sweep.png` by this run "
        + "(generated files are not committed).",
        "",
        sweep.table(points),
        "",
    ]


def _fuzz_section(work_dir: str) -> list[str]:
    summary = fuzzing.run(1000, 1000, seed=0, output_dir=os.path.join(work_dir, "fuzz"))
    lines = ["## Fuzzing (`make fuzz`)", ""]
    for name, what in (("tflite", ".tflite files through the latency path (load, allocate, invoke in a child)"),
                       ("npz", ".npz files through load_npz")):  # fmt: skip
        part = summary[name]
        outcomes = ", ".join(f"{k}: {v}" for k, v in part["outcomes"].items() if not k.startswith("mutation"))
        mutations = ", ".join(f"{k[10:]} {v}" for k, v in part["outcomes"].items() if k.startswith("mutation"))
        lines.append(f"- {part['cases']:,} mutated {what}, {part['seconds']:.0f} s. Outcomes: {outcomes}. "
                     + f"Mutations: {mutations}.")  # fmt: skip
    lines += [
        "",
        "The parent process survived every .tflite case (a crash of the measuring child is an error it reports); "
        + "every .npz case gave a dataset or a DataError, never another exception.",
        "",
    ]
    return lines


def _mobilenet_section(work_dir, threads, num_runs, warmup_runs, tolerance, progress) -> list[str]:
    model = keras.applications.MobileNetV2(input_shape=(160, 160, 3), alpha=1.0, weights=None)
    calibration = np.random.default_rng(0).uniform(-1, 1, (32, 160, 160, 3)).astype(np.float32)
    context = RecipeContext(calibration_data=calibration)
    folder = os.path.join(work_dir, "mobilenet_v2")
    os.makedirs(folder, exist_ok=True)
    lines = [
        "## MobileNetV2 (alpha 1.0, 160x160, weights=None): our latency vs litert-benchmark",
        "",
        f"Batch 1, XNNPACK, {warmup_runs} warm-up and {num_runs} timed runs per measurement. `ours` is "
        + "tfcompress's child-process Interpreter timing of invoke(); `litert-benchmark` is the median that "
        + "ai-edge-litert's own tool reports for the same file and thread count (its CompiledModel front end). "
        + "Both ran back to back in this run; int8 calibration used 32 random inputs (latency does not depend on it).",
        "",
    ]
    header = ["recipe", "size KB", "bytes/param", "threads", "ours p50 ms", "ours p90 ms", "litert-benchmark p50 ms",
              "ours / theirs", f"within {tolerance:.0%}", "litert-benchmark fully delegated"]  # fmt: skip
    rows, all_within, mismatched_partial = [], True, []
    params = model.count_params()
    for name in MOBILENET_RECIPES:
        path = os.path.join(folder, f"{name}.tflite")
        tflite = get_recipe(name).apply(model, context)
        with open(path, "wb") as f:
            f.write(tflite)
        for t in threads:
            ours = measure_latency(path, threads=t, num_runs=num_runs, warmup_runs=warmup_runs)
            reference = litert_benchmark(path, threads=t, num_runs=num_runs, warmup_runs=warmup_runs)
            theirs = float(reference["latency"]["median_ms"])
            fully = "yes" if reference.get("fully_accelerated") else "no"
            ratio = ours.median_ms / theirs
            within = abs(ratio - 1) <= tolerance
            all_within &= within
            if not within and fully == "no":
                mismatched_partial.append(f"{name} at {t} thread(s)")
            rows.append([name, f"{len(tflite) / 1024:.0f}", f"{len(tflite) / params:.2f}", t,
                         f"{ours.median_ms:.3f}", f"{ours.p90_ms:.3f}", f"{theirs:.3f}", f"{ratio:.3f}",
                         "yes" if within else "NO", fully])  # fmt: skip
            progress(f"mobilenet_v2 {name} {t}t: ours {ours.median_ms:.3f} ms, litert-benchmark {theirs:.3f} ms")
    lines += [tabulate(rows, headers=header, tablefmt="github", disable_numparse=True), ""]
    lines.append(
        f"Every median within {tolerance:.0%} of litert-benchmark's: **{'yes' if all_within else 'no'}** "
        + f"({params:,} parameters)."
    )
    if mismatched_partial:
        lines += [
            "",
            "Where the two disagree by more than the tolerance ("
            + ", ".join(mismatched_partial)
            + "), litert-benchmark reports that its CompiledModel runtime did not delegate every op of the file "
            + "to XNNPACK (fully_accelerated false). The two front ends then split the graph differently and run "
            + "different kernels for part of it, so the gap is in what runs, not in how it is timed: the same "
            + "files agree at the thread counts marked yes.",
        ]
    return lines


def _speedups_section(work_dir, num_runs, warmup_runs, progress) -> list[str]:
    """Filter removal, distillation and pipelines on each built-in classifier, with the latency lab."""
    lines = [
        "## Real CPU speed-ups: filter removal, distillation and pipelines (mnist5k)",
        "",
        "Each built-in classifier trained on mnist5k and studied at 1 and 2 threads "
        + f"({warmup_runs} warm-up and {num_runs} timed runs per measurement). `channel_prune:K` keeps the fraction "
        + "K of every conv's filters (L1 norm; residual-joined convs as one group), rebuilds a narrower model and "
        + "fine-tunes it (3 epochs, or the `finetune_epochs` its spec gives); `channel_prune_sparse_int8` = "
        + "`channel_prune>prune>int8` (keep 0.5, then 80% "
        + "TFMOT sparsity, then full-integer quantization); `distill` trains the half-width student with the "
        + "teacher's soft targets (T=4, alpha 0.5) and, beside it, the same student from labels alone with the "
        + "same epochs, seed and optimizer. Accuracy is measured on each .tflite over the 1,000 test digits.",
        "",
    ]
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
        lines += [f"### {model} ({time.perf_counter() - start:.0f} s)", "", report.format_table(results, "github"), "",
                  "Latency lab:", "", report.format_lab_table(results, "github"), ""]  # fmt: skip
    lines += ["### Against the targets", ""]
    lines += speedup_checks(outcomes)
    any_results = next(iter(outcomes.values()))
    lines += ["", "Machine:", "", *report.lab_notes(any_results), ""]
    return lines


def _zoo_section(work_dir: str, progress: Callable[[str], None]) -> list[str]:
    """The latency zoo at its defaults (5 application models x 4 post-training modes, 224 px, 1 thread)."""
    config = zoo.ZooConfig(output_dir=os.path.join(work_dir, "zoo"))
    shutil.rmtree(config.output_dir, ignore_errors=True)
    env = zoo.environment(config.threads, config.peak_seconds)
    start = time.perf_counter()
    rows = zoo.run_zoo(config, progress=progress, env=env)
    wall_s = time.perf_counter() - start
    zoo.write_zoo(rows, config, env, wall_s)
    peak = env["peak"][str(config.threads[0])]
    return [
        "## Latency zoo (`python -m experiments.latency_zoo`)",
        "",
        f"tf_keras.applications models with random weights at {config.resolution}x{config.resolution}, "
        + f"{config.classes} classes, batch 1, {config.threads[0]} thread, {config.warmup_runs} warm-up and "
        + f"{config.num_runs} timed runs; {wall_s:.0f} s. Float32 matmul peak "
        + (f"{peak['peak_gflops']:.1f} GFLOP/s ({peak['method']})" if peak.get("peak_gflops") else "not measured")
        + f". {env['cpu_features']['note']}",
        "",
        zoo.zoo_table(rows),
        "",
        "int8 bytes per parameter (target <= 1.05 for models above 1 M parameters):",
        "",
        *[f"- {line}" for line in zoo.int8_size_check(rows)],
        "",
    ]


def kept_sections(path: str) -> dict[str, str]:
    """The sections of an earlier BENCHMARKS.md, by name, markers included (empty if there is none)."""
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return {m.group(1): m.group(0) for m in _MARK.finditer(f.read())}


def _section(name: str, body: list[str], env: dict, wall_s: float) -> str:
    """A section's lines under its title, with the line saying which run it comes from, between its markers."""
    title, rest = body[0], body[1:]
    run_line = (
        f"_Run of {datetime.date.today().isoformat()} on {env['cpu']}, {env['cpu_count']} cores; "
        + f"this section took {wall_s:.0f} s._"
    )
    text = "\n".join([title, "", run_line, *rest]).rstrip("\n") + "\n"
    return f"<!-- section: {name} -->\n{text}<!-- /section: {name} -->\n"


def _write(path: str, env: dict, sections: list[str]) -> None:
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python -m experiments.bench`; `--sections=NAME` re-runs only some sections and "
        + "keeps the others). Each section says which run it comes from; every ratio inside a section compares "
        + "numbers measured in that one run.",
        "",
        f"- Software: Python {env['python']}, TensorFlow {env['tensorflow']}, tf-keras {env['tf_keras']}, "
        + f"TFMOT {env['tensorflow_model_optimization']}, ai-edge-litert {env['ai_edge_litert']}, numpy {env['numpy']}",
        "",
    ]
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n" + "\n".join(sections))
    os.replace(tmp, path)


def run(
    sections: Iterable[str] = SECTIONS,
    output: str = "BENCHMARKS.md",
    work_dir: str = "runs/bench",
    num_runs: int = 200,
    warmup_runs: int = 20,
    threads: Iterable[int | str] = (1, 2),
    tolerance: float = 0.05,
    progress: Callable[[str], None] = _print,
) -> str:
    """Runs the chosen sections and writes ``output``, keeping the other sections an earlier file has.

    ``output`` is rewritten (atomically) after each finished section, so a run that stops later keeps it.

    Args:
      sections: names from SECTIONS to run; the file keeps them in SECTIONS order.
      output: the Markdown file to write (and to read the kept sections from).
      work_dir: where studies and .tflite files go.
      num_runs: timed runs per latency measurement (mobilenet, speedups).
      warmup_runs: untimed runs before timing (mobilenet, speedups).
      threads: thread counts of the MobileNetV2 comparison (strings, as the script's list flag gives them, or ints).
      tolerance: allowed relative gap to litert-benchmark's median.
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
        "mobilenet": lambda: _mobilenet_section(
            work_dir, [int(t) for t in threads], num_runs, warmup_runs, tolerance, progress
        ),
        "speedups": lambda: _speedups_section(work_dir, num_runs, warmup_runs, progress),
        "zoo": lambda: _zoo_section(work_dir, progress),
        "keras3": lambda: bench_keras3.keras3_section(work_dir, num_runs, warmup_runs, progress),
    }
    env = environment()
    kept = kept_sections(output)
    done = {}
    for name in SECTIONS:
        if name in chosen:
            progress(f"== {name} ==")
            start = time.perf_counter()
            body = builders[name]()
            done[name] = _section(name, body, env, time.perf_counter() - start)
            partial = {**kept, **done}  # each finished section is saved at once
            _write(output, env, [partial[n] for n in SECTIONS if n in partial])
        elif name in kept:
            done[name] = kept[name]
    _write(output, env, [done[n] for n in SECTIONS if n in done])
    progress(f"Wrote {output}")
    return output
