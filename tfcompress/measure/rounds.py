"""Many files timed in interleaved rounds, so that a slow stretch of a shared machine hits each alike.

A study's rows, the roof files and the overhead model are timed together: round 1 of every one of them,
then round 2 in the reverse order, and so on. Each round is one fresh child process that times the files
one after another, each with its own interpreter (``measure_batch``): a study with
35 files and 8 rounds starts 8 processes, not 280. A file that crashes the child fails alone; the rest of
its round goes on in a new child.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence

from tfcompress._process import describe_exit
from tfcompress.measure import latency
from tfcompress.measure.latency import LatencyError, LatencyStats, check_settings


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


def round_entry(tflite_path, threads, num_runs, warmup_runs, seed, input_path, runtime, min_time_s) -> dict:
    return {"path": tflite_path, "threads": threads, "num_runs": num_runs, "warmup_runs": warmup_runs,
            "seed": seed, "input_path": input_path, "runtime": runtime, "min_time_s": min_time_s}  # fmt: skip


def measure_batch(entries: Sequence[dict], timeout_s: float = 600.0) -> list[dict | LatencyError]:
    """One round of many files, timed one after another in one child process (the worker's batch mode).

    ``entries`` are dicts of measure_round's arguments (path, threads, num_runs, warmup_runs, seed,
    input_path, runtime, min_time_s). Each file gets a fresh interpreter; the process start-up is paid
    once per round instead of once per file. An entry that crashes the child or runs past ``timeout_s``
    becomes a LatencyError naming the signal or the time-out, and the entries after it run in a fresh
    child, so one bad file costs only its own result.

    Returns:
      Per entry, in order: the worker's result (as measure_round returns it) or a LatencyError.
    """
    import queue
    import threading

    for e in entries:
        check_settings(e["threads"], e["num_runs"], e["warmup_runs"], e["runtime"], 1, e["min_time_s"])
    results: list[dict | LatencyError] = []
    while len(results) < len(entries):
        todo = list(entries[len(results) :])
        command = [sys.executable, "-I", latency._WORKER, "-"]
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)  # fmt: skip
        lines: queue.Queue = queue.Queue()
        stderr: list[str] = []

        def pump(stream, sink, end=False):
            for line in stream:
                sink(line)
            if end:
                sink(None)  # the child closed its output: it ended

        threading.Thread(target=pump, args=(proc.stdout, lines.put, True), daemon=True).start()
        threading.Thread(target=pump, args=(proc.stderr, stderr.append), daemon=True).start()
        proc.stdin.write(json.dumps({"batch": todo, "parent_pid": os.getpid()}) + "\n")
        proc.stdin.close()
        got = 0
        try:
            while got < len(todo):
                line = lines.get(timeout=timeout_s)
                if line is None:  # the child ended before this entry's line: it crashed on it
                    proc.wait()
                    detail = " ".join("".join(stderr).strip().splitlines()[-1:])
                    results.append(LatencyError(f"latency child {describe_exit(proc.returncode)}"
                                                + (f": {detail}" if detail else "")))  # fmt: skip
                    break
                if not line.startswith("{"):
                    continue
                result = json.loads(line)
                result.pop("index", None)
                results.append(LatencyError(f"latency child: {result['error']}") if "error" in result else result)
                got += 1
        except queue.Empty:
            results.append(LatencyError(f"latency measurement timed out after {timeout_s:g} s"))
        except BaseException:  # Ctrl-C: the child goes too
            proc.kill()
            proc.wait()
            raise
        finally:
            if proc.poll() is None and got < len(todo):
                proc.kill()
            proc.wait()
    return results


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
