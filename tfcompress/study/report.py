"""Results -> comparison tables (tabulate), CSV, a Markdown report and PNG plots."""

from __future__ import annotations

import csv
import io
import os

from tabulate import tabulate

from tfcompress import recipes, tasks
from tfcompress.fields import Column
from tfcompress.measure import bootstrap
from tfcompress.measure.latency import RUNTIMES
from tfcompress.study.latency_report import (
    fmt,
    format_lab_table,
    lab_notes,
    latency_settings,
    p50_cell,
    setting_label,
    speedup_cell,
)
from tfcompress.study.results import Results, Row, write_atomic

TABLE_FORMATS = ("github", "csv", "latex", "latex_booktabs", "pipe", "simple", "grid", "plain", "tsv", "html")


def _ratio(value, base) -> float | None:
    if value is None or not base:
        return None
    return value / base


def metrics(results: Results) -> dict[str, tasks.Metric]:
    """How each metric of the rows is shown and compared: from results.json, else the task registry."""
    stored = {name: tasks.Metric.from_dict(d) for name, d in (results.metrics or {}).items()}
    for name in {r.metric_name for r in results.rows if r.metric_name} - set(stored):
        metric = tasks.metric(name)
        if metric is not None:
            stored[name] = metric
    return stored


def columns(results: Results) -> list[Column]:
    """The extra columns the rows carry: as results.json declares them, else every registered declaration."""
    if results.columns is not None:
        declared = [Column.from_dict(d) for d in results.columns]
    else:  # a results.json written before files declared their columns
        declared = tasks.all_columns() + recipes.pipeline.all_columns()
    return [c for c in declared if any(c.key in r.extras for r in results.rows)]


def _delta(row: Row, base: Row | None, known: dict[str, tasks.Metric]) -> str:
    """The change from fp32 and, for other rows, its 95% interval; ' noise' when that holds 0 (see to_markdown)."""
    if row.metric is None or base is None or base.metric is None:
        return ""
    metric = known.get(row.metric_name) or tasks.Metric(row.metric_name or "metric", True, False, "")
    if row is base or row.metric_delta_ci is None:
        return metric.delta(row.metric, base.metric)
    text = metric.delta(row.metric, base.metric, row.metric_delta_ci)
    return text + (" noise" if row.delta_within_noise else "")


def table(results: Results) -> tuple[list[str], list[list[str]]]:
    """The comparison table: headers and one row of cells per result row.

    Ratios (size, gzip) are relative to the same model's fp32 row; speed-up is
    fp32's median latency divided by the row's, at the same thread count and
    runtime ("noise" when its 95% interval holds 1.00x). A p50 cell is the
    median and its interval's half-width ("overhead" when overhead-bound).
    """
    timed = latency_settings(results)
    several = len({r for _, r in timed}) > 1
    multi_model = len({r.model for r in results.rows}) > 1
    metric_names = sorted({r.metric_name for r in results.rows if r.metric_name})
    metric_header = metric_names[0] if len(metric_names) == 1 else "metric"
    headers = (["model"] if multi_model else []) + [
        "recipe",
        "status",
        "size KB",
        "size x fp32",
        "gzip KB",
        "gzip x fp32",
        metric_header,
        "vs fp32",
        "agreement",
    ]
    for t, runtime in timed:
        label = setting_label(t, runtime, several)
        headers += [f"p50 ms ({label})", f"p90 ms ({label})", f"speed-up ({label})"]
    extra = columns(results)
    known = metrics(results)
    headers += [c.header for c in extra]
    headers.append("note")
    cells = []
    for row in results.rows:
        base = results.baseline(row.model, row.task)
        line = ([row.model] if multi_model else []) + [
            row.recipe,
            row.status.value,
            fmt(row.size_bytes and row.size_bytes / 1024, ".1f"),
            fmt(_ratio(row.size_bytes, base and base.size_bytes), ".3f"),
            fmt(row.gzip_bytes and row.gzip_bytes / 1024, ".1f"),
            fmt(_ratio(row.gzip_bytes, base and base.gzip_bytes), ".3f"),
            fmt(row.metric, ".4f"),
            _delta(row, base, known),
            fmt(row.agreement, ".4f"),
        ]
        for t, runtime in timed:
            stats = row.latency_at(t, runtime)
            base_stats = base.latency_at(t, runtime) if base else None
            speed = speedup_cell(base_stats, stats) if row is not base else fmt(stats and 1.0, ".2f", "x")
            line += [p50_cell(stats), fmt(stats and stats.p90_ms, ".3f"), speed]
        line += [c.format(row.extras.get(c.key)) for c in extra]
        note = row.error or ""
        line.append(note if len(note) <= 80 else note[:77] + "...")
        cells.append(line)
    return headers, cells


def format_table(results: Results, fmt: str = "github") -> str:
    """The comparison table as text in a tabulate format (or 'csv')."""
    headers, cells = table(results)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(headers)
        writer.writerows(cells)
        return buf.getvalue()
    if fmt not in TABLE_FORMATS:
        raise ValueError(f"Unknown table format {fmt!r}; choose one of: {', '.join(TABLE_FORMATS)}.")
    return tabulate(cells, headers=headers, tablefmt=fmt, disable_numparse=True)


