"""The order a study's jobs run in: up to a width at once, longest first, each after the job whose transform
prefix it reuses. The isolated and Ray executors (tfcompress.study.executor, .ray_executor) both run their
jobs through ``scheduled``; they differ only in how a job starts, how its end is waited for and how it is
stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Protocol, TypeVar

from tfcompress.recipes.base import BASELINE
from tfcompress.recipes.pipeline import Pipeline


class _Job(Protocol):
    """What scheduling reads of a job (tfcompress.study.executor.Job): its place in the study and its pipeline."""

    index: int
    pipeline: Pipeline


J = TypeVar("J", bound=_Job)
H = TypeVar("H")  # an executor's handle on a running job


def scheduled(
    jobs: Sequence[J],
    start: Callable[[J], H],
    wait_any: Callable[[dict[int, H]], int],
    stop: Callable[[H], object],
    width: int | None = None,
    started: Callable[[J], None] | None = None,
) -> Iterator[tuple[J, H]]:
    """Runs jobs through an executor's ``start``, up to ``width`` at once (None: no limit); yields each as it ends.

    With more than one at a time, the fp32 baseline (the reference of the others' comparisons) starts
    first, then the jobs with the most fine-tuning (expected_cost). A job
    that reuses an earlier job's transform prefix (prefix_dependencies) starts only once that job has
    ended. ``wait_any`` takes the running jobs' handles by job index and returns the index of one that
    has ended, waiting as needed; ``stop`` takes down a handle still running when the loop is left early
    (Ctrl-C, or the caller stopped: --fail_fast).
    """
    after = prefix_dependencies(jobs)
    pending, running, finished = list(jobs), {}, set()
    if width is None or width > 1:  # longest first; one at a time keeps the study's order
        costs = expected_costs(jobs)
        pending.sort(key=lambda job: (job.pipeline.name != BASELINE, -costs[job.index], job.index))
    try:
        while pending or running:
            for job in list(pending):
                if width is not None and len(running) >= width:
                    break
                if after.get(job.index) is not None and after[job.index] not in finished:
                    continue  # its transform prefix is being built by an earlier job
                pending.remove(job)
                if started:
                    started(job)
                running[job.index] = (job, start(job))
            done = wait_any({index: handle for index, (_, handle) in running.items()})
            finished.add(done)
            yield running.pop(done)
    finally:
        for _, handle in running.values():
            stop(handle)


def prefix_dependencies(jobs: Sequence[J]) -> dict[int, int]:
    """Job index -> the index of the earlier job it must wait for: the first one sharing its longest transform prefix.

    That job builds the prefix (and saves it in the TransformCache); later jobs sharing it read it, so a job
    waits for the one that builds what it reuses, not for the others that reuse it too. Jobs without
    transforms, or whose first transform no earlier job runs, wait for nobody.
    """
    after: dict[int, int] = {}
    for j, job in enumerate(jobs):
        best, shared = None, 0
        for earlier in jobs[:j]:
            n = _shared_stages(job, earlier)
            if n > shared:
                best, shared = earlier.index, n
        if best is not None:
            after[job.index] = best
    return after


def _shared_stages(job: J, other: J) -> int:
    """How many leading transform stages two jobs have in common."""
    mine, theirs = [s.key() for s in job.pipeline.transforms], [s.key() for s in other.pipeline.transforms]
    n = 0
    while n < min(len(mine), len(theirs)) and mine[n] == theirs[n]:
        n += 1
    return n


def expected_cost(job: J, built: J | None = None) -> int:
    """A job's rough cost for ordering: its fine-tuning epochs (less those of the prefix ``built`` saves), plus one.

    Concurrent jobs start longest first, so that the long fine-tunings do not form the tail of the run.
    """
    own = job.pipeline.transforms[_shared_stages(job, built) if built is not None else 0 :]
    return 1 + sum(int(getattr(s.params, "finetune_epochs", 1) or 1) for s in own)


def expected_costs(jobs: Sequence[J]) -> dict[int, int]:
    """Job index -> expected_cost, each job against the one whose prefix it reuses."""
    after, by_index = prefix_dependencies(jobs), {job.index: job for job in jobs}
    return {job.index: expected_cost(job, by_index.get(after.get(job.index, -1))) for job in jobs}
