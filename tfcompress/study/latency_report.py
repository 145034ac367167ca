"""The latency half of a study's report: median cells with their intervals, speed-ups, and the latency lab."""

from __future__ import annotations

from tabulate import tabulate

from tfcompress.measure.latency import RUNTIMES, scaling_efficiency
from tfcompress.measure.peak import roofline
from tfcompress.measure.stats import paired_ratio_interval, ratio_interval
from tfcompress.study.results import Results, Row


def fmt(value, spec: str, suffix: str = "") -> str:
    """A table cell: ``value`` in ``spec`` with ``suffix``, or empty for None."""
    return "" if value is None else f"{value:{spec}}{suffix}"


def latency_settings(results: Results) -> list[tuple[int, str]]:
    """Every (threads, runtime) measured in any row: by thread count, then in RUNTIMES order."""
    found = {(s.threads, s.runtime) for r in results.rows for s in r.latency}
    return sorted(found, key=lambda tr: (tr[0], RUNTIMES.index(tr[1]) if tr[1] in RUNTIMES else len(RUNTIMES)))


def setting_label(threads: int, runtime: str, several_runtimes: bool) -> str:
    return f"{threads}t, {runtime}" if several_runtimes else f"{threads}t"


def p50_cell(stats) -> str:
    """'0.643 ±1.2%' (the median and its 95% interval's half-width), ' overhead' when overhead-bound."""
    if stats is None or stats.median_ms is None:
        return ""
    text = f"{stats.median_ms:.3f}"
    if stats.half_width is not None:
        text += f" ±{stats.half_width:.1%}"
    if stats.overhead_bound:
        text += " overhead"
    return text


def speedup(base_stats, stats) -> tuple[float, float | None, float | None] | None:
    """fp32's median over the row's, with a 95% interval: paired round by round when both were timed in the same
    interleaved rounds (tfcompress.measure.stats.paired_ratio_interval), else from the two medians' intervals."""
    if base_stats is None or stats is None or not base_stats.median_ms or not stats.median_ms:
        return None
    ratio = base_stats.median_ms / stats.median_ms
    a, b = base_stats.round_medians_ms, stats.round_medians_ms
    if len(a) == len(b) >= 2 and min(a + b) > 0:  # timed in the same interleaved rounds: compare round by round
        return paired_ratio_interval(a, b, ratio)
    if base_stats.interval and stats.interval and min(*base_stats.interval, *stats.interval) > 0:
        return ratio_interval(base_stats.interval, stats.interval)
    return base_stats.median_ms / stats.median_ms, None, None


def speedup_cell(base_stats, stats) -> str:
    """'1.23x', or '1.02x noise' when the speed-up's interval holds 1.00x (no measurable change)."""
    value = speedup(base_stats, stats)
    if value is None:
        return ""
    ratio, low, high = value
    noise = low is not None and low <= 1.0 <= high
    return f"{ratio:.2f}x" + (" noise" if noise else "")


def _roofline(row: Row, stats, results: Results) -> tuple[float | None, float | None, str]:
    """(GFLOP/s, roofline fraction, which roof) of one latency: as measured, or from an older file's peak."""
    if stats is None:
        return None, None, ""
    if stats.gflops is not None or stats.roof is not None:
        roof = f"{stats.roof} {stats.roof_gflops:.0f}" if stats.roof_gflops else (stats.roof or "")
        return stats.gflops, stats.roofline, roof
    entry = (results.environment.get("peak") or {}).get(str(stats.threads)) or {}
    peak = entry.get("peak_gflops")  # results.json of a version that divided by a numpy float32 matmul peak
    if not row.macs or not stats.median_ms:
        return None, None, ""
    gflops, fraction = roofline(row.macs, stats.median_ms, peak)
    return gflops, fraction, f"numpy fp32 {peak:.0f}" if peak else ""


def _undelegated(stats) -> str:
    if stats is None or stats.delegated_ops is None:
        return ""
    if not stats.undelegated:
        return "none"
    return ", ".join(f"{name} x{count}" for name, count in sorted(stats.undelegated.items()))


