"""Many files timed in interleaved rounds, so that a slow stretch of a shared machine hits each alike.

A study's rows, the roof files and the overhead model are timed together: round 1 of every one of them,
then round 2 in the reverse order, and so on. Each round is one fresh child process that times the files
one after another, each with its own interpreter (tfcompress.measure.latency.measure_batch): a study with
35 files and 8 rounds starts 8 processes, not 280. A file that crashes the child fails alone; the rest of
its round goes on in a new child.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from tfcompress.measure.latency import LatencyError, LatencyStats, check_settings, measure_batch, round_entry


@dataclasses.dataclass(frozen=True)
class Timing:
    """One file at one setting, to be timed in ``interleaved``'s rounds; ``key`` names it in the result.

    ``num_runs`` and ``min_time_s``, when given, replace ``interleaved``'s for this file (a roof file needs
    neither many runs nor a long round: only its best GFLOP/s is used).
    """

    key: object
    path: str
    threads: int = 1
    runtime: str = "interpreter"
    input_path: str | None = None
    num_runs: int | None = None
    min_time_s: float | None = None


def schedule(n: int, rounds: int) -> list[tuple[int, int]]:
    """(round, timing index) in the order ``interleaved`` runs them.

    Every round visits every timing once, forwards in even rounds and backwards in odd ones, so no
    timing always runs first or last and a slow stretch of the machine is shared out.
    """
    order = []
    for r in range(rounds):
        indices = range(n) if r % 2 == 0 else range(n - 1, -1, -1)
        order += [(r, i) for i in indices]
    return order


def interleaved(
    timings: Sequence[Timing],
    rounds: int = 3,
    num_runs: int = 100,
    warmup_runs: int = 10,
    min_time_s: float = 0.5,
    seed: int = 0,
    timeout_s: float = 600.0,
    progress: Callable[[str], None] | None = None,
) -> dict[object, LatencyStats | LatencyError]:
    """Times many files over ``rounds`` rounds, one child per round, in ``schedule`` order.

    A timing whose round fails is not run again; its result is the LatencyError.

    Returns:
      key -> LatencyStats over its rounds, or the LatencyError of its failed round.
    """
    for t in timings:
        check_settings(t.threads, num_runs, warmup_runs, t.runtime, rounds, min_time_s)
    done: dict[int, list[dict]] = {i: [] for i in range(len(timings))}
    failed: dict[int, LatencyError] = {}
    order = schedule(len(timings), rounds)
    for r in range(rounds):
        indices = [i for rr, i in order if rr == r and i not in failed]
        entries = []
        for i in indices:
            t = timings[i]
            entries.append(round_entry(t.path, t.threads, t.num_runs or num_runs, warmup_runs, seed, t.input_path,
                                  t.runtime, min_time_s if t.min_time_s is None else t.min_time_s))  # fmt: skip
        for i, result in zip(indices, measure_batch(entries, timeout_s), strict=True):
            if isinstance(result, LatencyError):
                failed[i] = result
            else:
                done[i].append(result)
        if progress:
            progress(f"latency: round {r + 1} of {rounds} done")
    return {
        t.key: failed[i] if i in failed else LatencyStats.from_rounds(done[i], seed=seed) for i, t in enumerate(timings)
    }
