"""The advisor's files: advice.json, advice.md, pareto.png and pick.tflite, each written atomically."""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

from tabulate import tabulate

from tfcompress.study.cache import inside
from tfcompress.study.results import write_atomic

STAGES = {0: "post-training", 1: "repair (sensitivity)", 2: "training-time (sampler)"}


def write_all(advice: dict[str, Any], output_dir: str, study_dir: str) -> dict[str, str]:
    """Writes the four files (pick.tflite only when there is a pick); returns their paths."""
    paths = {"json": inside(output_dir, "advice.json"), "md": inside(output_dir, "advice.md"),
             "png": inside(output_dir, "pareto.png")}  # fmt: skip
    pick_path = inside(output_dir, "pick.tflite")
    if advice["pick"] is not None:
        source = inside(study_dir, advice["pick"]["tflite_path"])
        shutil.copyfile(source, pick_path + ".tmp")
        os.replace(pick_path + ".tmp", pick_path)
        advice["pick"]["file"] = "pick.tflite"
        paths["tflite"] = pick_path
    elif os.path.exists(pick_path):  # an earlier run's pick must not pass for this one's
        os.remove(pick_path)
    write_atomic(paths["json"], json.dumps(advice, indent=2, default=str))
    write_atomic(paths["md"], to_markdown(advice))
    plot(advice, paths["png"])
    return paths


def _fig(fig: dict | None, key: str, fmt: str) -> str:
    value = (fig or {}).get(key)
    return "" if value is None else format(value, fmt)


def _latency(fig: dict | None) -> str:
    if not fig or fig.get("latency_ms") is None:
        return ""
    ci = fig.get("latency_ci_ms") or [None, None]
    if ci[0] is None:
        return f"{fig['latency_ms']:.3f}"
    return f"{fig['latency_ms']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def _table(trials: list[dict], unit: str) -> str:
    headers = ["trial", "stage", "spec", "outcome", f"drop ({unit})", "size KB", "size x fp32", "gzip KB",
               "gzip x fp32", "p50 ms", "why"]  # fmt: skip
    cells = [[t["number"], t["stage"], f"`{t['spec']}`", t["status"], _fig(t["figures"], "drop", "+.2f"),
              _fig(t["figures"], "size_kb", ".1f"), _fig(t["figures"], "size_x", ".3f"),
              _fig(t["figures"], "gzip_kb", ".1f"), _fig(t["figures"], "gzip_x", ".3f"), _latency(t["figures"]),
              t["reason"] or ""] for t in trials]  # fmt: skip
    return tabulate(cells, headers=headers, tablefmt="github", disable_numparse=True)


def to_markdown(advice: dict[str, Any]) -> str:
    unit = advice["metric"]["drop_unit"]
    c = advice["constraints"]
    limits = [f"{k} = {v:g}" for k, v in c.items() if k != "objective" and v is not None]
    lines = [f"# Advice: {advice['task']} ({advice['model']})", "",
             f"Limits: {', '.join(limits) or 'none'}; objective: {c['objective']}. Drops are in {unit} of "
             + f"{advice['metric']['name']} against fp32's {advice['fp32']['metric']:.4f}, measured on each .tflite; "
             + f"latency is the median at {advice['threads']} thread(s) ({advice['runtime']}) with its 95% interval.",
             ""]  # fmt: skip
    pick = advice["pick"]
    if pick:
        f = pick["figures"]
        lines += ["## The pick", "", f"`{pick['spec']}` (trial {pick['number']}, stage {pick['stage']}): "
                  + f"{advice['metric']['name']} {f['metric']:.4f} ({f['drop']:+.2f} {unit}), {f['size_kb']:.1f} KB "
                  + f"({f['size_x']:.3f}x fp32), gzip {f['gzip_kb']:.1f} KB ({f['gzip_x']:.3f}x), "
                  + f"{_latency(f) or '?'} ms. File: pick.tflite.", "", f"Why: {pick['why']}", ""]  # fmt: skip
        r = pick.get("remeasured")
        if r:
            verdict = "still meets every limit" if r["meets_limits"] else f"no longer meets the limits: {r['misses']}"
            lines += [f"Re-measured on its own with {r['rounds']} latency rounds: {_latency(r['figures'])} ms; it "
                      + f"{verdict}.", ""]  # fmt: skip
        lines += [f"Reproduce it with `python -m experiments.study {advice['reproduce']}` and the same task, model "
                  + "and data flags.", ""]  # fmt: skip
    else:
        lines += ["## No recipe meets the limits", ""]
        if advice["closest"]:
            near = advice["closest"]
            lines += [f"The closest is trial {near['number']}, `{near['spec']}`: {near['misses_by']}.", ""]
    if advice["front"]:
        lines += ["## The Pareto front (feasible trials, objective against drop)", "",
                  _table(advice["front"], unit), ""]  # fmt: skip
    lines += ["## Every trial, in the order it ran", "",
              "Stages: " + "; ".join(f"{k} {v}" for k, v in STAGES.items()) + ".", "",
              _table(advice["trials"], unit), ""]  # fmt: skip
    for note in advice["notes"]:
        lines.append(f"- {note}")
    lines += ["", f"{advice['trials_run']} trials run in {advice['search_s'] or 0:.0f} s of search "
              + f"({advice['wall_s']:.0f} s this run). Every trial's row is in study/results.json.", ""]  # fmt: skip
    return "\n".join(lines)


def plot(advice: dict[str, Any], path: str) -> None:
    """Metric drop against size and against latency: every measured trial, the feasible region, the pick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = advice["constraints"]
    unit = advice["metric"]["drop_unit"]
    measured = [t for t in advice["trials"] if t["figures"] and t["status"] != "duplicate"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    size_key = "gzip_kb" if c["objective"] == "gzip" or c.get("max_gzip_kb") else "size_kb"
    panels = [(axes[0], size_key, c.get("max_" + size_key), "gzipped KB" if size_key == "gzip_kb" else "size KB"),
              (axes[1], "latency_ms", c.get("max_latency_ms"), "median latency (ms)")]  # fmt: skip
    for ax, key, limit, label in panels:
        for t in measured:
            x, y = t["figures"].get(key), t["figures"].get("drop")
            if x is None or y is None:
                continue
            ax.scatter(x, y, c="tab:green" if t["status"] == "feasible" else "tab:gray", s=24)
            ax.annotate(str(t["number"]), (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
        if advice["pick"]:
            p = advice["pick"]["figures"]
            if p.get(key) is not None:
                ax.scatter(p[key], p["drop"], marker="*", s=260, c="tab:red", label=f"pick: {advice['pick']['spec']}")
                ax.legend(fontsize=7, loc="upper right")
        if c.get("max_drop") is not None:
            ax.axhspan(ax.get_ylim()[0], c["max_drop"], color="tab:green", alpha=0.08)
            ax.axhline(c["max_drop"], color="tab:green", lw=0.8)
        if limit is not None:
            ax.axvline(limit, color="tab:green", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"{advice['metric']['name']} drop vs fp32 ({unit}; lower is better)")
    fig.suptitle("Advisor trials (numbers as in advice.md; green: feasible; shaded: within max_drop)")
    fig.tight_layout()
    fig.savefig(path + ".tmp.png", dpi=110)
    os.replace(path + ".tmp.png", path)
    plt.close(fig)