def flat_rows(results: Results) -> list[dict]:
    """Rows as flat dicts, for CSV: latency spread into latency_<t>t_<stat> keys (the Interpreter's) and
    latency_<t>t_<runtime>_<stat> (another runtime's)."""
    flat = []
    for row in results.rows:
        d = row.to_dict()
        for name in ("layer_errors", "sensitivity", "layer_sensitivity"):
            d.pop(name, None)  # tables of their own (results.json), not cells
        for stats in d.pop("latency"):
            t, runtime = stats["threads"], stats.get("runtime", RUNTIMES[0])
            prefix = f"latency_{t}t" if runtime == RUNTIMES[0] else f"latency_{t}t_{runtime}"
            for key, value in stats.items():
                if key not in ("threads", "runtime"):
                    d[f"{prefix}_{key}"] = value
        flat.append({k: (v if not isinstance(v, (dict, list)) else repr(v)) for k, v in d.items()})
    return flat


def to_csv(results: Results) -> str:
    rows = flat_rows(results)
    fields = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def to_markdown(results: Results) -> str:
    """The report: what ran, on what machine, the table, and how to read it."""
    env = results.environment
    cfg = results.config
    measure = cfg.get("measure", cfg)  # results.json files before MeasureOptions kept these at the top
    lines = [
        "# tfcompress study report",
        "",
        f"Task `{cfg.get('task', '?')}`, model `{cfg.get('model', '?')}`, "
        + f"data `{cfg.get('data') or cfg.get('dataset', '?')}`.",
        f"Machine: {env.get('cpu', '?')}, {env.get('cpu_count', '?')} cores; TensorFlow {env.get('tensorflow', '?')}, "
        + f"LiteRT {env.get('ai_edge_litert', '?')}.",
        "",
        format_table(results, "github"),
        "",
        "How to read it:",
        "- size and gzip are of the .tflite file; `x fp32` is the ratio to the same model's fp32 file "
        + "(lower is smaller).",
        "- the metric is computed by running each .tflite in the LiteRT interpreter on the whole test split; "
        + "`vs fp32` is its change (percentage points for accuracy); `agreement` is the share of test examples "
        + "whose top-1 equals the fp32 model's.",
        "- `[low, high]` after a change is its 95% interval from a paired bootstrap: the test examples (images, "
        + f"text windows) are drawn with replacement {bootstrap.RESAMPLES:,} times, the same draws for the row "
        + "and for fp32, and the change is recomputed on each draw (seeded by the study's seed). `noise` marks "
        + "a change whose interval holds 0: the test split cannot tell it from no change (results.json: "
        + "`metric_delta_ci`, `delta_within_noise`; `metric_ci` is the interval of the metric itself).",
        "- latency is batch-1 inference time with XNNPACK on a real test example, in the LiteRT runtime the "
        + "column names (`interpreter`: `Interpreter.invoke()`, the default; `compiled_model`: LiteRT's "
        + "CompiledModel API, as litert-benchmark runs it), each round in a fresh child process: "
        + f"{measure.get('warmup_runs', '?')} warm-up runs, then at least {measure.get('num_runs', '?')} timed runs "
        + f"and {measure.get('min_time_s', '?')} s. The p50 is the median over {measure.get('rounds', '?')} rounds "
        + "taken at different times of the study, interleaved with the other rows' rounds; `±x%` is its 95% "
        + "interval's half-width (a bootstrap over rounds, then runs). `overhead` marks a median within 5x of "
        + "a one-ADD model's, where the timing loop, not the model, decides it. Speed-up is fp32's median "
        + "divided by the row's (above 1 is faster), with an interval paired round by round (both ran in the "
        + "same interleaved rounds); `noise` marks one whose interval holds 1.00x.",
        "- a `failed` row did not produce a number; its note gives the reason; a `not_applicable` row is a "
        + "recipe that cannot apply to this model, and its note says why.",
        "",
        "## Latency lab: what explains each latency",
        "",
        format_lab_table(results, "github"),
        "",
        "- MMACs: millions of multiply-accumulates per invoke, counted from the .tflite graph (convolutions, "
        + "fully-connected layers and matmuls). GFLOP/s = 2 x MACs / median latency; roofline is that as a "
        + "share of the roof of the data type most of the row's MACs run in (fp32, float16, dynamic_range, "
        + "int8, int16x8): the best GFLOP/s that compute-bound synthetic .tflite files of that type reach here, "
        + "timed in the same rounds with the same runtime and threads (results.json: `environment.peak`). A low "
        + "share means the time goes to overhead, memory or kernels that do not vectorize, not to arithmetic.",
        "- init ms: building the interpreter and applying XNNPACK; first invoke ms: the first call, before "
        + "warm-up; peak RSS MB: the measuring process's peak memory (about 45 MB of it is Python and LiteRT); "
        + "threads in process: its thread count after the runs (the Interpreter sizes both XNNPACK's pool and "
        + "its own kernels' pool to the thread count, so a partly delegated model runs more threads).",
        "- XNNPACK ops: ops the XNNPACK delegate took, of all ops in the graph; the others run on LiteRT's "
        + "default (reference or optimized builtin) kernels, usually slower, and every hand-off costs time.",
        *lab_notes(results),
    ]
    lines += layer_error_lines(results)
    for name, metric in sorted(metrics(results).items()):
        lines.append(f"- {name}: {metric.description}; {'higher' if metric.higher_is_better else 'lower'} is better.")
        lines += [f"- {note}" for note in metric.notes]
    lines += [f"- {c.note}" for c in columns(results) if c.note]
    return "\n".join(lines) + "\n"


