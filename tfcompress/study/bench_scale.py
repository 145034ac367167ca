"""The bench's ``scale`` section: the default study with ``--jobs`` and on Ray, back to back.

Three runs of the default study (cnn on mnist5k, every default recipe), each from an empty output folder
with the trained model read from one shared cache (trained once before, not timed):

- ``--jobs=1``: one recipe process at a time (what every study did before ``--jobs``);
- the default (``--jobs`` = the number of cores);
- ``--executor=ray`` on a 2-node Ray cluster started on this machine (``ray.cluster_utils.Cluster``, one CPU
  per node, loopback addresses only), the latency phase on the head node;

then ``prune`` alone, fine-tuned by 2 workers (``--strategy=multi_worker``), against the ``--jobs=1`` study's
``prune`` row (target: sparsity 0.80 +- 0.01, accuracy within 1 point); then the default CNN's fine-tuning
alone and two at once (``side_by_side``), which is what bounds the speed-up of the rows.

Checks: the speed-up of the default over ``--jobs=1`` (target >= 1.6x), every row's size unchanged and its
metric inside the ``--jobs=1`` row's 95% interval, and the Ray rows equal to the local ones.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from tfcompress.study import bench_render as md
from tfcompress.study import runner
from tfcompress.study.config import from_flat
from tfcompress.study.executor import CpuSlots, job_env
from tfcompress.study.results import Results


def _study(out: str, cache: str, progress, **flat) -> tuple[Results, float]:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    results = runner.run(from_flat(output_dir=out, cache_dir=cache, **flat), progress=progress)
    return results, time.perf_counter() - start


def compare(reference: Results, other: Results) -> dict:
    """Row by row: sizes equal, and the other run's metric inside the reference row's 95% interval."""
    sizes, metrics = [], []
    for a, b in zip(reference.rows, other.rows, strict=True):
        if not (a.ok and b.ok):
            sizes.append((a.recipe, a.status.value == b.status.value))
            continue
        sizes.append((a.recipe, a.size_bytes == b.size_bytes))
        low, high = a.metric_ci or (a.metric, a.metric)
        metrics.append((a.recipe, low - 1e-12 <= b.metric <= high + 1e-12))
    return {"sizes_equal": all(ok for _, ok in sizes), "size_misses": [r for r, ok in sizes if not ok],
            "metrics_within": all(ok for _, ok in metrics),
            "metric_misses": [r for r, ok in metrics if not ok]}  # fmt: skip


def _table(serial: Results, parallel: Results, on_ray: Results | None) -> dict:
    headers = ["recipe", "size B (jobs=1)", "size B (jobs=2)", "metric (jobs=1) [95%]", "metric (jobs=2)"]
    headers += ["size B (ray)", "metric (ray)", "built on (ray)"] if on_ray else []
    cells = []
    for i, a in enumerate(serial.rows):
        b = parallel.rows[i]
        ci = f" [{a.metric_ci[0]:.4f}, {a.metric_ci[1]:.4f}]" if a.metric_ci else ""
        row = [f"`{a.recipe}`", str(a.size_bytes or a.status.value), str(b.size_bytes or b.status.value),
               f"{a.metric:.4f}{ci}" if a.metric is not None else "",
               f"{b.metric:.4f}" if b.metric is not None else ""]  # fmt: skip
        if on_ray:
            c = on_ray.rows[i]
            node = (c.extras.get("built_on") or {}).get("node_id", "")[:8]
            row += [str(c.size_bytes or c.status.value), f"{c.metric:.4f}" if c.metric is not None else "", node]
        cells.append(row)
    return md.table(headers, cells)


def verdicts(t_serial: float, t_parallel: float, jobs: int, same: dict, t_ray: float | None, ray_same: dict | None,
             nodes: int) -> list[str]:  # fmt: skip
    """The section's acceptance lines."""
    speedup = t_serial / t_parallel
    lines = [
        f"Default study, `--jobs=1` {t_serial:.0f} s, default (`--jobs={jobs}`) {t_parallel:.0f} s: {speedup:.2f}x "
        + f"faster (target >= 1.6x): **{'yes' if speedup >= 1.6 else 'no'}**.",
        "Every row's size unchanged: " + ("**yes**." if same["sizes_equal"] else f"**no**: {same['size_misses']}."),
        "Every row's metric inside the `--jobs=1` row's 95% interval: "
        + ("**yes**." if same["metrics_within"] else f"**no**: {same['metric_misses']}."),
    ]
    if t_ray is not None and ray_same is not None:
        ok = ray_same["sizes_equal"] and ray_same["metrics_within"]
        lines.append(f"`--executor=ray` on a {nodes}-node local cluster (1 CPU per node) {t_ray:.0f} s, "
                     + f"`--executor=local` {t_parallel:.0f} s; the same rows as local: **{'yes' if ok else 'no'}**"
                     + ("." if ok else f" (sizes: {ray_same['size_misses']}, "
                                       + f"metrics: {ray_same['metric_misses']})."))  # fmt: skip
    return lines


