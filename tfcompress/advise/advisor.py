"""``advise``: from limits ("at most 1 point worse, under 2 ms") to the file to ship, with the front and reasons.

The stages (tfcompress.advise.space) run through one Search
(tfcompress.advise.search); then the pick, the feasible trial best on the
objective, is re-measured on its own with the study's full latency rounds,
and advice.json, advice.md, pareto.png and pick.tflite are written
(tfcompress.advise.output).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from typing import Any

from tfcompress import loading
from tfcompress.advise import constraints as c_lib
from tfcompress.advise import output, space
from tfcompress.advise.search import Search, SearchOptions
from tfcompress.study import timing
from tfcompress.study.cache import prepare_output_dir
from tfcompress.study.config import StudyConfig
from tfcompress.study.environment import environment
from tfcompress.study.results import Results, Row


def advise(
    config: StudyConfig,
    limits: c_lib.Constraints,
    options: SearchOptions | None = None,
    progress: Callable[[str], None] | None = None,
    *,
    model=None,
    dataset=None,
) -> dict[str, Any]:
    """Searches recipes for the file that meets ``limits`` best on their objective, and writes the advice.

    Args:
      config: the study's configuration (task, model, data, measurement; its recipes are ignored).
      limits: the constraints and the objective.
      options: trials, time budget, resume (SearchOptions).
      progress: called with one line per step.
      model, dataset: objects instead of the config's model and data, as in tfcompress.run_study.

    Returns:
      The advice, as saved in OUTPUT_DIR/advice.json: ``pick`` (None when no trial meets the limits,
      ``closest`` then names the nearest one), ``front``, ``trials``, ``stages``.
    """
    options = options or SearchOptions()
    progress = progress or (lambda _: None)
    prepare_output_dir(config.output_dir)
    began = time.monotonic()
    search = Search(config, limits, options, progress, model, dataset)
    progress(f"Advising on {config.task} ({config.model}): {limits.describe()}; objective: {limits.objective}.")
    search.baseline()
    prepared = search.prepared()
    trainable = prepared.model.trainable is not None and not isinstance(prepared.model.model, loading.TFLiteModel)
    convolutional = trainable and _removes_filters(prepared.model.trainable)
    notes = []
    if 0 in options.stages:
        search.fixed(list(space.POST_TRAINING), stage=0)
        best = _best(search)
        if best is not None and _cannot_improve(best, limits):
            spec = best.user_attrs["spec"]
            notes.append(f"Stage 0 ended the search: {spec} meets every limit and {limits.objective} cannot improve.")
    if not notes and 1 in options.stages and not search.out_of_budget():
        for t in list(search.trials()):
            if t.user_attrs["stage"] == 0 and set(_misses(t, limits)) == {"drop"}:
                search.fixed(space.repairs(t.user_attrs["spec"]), stage=1)
    if not notes and 2 in options.stages and not search.out_of_budget():
        if trainable:
            export = _best(search, among=space.EXPORTS)
            search.sampled(convolutional, export.user_attrs["spec"] if export is not None else "int8")
        else:
            notes.append(
                f"Stage 2 skipped: training-time recipes need a Keras model ({prepared.model.why_not_trainable})."
            )
    stop = search.out_of_budget()
    if stop:
        notes.append(f"The search stopped: {stop}.")
    search.save_elapsed()
    advice = _advice(search, limits, notes, time.monotonic() - began)
    if advice["pick"] is not None:
        advice["pick"]["remeasured"] = _remeasure(search, advice["pick"], prepared.dataset, limits, progress)
    output.write_all(advice, config.output_dir, search.study_dir)
    return advice


def _removes_filters(model) -> bool:
    """Whether channel_prune can narrow this model (the sampler offers filter removal only then)."""
    from tfcompress.recipes.base import NotApplicable
    from tfcompress.recipes.channel_prune import prune_channels

    try:
        prune_channels(model, 0.5)
    except NotApplicable:
        return False
    return True


def _misses(t, limits) -> dict:
    fig = t.user_attrs.get("figures")
    return c_lib.misses(fig, limits) if fig else {"run": math.inf}


def _best(search: Search, among=None):
    """The feasible trial best on the objective (None when none is feasible), of the specs ``among`` if given."""
    best = None
    for t in search.trials():
        if among is not None and t.user_attrs.get("spec") not in among:
            continue
        if t.user_attrs.get("status") == "feasible" and (
            best is None or c_lib.better(t.user_attrs["figures"], best.user_attrs["figures"], search.limits)
        ):
            best = t
    return best


def _cannot_improve(best, limits: c_lib.Constraints) -> bool:
    """Whether no later stage can beat a feasible trial on the objective.

    Only for ``metric`` (no loss at all against fp32) and ``latency`` (the file is overhead-bound). Training-time
    recipes can always shrink a file further, so ``size`` and ``gzip`` never end the search here.
    """
    fig = best.user_attrs["figures"]
    if limits.objective == "metric":
        return fig.get("drop") is not None and fig["drop"] <= 0
    if limits.objective == "latency":
        return bool(fig.get("overhead_bound"))
    return False


def _trial_record(t) -> dict[str, Any]:
    a = t.user_attrs
    return {"number": t.number, "spec": a.get("spec"), "stage": a.get("stage"), "status": a.get("status"),
            "reason": a.get("reason"), "figures": a.get("figures"), "tflite_path": a.get("tflite_path"),
            "duplicate_of": a.get("duplicate_of")}  # fmt: skip


def _advice(search: Search, limits: c_lib.Constraints, notes: list[str], wall_s: float) -> dict[str, Any]:
    trials = [_trial_record(t) for t in search.trials()]
    best = _best(search)
    unit = c_lib.drop_unit(search.metric)
    pick = closest = None
    if best is not None:
        pick = _trial_record(best) | {"why": _why(best, trials, limits)}
    else:
        measured = [t for t in trials if t["figures"] and t["status"] != "duplicate"]
        if measured:
            near = min(measured, key=lambda t: c_lib.closeness(t["figures"], limits))
            closest = near | {"misses_by": c_lib.describe_misses(near["figures"], limits, unit)}
    front = [_trial_record(t) for t in search.study.best_trials if t.user_attrs.get("status") == "feasible"]
    base = search.base
    return {
        "task": search.config.task,
        "model": search.config.model,
        "metric": search.metric | {"drop_unit": unit},
        "constraints": limits.to_dict(),
        "threads": search.threads,
        "runtime": search.runtime,
        "fp32": {
            "metric": base["metric"],
            "size_kb": base["size_bytes"] / 1024,
            "gzip_kb": base["gzip_bytes"] / 1024,
            "latency_ms": (base.get("latency") or [{}])[0].get("median_ms"),
        },  # fmt: skip
        "pick": pick,
        "closest": closest,
        "front": sorted(front, key=lambda t: c_lib.objective_values(t["figures"], limits)),
        "trials": trials,
        "notes": notes,
        "search_s": search.study.user_attrs.get("elapsed_s"),
        "wall_s": wall_s,
        "trials_run": search.ran(),
        "reproduce": f"--recipes={pick['spec']}" if pick else None,
    }


def _why(best, trials: list[dict], limits: c_lib.Constraints) -> str:
    fig = best.user_attrs["figures"]
    feasible = [t for t in trials if t["status"] == "feasible" and t["number"] != best.number]
    key = {"size": "size_kb", "gzip": "gzip_kb", "latency": "latency_ms", "metric": "drop"}[limits.objective]
    word = {"size_kb": "size (KB)", "gzip_kb": "gzipped size (KB)", "latency_ms": "latency (ms)", "drop": "drop"}[key]
    text = f"It meets every limit ({limits.describe()}) and has the lowest {word} of the {len(feasible) + 1} feasible"
    text += " trials"
    if feasible:
        runner_up = min(feasible, key=lambda t: c_lib.objective_values(t["figures"], limits))
        text += (
            f"; the next best is trial {runner_up['number']} ({runner_up['spec']}) at {runner_up['figures'][key]:.4g}"
        )
    return text + f" against {fig[key]:.4g}."


def _remeasure(search: Search, pick: dict, dataset, limits: c_lib.Constraints, progress) -> dict[str, Any]:
    """The pick timed again on its own, with the study's own latency rounds; whether it still meets the limits."""
    row = Row.from_dict(copy.deepcopy(search.rows[pick["spec"]]))
    row.latency = []
    config = search.config.replace(output_dir=search.study_dir)
    scratch = Results(config=config.to_dict(), environment=environment(), columns=[], metrics={})
    progress(f"Re-measuring the pick ({pick['spec']}) with {config.measure.rounds} latency rounds ...")
    timing.time_rows(config, scratch, [row], dataset, progress)
    fig = c_lib.figures(row.to_dict(), search.base, search.metric, search.threads, search.runtime)
    missed = c_lib.misses(fig, limits)
    return {"figures": fig, "meets_limits": not missed, "rounds": config.measure.rounds,
            "misses": c_lib.describe_misses(fig, limits, c_lib.drop_unit(search.metric)) or None}  # fmt: skip


__all__ = ["advise"]