def lab_table(results: Results) -> tuple[list[str], list[list[str]]]:
    """The latency lab: what explains each row's latency.

    Work (MACs counted from the .tflite graph) and the GFLOP/s achieved at the
    median latency of the first setting (fewest threads, first runtime), as a
    fraction of the roof of the data type the row's heaviest ops run in (the
    best GFLOP/s of the study's compute-bound synthetic files of that type,
    same runtime and threads; ``roof`` names it and its GFLOP/s); start-up
    (``init ms``: runtime and XNNPACK set-up; ``first invoke ms``); the
    measuring process's peak memory and threads; how many ops XNNPACK took
    and which it left to LiteRT's default kernels; and, when several thread
    counts were timed, the scaling efficiency (the speed-up over the fewest
    threads divided by the thread ratio; 1.0 is perfect).
    """
    timed = latency_settings(results)
    t0, runtime0 = timed[0] if timed else (1, RUNTIMES[0])
    threads = sorted({t for t, _ in timed})
    label = setting_label(t0, runtime0, len({r for _, r in timed}) > 1)
    multi_model = len({r.model for r in results.rows}) > 1
    headers = (["model"] if multi_model else []) + [
        "recipe",
        "MMACs",
        f"GFLOP/s ({label})",
        "roof GFLOP/s",
        f"roofline ({label})",
        "init ms",
        "first invoke ms",
        "peak RSS MB",
        "threads in process",
        "XNNPACK ops",
        "left to default kernels",
    ]
    headers += [f"scaling ({t}t)" for t in threads[1:]]
    cells = []
    for row in results.rows:
        if not row.ok:
            continue
        stats = row.latency_at(t0, runtime0)
        gflops, fraction, roof = _roofline(row, stats, results)
        if stats and stats.delegated_ops is not None:
            delegated = f"{stats.delegated_ops}/{stats.total_ops}"
        elif stats and stats.fully_accelerated is not None:
            delegated = "all" if stats.fully_accelerated else "not all"
        else:
            delegated = ""
        line = ([row.model] if multi_model else []) + [
            row.recipe,
            fmt(row.macs and row.macs / 1e6, ".2f"),
            fmt(gflops, ".1f"),
            roof,
            fmt(fraction, ".0%"),
            fmt(stats and stats.init_ms, ".1f"),
            fmt(stats and stats.first_invoke_ms, ".2f"),
            fmt(stats and stats.peak_rss_mb, ".0f"),
            fmt(stats and stats.os_threads, "d"),
            delegated,
            _undelegated(stats),
        ]
        if len(threads) > 1:
            same_runtime = [s for s in row.latency if s.runtime == runtime0]
            efficiency = scaling_efficiency(same_runtime) if same_runtime else {}
            line += [fmt(efficiency.get(t), ".2f") for t in threads[1:]]
        cells.append(line)
    return headers, cells


def format_lab_table(results: Results, fmt: str = "github") -> str:
    headers, cells = lab_table(results)
    return tabulate(cells, headers=headers, tablefmt=fmt, disable_numparse=True)


def lab_notes(results: Results) -> list[str]:
    """What the machine could do, in words: the roof of each data type, the timing loop's overhead, int8 support."""
    env = results.environment
    lines = []
    peak = env.get("peak") or {}
    if peak and all(str(k).isdigit() for k in peak):  # an older results.json: one numpy float32 matmul peak
        for t, entry in sorted(peak.items(), key=lambda kv: int(kv[0])):
            if entry.get("peak_gflops"):
                lines.append(f"- float32 matmul peak at {t} thread(s): {entry['peak_gflops']:.1f} GFLOP/s.")
    else:
        for dtype, by_threads in peak.items():
            for t, by_runtime in sorted(by_threads.items(), key=lambda kv: int(kv[0])):
                for runtime, entry in by_runtime.items():
                    if entry.get("gflops"):
                        lines.append(f"- {dtype} roof at {t} thread(s), {runtime}: {entry['gflops']:.1f} GFLOP/s "
                                     + f"({entry['shape']}).")  # fmt: skip
    for runtime, by_threads in (env.get("overhead") or {}).items():
        for t, entry in sorted(by_threads.items(), key=lambda kv: int(kv[0])):
            lines.append(f"- timing-loop overhead at {t} thread(s), {runtime}: {entry['median_ms'] * 1000:.1f} us "
                         + "per run (a one-ADD model); rows within 5x of it are marked overhead.")  # fmt: skip
    load = env.get("timing_load") or {}
    if load.get("max_load_avg") is not None and load["max_load_avg"] > (load.get("cores") or 0):
        lines.append(f"- the machine was busy while timing (1-minute load average up to {load['max_load_avg']:.1f} "
                     + f"on {load['cores']} cores): other work shared the cores, and multi-threaded latencies "
                     + "suffer most (two thread pools then wait on each other).")  # fmt: skip
    note = (env.get("cpu_features") or {}).get("note")
    if note:
        lines.append(f"- {note}")
    return lines