def where_line(serial: Results, parallel: Results, jobs: int) -> str:
    """Where each study's time went (results.environment["phase_s"]), and what that bounds the speed-up at.

    The latency phase runs alone by design, so it and the preparing bound the gain: even rows built twice as
    fast would leave them as they are.
    """
    a, b = serial.environment.get("phase_s") or {}, parallel.environment.get("phase_s") or {}
    if not {"prepare", "rows", "latency"} <= set(a) & set(b):
        return "Where the time went: not recorded (results.json has no phase_s)."
    built_a, built_b = (sum(r.convert_s or 0.0 for r in x.rows) for x in (serial, parallel))
    total = sum(a.values())
    line = (
        f"Where the time went (`--jobs=1` / `--jobs={jobs}`): preparing {a['prepare']:.0f} / {b['prepare']:.0f} s, "
        + f"the rows {a['rows']:.0f} / {b['rows']:.0f} s ({a['rows'] / b['rows']:.2f}x), the latency phase "
        + f"{a['latency']:.0f} / {b['latency']:.0f} s (alone, by design). Even rows built twice as fast would make "
        + f"the study at most {total / (total - a['rows'] / 2):.2f}x faster."
    )
    if built_a and built_b:
        line += (
            f" The rows' transforms and conversions (their convert_s, summed) took {built_a:.0f} s one at a time "
            + f"and {built_b:.0f} s side by side: each ran {built_b / built_a:.2f}x longer with a share of the "
            + f"cores, so {jobs} at once did {jobs * built_a / built_b:.2f}x the work of one."
        )
    return line


def fit_epochs(epochs: int = 4) -> None:
    """A child's part of ``side_by_side``: fine-tunes the default CNN on mnist5k, prints each epoch's seconds."""
    from tfcompress import data, models
    from tfcompress._keras import keras

    dataset = data.load_mnist5k()
    model = models.build_cnn(dataset.x_train.shape[1:], dataset.num_classes)
    seconds: list[float] = []

    class Epochs(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.began = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.began)

    models.train(model, dataset, epochs=epochs, verbose=0, callbacks=[Epochs()])
    print(json.dumps(seconds))


def side_by_side() -> dict[str, float]:
    """Seconds per epoch of the default CNN's fine-tuning, alone and two at once, with the study's threads per job.

    Each process's figure is the median of its epochs after the first; two at once report their mean. Cases:
    ``alone`` (all the cores' threads, as ``--jobs=1``), ``alone_share`` (one job's share at ``--jobs=2``),
    ``two`` (two at that share, unpinned) and ``two_pinned`` (pinned apart, as ``--jobs=2`` runs them).
    """
    code = "from tfcompress.study.bench_scale import fit_epochs; fit_epochs()"
    out = {}
    for case, width, share_of, pin in (("alone", 1, 1, False), ("alone_share", 1, 2, False), ("two", 2, 2, False),
                                       ("two_pinned", 2, 2, True)):  # fmt: skip
        env = job_env(share_of)
        slots = CpuSlots(width, int(env["TFCOMPRESS_JOB_CPUS"])) if pin else None
        procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(width)]  # fmt: skip
        for i, proc in enumerate(procs):
            if slots:
                slots.pin(i, proc.pid)
        medians = []
        for proc in procs:
            stdout, stderr = proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"side_by_side {case}: the fine-tuning process failed: {stderr.strip()[-300:]}")
            medians.append(statistics.median(json.loads(stdout.strip().splitlines()[-1])[1:]))
        out[case] = statistics.fmean(medians)
    return out