WORST_LAYERS = 5


def layer_error_lines(results: Results) -> list[str]:
    """For each row with the LiteRT Quantizer's per-tensor errors, a short table of its worst tensors."""
    lines = []
    for row in results.rows:
        errors = row.extras.get("layer_errors") if row.ok else None
        if not errors:
            continue
        if not lines:
            lines += ["", "## Worst tensors of the LiteRT Quantizer's rows", "",
                      "Each tensor of the quantized file against the same tensor of the fp32 file, on "
                      + f"{errors[0].get('samples', '?')} calibration inputs (results.json `layer_errors` has "
                      + "every tensor). SNR = 10 log10(signal power / error power): higher is better."]  # fmt: skip
        table = [[e["tensor"][:60], e["kind"], e.get("dtype") or "", fmt(e["snr_db"], ".1f"), fmt(e["cosine"], ".4f"),
                  fmt(e["mse"], ".3g")] for e in errors[:WORST_LAYERS]]  # fmt: skip
        headers = ["tensor", "kind", "type", "SNR dB", "cosine", "MSE"]
        lines += ["", f"`{row.recipe}`:", "", tabulate(table, headers=headers, tablefmt="github")]
    return lines


def plot(results: Results, output_dir: str) -> list[str]:
    """Writes size_vs_metric.png and latency.png; returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in results.rows if r.ok and r.size_bytes is not None]
    if not ok:
        return []
    paths = []
    # Raw size shows quantization; gzipped size also shows what pruning and clustering gain.
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, key, label in ((axes[0], "size_bytes", ".tflite size (KB)"), (axes[1], "gzip_bytes", "gzipped (KB)")):
        for row in ok:
            if row.metric is not None and getattr(row, key):
                point = (getattr(row, key) / 1024, row.metric)
                ax.scatter(*point)
                ax.annotate(row.recipe, point, textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(ok[0].metric_name or "metric")
    fig.suptitle("Size vs quality per recipe (metric computed on each .tflite)")
    fig.tight_layout()
    paths.append(os.path.join(output_dir, "size_vs_metric.png"))
    _save_figure(fig, paths[-1])
    plt.close(fig)

    timed = latency_settings(results)
    if timed:
        several = len({r for _, r in timed}) > 1
        fig, ax = plt.subplots(figsize=(max(6, len(ok) * 0.9), 4))
        width = 0.8 / len(timed)
        for i, (t, runtime) in enumerate(timed):
            stats = [r.latency_at(t, runtime) for r in ok]
            medians = [s.median_ms if s else 0.0 for s in stats]
            errors = [
                [s.median_ms - s.ci_low_ms if s and s.interval else 0.0 for s in stats],
                [s.ci_high_ms - s.median_ms if s and s.interval else 0.0 for s in stats],
            ]  # the 95% interval of each median
            label = f"{t} thread(s)" + (f", {runtime}" if several else "")
            ax.bar([j + i * width for j in range(len(ok))], medians, width, yerr=errors, capsize=2, label=label)
        ax.set_xticks([j + width * (len(timed) - 1) / 2 for j in range(len(ok))])
        ax.set_xticklabels([r.recipe for r in ok], rotation=30, ha="right")
        medians = [r.latency_at(t, rt).median_ms for r in ok for t, rt in timed if r.latency_at(t, rt)]
        if medians and max(medians) > 20 * min(medians):  # one slow recipe would flatten the rest
            ax.set_yscale("log")
        ax.set_ylabel("median latency (ms)")
        ax.set_title("Batch-1 latency per recipe (LiteRT, XNNPACK)")
        ax.legend()
        fig.tight_layout()
        paths.append(os.path.join(output_dir, "latency.png"))
        _save_figure(fig, paths[-1])
        plt.close(fig)
    return paths


def _save_figure(fig, path: str) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    write_atomic(path, buf.getvalue())


def write_all(results: Results, output_dir: str) -> dict[str, str]:
    """Writes results.csv, report.md and the plots next to results.json."""
    paths = {
        "csv": os.path.join(output_dir, "results.csv"),
        "report": os.path.join(output_dir, "report.md"),
    }
    write_atomic(paths["csv"], to_csv(results))
    write_atomic(paths["report"], to_markdown(results))
    for p in plot(results, output_dir):
        paths[os.path.splitext(os.path.basename(p))[0]] = p
    return paths
