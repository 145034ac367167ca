"""The bench's ``advise`` section: the advisor's picks on four questions, with the wall time of each search.

- detection, ``--max_drop=1 --objective=gzip`` (target: gzip <= 0.08x fp32 within 1 point of mAP@.5);
- language, ``--max_drop=1 --objective=size`` (target: <= 0.37x fp32 within 1% of bits per char);
- classification (the default CNN), ``--max_drop=1 --objective=gzip`` (target: >= 100x smaller gzip);
- classification, ``--max_drop=1 --max_latency_ms=`` a tenth of fp32's median at 1 thread, ``--trials=16``
  (target: a feasible pick).

Each search runs into runs/bench/advise/<name> with ``resume``, so a bench stopped part-way keeps the searches
it finished (their journals) and continues the one it was in; the wall time shown is the search's own, summed
over the runs that made it (advice.json ``search_s``). Classification runs first: its fp32 latency sets the
fourth question's limit.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from tfcompress.advise import Constraints, SearchOptions, advise
from tfcompress.advise import output as advice_output
from tfcompress.study import bench_render as md
from tfcompress.study.config import from_flat

BATCH = 2  # stage-2 trials per batch: a time budget overshoots by at most one batch
SEARCHES = (  # name, task, limits, trials, time budget (s), target text
    ("classification_gzip", "classification", {"max_drop": 1.0, "objective": "gzip"}, 40, 2400,
     "gzip >= 100x smaller than fp32's"),
    ("classification_latency", "classification", {"max_drop": 1.0}, 16, 1200,
     "a feasible pick with latency <= a tenth of fp32's median (1 thread)"),
    ("language_size", "language", {"max_drop": 1.0, "objective": "size"}, 24, 1500,
     "size <= 0.37x fp32 within 1% of bits per char"),
    ("detection_gzip", "detection", {"max_drop": 1.0, "objective": "gzip"}, 24, 1800,
     "gzip <= 0.08x fp32 within 1 point of mAP@.5"),
)  # fmt: skip


def _met(name: str, advice: dict) -> bool:
    pick = advice["pick"]
    if pick is None:
        return False
    f = pick["figures"]
    return {
        "classification_gzip": f["gzip_x"] <= 0.01,
        "classification_latency": True,
        "language_size": f["size_x"] <= 0.37 and f["drop"] <= 1.0,
        "detection_gzip": f["gzip_x"] <= 0.08 and f["drop"] <= 1.0,
    }[name]


def verdict(name: str, target: str, advice: dict) -> str:
    """One line: the pick and its figures against the target, or the closest trial."""
    unit = advice["metric"]["drop_unit"]
    head = f"`{name}` ({advice['trials_run']} trials, {advice['search_s']:.0f} s of search): "
    pick = advice["pick"]
    if pick is None:
        near = advice["closest"]
        detail = f"; the closest was `{near['spec']}`: {near['misses_by']}" if near else ""
        return head + f"no recipe met the limits{detail}. Target ({target}): **no**."
    f, r = pick["figures"], pick.get("remeasured") or {}
    again = ""
    if r:
        again = f"; re-measured alone: {r['figures']['latency_ms']:.4f} ms, " + (
            "still meets the limits" if r["meets_limits"] else f"misses: {r['misses']}")  # fmt: skip
    return (head + f"`{pick['spec']}` (stage {pick['stage']}): {f['drop']:+.2f} {unit}, size {f['size_x']:.3f}x, "
            + f"gzip {f['gzip_x']:.4f}x fp32 ({1 / f['gzip_x']:.0f}x smaller), {f['latency_ms']:.4f} ms{again}. "
            + f"Target ({target}): **{'yes' if _met(name, advice) else 'no'}**.")  # fmt: skip


def _trial_table(advice: dict) -> dict:
    unit = advice["metric"]["drop_unit"]
    headers = ["trial", "stage", "spec", "outcome", f"drop ({unit})", "size x fp32", "gzip x fp32", "p50 ms"]
    cells = []
    for t in advice["trials"]:
        f = t["figures"] or {}
        cells.append([str(t["number"]), str(t["stage"]), f"`{t['spec']}`", t["status"],
                      "" if f.get("drop") is None else f"{f['drop']:+.2f}",
                      "" if f.get("size_x") is None else f"{f['size_x']:.3f}",
                      "" if f.get("gzip_x") is None else f"{f['gzip_x']:.4f}",
                      advice_output._latency(f)])  # fmt: skip
    return md.table(headers, cells)


def advise_section(work_dir: str, progress: Callable[[str], None]) -> tuple[str, list[dict]]:
    """The section's title and blocks (see the module docstring)."""
    folder = os.path.join(work_dir, "advise")
    blocks = [md.p(
        "Each search is `python -m experiments.advise` with the limits shown, the task's built-in model and data, "
        + f"3 latency rounds per trial and stage-2 batches of {BATCH}; the pick is then re-measured alone with the "
        + "study's 8 rounds. Every figure is measured on the .tflite: drops in points of accuracy and mAP@.5, in "
        + "percent of bits per char. Each search's advice.md lists every trial in the order it ran; here are the "
        + "picks, then each search's trials."
    )]  # fmt: skip
    lines, tables = [], []
    fp32_latency = None
    for name, task, limits, trials, budget, target in SEARCHES:
        limits = dict(limits)
        if name == "classification_latency":
            limits["max_latency_ms"] = round(fp32_latency / 10, 4)
            target += f" = {limits['max_latency_ms']} ms"
        progress(f"advise: {name} ({limits}, {trials} trials, {budget} s) ...")
        config = from_flat(task=task, output_dir=os.path.join(folder, name))
        advice = advise(config, Constraints(**limits), SearchOptions(trials=trials, time_budget_s=budget,
                                                                     batch=BATCH, resume=True), progress)  # fmt: skip
        if task == "classification" and fp32_latency is None:
            fp32_latency = advice["fp32"]["latency_ms"]
        lines.append(verdict(name, target, advice))
        tables += [md.h4(f"{name}: {', '.join(f'{k}={v}' for k, v in limits.items())}, --trials={trials}"),
                   _trial_table(advice)] + [md.p(n) for n in advice["notes"]]  # fmt: skip
    blocks += [md.bullets(lines), *tables]
    return "The advisor: the file to ship under a limit", blocks