def side_by_side_line(epoch_s: dict[str, float], jobs: int) -> str:
    """What two fine-tunings at once gain over one with every core (side_by_side's seconds per epoch)."""
    alone, share, two, pinned = (epoch_s[k] for k in ("alone", "alone_share", "two", "two_pinned"))
    return (
        f"Fine-tuning the default CNN on mnist5k, seconds per epoch (median after the first): alone {alone:.2f} s "
        + f"(`--jobs=1`'s threads), {share:.2f} s at one job's share of `--jobs={jobs}`; {jobs} side by side "
        + f"{two:.2f} s each unpinned, {pinned:.2f} s each pinned apart (as `--jobs={jobs}` runs them). "
        + f"{jobs} at once pinned do {jobs * alone / pinned:.2f}x the work of one alone; pinning saves "
        + f"{(1 - pinned / two) * 100:.0f}%."
    )


def multi_worker_line(single, multi, wall_s: float) -> str:
    """The multi_worker acceptance line: sparsity 0.80 +- 0.01 and accuracy within 1 point of one worker's."""
    if not multi.ok:
        return f"2-worker `--strategy=multi_worker` prune: {multi.status.value} ({multi.error}): **no**."
    sparsity, gap = multi.extras["sparsity"], (multi.metric - single.metric) * 100
    met = abs(sparsity - 0.8) <= 0.01 and abs(gap) <= 1.0
    return (
        "2-worker `--strategy=multi_worker` `prune` (0.8; global batch and learning rate x2): sparsity "
        + f"{sparsity:.4f}, accuracy {multi.metric:.4f} against one worker's {single.metric:.4f} ({gap:+.2f} pt), "
        + f"workers' weights equal: {multi.extras.get('workers_equal')}; {multi.extras.get('finetune_s', 0):.0f} s "
        + f"of fine-tuning, {single.extras.get('finetune_s', 0):.0f} s with one worker (study {wall_s:.0f} s). "
        + f"Target (0.80 +- 0.01, within 1 point): **{'yes' if met else 'no'}**."
    )


def scale_section(work_dir: str, progress: Callable[[str], None]) -> tuple[str, list[dict]]:
    """The section's title and blocks (see the module docstring)."""
    folder = os.path.join(work_dir, "scale")
    cache = os.path.join(folder, "models")
    progress("scale: training (or reading) the default model once ...")
    runner.run(from_flat(output_dir=os.path.join(folder, "warm"), cache_dir=cache, recipes=("fp32",), rounds=1),
               progress=progress)  # fmt: skip
    progress("scale: the default study with --jobs=1 ...")
    serial, t_serial = _study(os.path.join(folder, "jobs1"), cache, progress, jobs=1)
    progress("scale: the default study with the default --jobs ...")
    parallel, t_parallel = _study(os.path.join(folder, "jobs"), cache, progress)
    jobs = from_flat().run.parallel_jobs
    same = compare(serial, parallel)
    from tfcompress.study.ray_executor import local_cluster

    with local_cluster(nodes=2) as addresses:
        progress(f"scale: the default study with --executor=ray on a 2-node local cluster ({addresses}) ...")
        on_ray, t_ray = _study(os.path.join(folder, "ray"), cache, progress, executor="ray")
    ray_same = compare(parallel, on_ray)
    progress("scale: prune (0.8) fine-tuned by 2 workers (--strategy=multi_worker) ...")
    multi, t_multi = _study(os.path.join(folder, "multi_worker"), cache, progress, recipes=("prune",),
                            strategy="multi_worker", workers=2)  # fmt: skip
    lines = verdicts(t_serial, t_parallel, jobs, same, t_ray, ray_same, len(addresses))
    lines.append(where_line(serial, parallel, jobs))
    progress("scale: fine-tuning alone and side by side ...")
    lines.append(side_by_side_line(side_by_side(), jobs))
    lines.append(multi_worker_line({r.recipe: r for r in serial.rows}["prune"], multi.rows[-1], t_multi))
    blocks = [
        md.p(
            "The default study (cnn on mnist5k, every default recipe, 8 latency rounds) three times from an empty "
            + "output folder, its trained model read from one cache (trained once before; not timed). Each wall "
            + "time is the whole study: building and scoring the rows, then the latency phase, alone."
        ),  # fmt: skip
        md.bullets(lines),
        _table(serial, parallel, on_ray),
    ]
    return "Scaling out: --jobs and --executor=ray", blocks
