"""Executors: where a study's recipe jobs run. The study's loop hands them jobs and writes the results.

An ``Executor`` takes jobs and yields their outcomes as they finish (in any
order); the loop (tfcompress.study.runner) owns results.json. Two executors:

- ``InProcessExecutor``: each job in this process, one after another; shared
  transform prefixes are reused from memory.
- ``IsolatedExecutor`` (the default): each job in a fresh Python process
  (``python -m tfcompress.study.executor JOB.json``) that rebuilds the study's
  model and data, runs the recipe exactly as in process and writes its row as
  JSON; up to ``--jobs`` of them at once, each with its share of the CPUs.
  Whatever happens to the child (an exception, a native abort or segfault, a
  time-out), the parent gets a row back: the child's own, or a failed one
  naming the exit status, the signal or the time-out. Children die with their
  parent (Linux PR_SET_PDEATHSIG), so killing a study with SIGKILL leaves no
  orphaned recipe or latency process behind.

A distributed executor implements ``run`` the same way.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence

from tfcompress._process import describe_exit, die_with_parent, usable_cpus
from tfcompress.recipes.pipeline import Pipeline, parse
from tfcompress.study import job as job_lib
from tfcompress.study.cache import TransformCache
from tfcompress.study.config import StudyConfig
from tfcompress.study.reference import Reference
from tfcompress.study.results import Row, Status, write_atomic
from tfcompress.study.schedule import scheduled


@dataclasses.dataclass(frozen=True)
class Job:
    """One recipe of a study: its place in the study's order, its pipeline, and its row before it runs."""

    index: int
    pipeline: Pipeline
    skeleton: Row


@dataclasses.dataclass(frozen=True)
class Outcome:
    """A finished job: its row and its per-example outputs (the reference of later rows when it is fp32's)."""

    job: Job
    row: Row
    outputs: Reference = dataclasses.field(default_factory=Reference)


Started = Callable[[Job], None] | None


class Executor(abc.ABC):
    """Runs recipe jobs; ``run`` yields each job's Outcome as it finishes. Never writes results.json.

    ``concurrent``: whether jobs run side by side; the study then hands the fp32 baseline over with the
    other jobs and compares each row with it itself (tfcompress.study.reference.compare).
    """

    concurrent: bool = False

    @abc.abstractmethod
    def run(self, jobs: Sequence[Job], reference: Reference, started: Started = None) -> Iterator[Outcome]:
        """Runs ``jobs`` (agreement and metric differences against ``reference``); yields outcomes in any order.

        ``started`` (if given) is called with each job as it starts, for progress.
        """

    def close(self) -> None:  # noqa: B027  (a no-op by default: most executors hold nothing)
        """Releases what the executor holds (processes, folders)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class InProcessExecutor(Executor):
    """Each job in this process, in order; transform prefixes shared in memory."""

    def __init__(self, config: StudyConfig, prepared: job_lib.Prepared):
        self.config = config
        self.prepared = prepared
        self.transforms: dict = {}

    def run(self, jobs: Sequence[Job], reference: Reference, started: Started = None) -> Iterator[Outcome]:
        for job in jobs:
            if started:
                started(job)
            row, outputs = job_lib.run_recipe(self.prepared, job.pipeline, self.config, reference, self.transforms)
            yield Outcome(job, row, outputs)


class IsolatedExecutor(Executor):
    """Each job in its own child process, up to ``jobs`` at once (see the module docstring).

    With more than one job at a time, each child's TensorFlow thread pools (and the quantizer's calibration)
    get an equal share of this process's CPUs (``TFCOMPRESS_JOB_CPUS``) and are pinned to cores of their own
    (CpuSlots), and a job that reuses an earlier job's transform prefix (``prune_int8`` after ``prune``)
    starts only when that job has finished, so the prefix is computed once (TransformCache) as in a serial
    run. Outcomes come back as jobs finish.
    """

    def __init__(self, config: StudyConfig, work_dir: str, inputs: dict[str, str] | None = None, jobs: int = 1):
        if jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {jobs}.")
        self.config = config
        self.work_dir = work_dir
        self.inputs = inputs or {}
        self.jobs = jobs

    @property
    def concurrent(self) -> bool:
        return self.jobs > 1

    def run(self, jobs: Sequence[Job], reference: Reference, started: Started = None) -> Iterator[Outcome]:
        reference_path = save_reference(reference, self.work_dir)
        width = max(1, min(self.jobs, len(jobs)))
        env = job_env(width)
        # Each of several jobs on cores of its own: two fine-tunings pinned apart ran faster than unpinned
        # (BENCHMARKS.md, "Scaling out"). Not with multi_worker, whose workers share their job's CPUs.
        pin = self.config.run.strategy != "multi_worker"
        slots = CpuSlots(width, int(env["TFCOMPRESS_JOB_CPUS"])) if pin else None

        def start(job: Job) -> Child:
            child = start_isolated(self.config.to_dict(), job.pipeline.name, job.skeleton, self.work_dir,
                                   reference_path, self.config.run.recipe_timeout_s, self.inputs, env)  # fmt: skip
            if slots:
                slots.pin(job.index, child.proc.pid)
            return child

        for job, child in scheduled(jobs, start, _wait_any, Child.kill, width=self.jobs, started=started):
            if slots:
                slots.release(job.index)
            row, outputs_path = finish_isolated(child)
            yield Outcome(job, row, Reference.load(outputs_path) if outputs_path else Reference())


class CpuSlots:
    """``width`` disjoint sets of ``share`` of this process's CPUs, one per running job, pinned by affinity.

    Empty (pinning nothing) where the OS has no CPU affinity or the CPUs do not split that way.
    """

    def __init__(self, width: int, share: int):
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_setaffinity") else []
        fits = width > 1 and share >= 1 and width * share <= len(cpus)
        self.free = [set(cpus[i * share : (i + 1) * share]) for i in range(width)] if fits else []
        self.held: dict[int, set[int]] = {}
        self.enabled = fits

    def __bool__(self) -> bool:
        return self.enabled

    def pin(self, index: int, pid: int) -> set[int]:
        """Pins process ``pid`` (job ``index``, just started: its threads inherit the set) to a free slot."""
        cpus = self.held[index] = self.free.pop(0)
        try:
            os.sched_setaffinity(pid, cpus)
        except OSError:  # it has already ended
            pass
        return cpus

    def release(self, index: int) -> None:
        """Job ``index`` has ended: its CPUs are free for the next."""
        if index in self.held:
            self.free.append(self.held.pop(index))


def save_reference(reference: Reference, work_dir: str) -> str | None:
    """Where the children read the baseline's per-example outputs from (a file in ``work_dir``); None if empty."""
    if reference.empty:
        return None
    fd, path = tempfile.mkstemp(prefix="reference-", suffix=".npz", dir=work_dir)
    os.close(fd)
    reference.save(path)
    return path


def job_env(width: int, cpus: int | None = None) -> dict[str, str]:
    """The environment of a recipe process when ``width`` run at once: its share of this process's CPUs.

    ``cpus``, when given, is the job's share (the CPUs a Ray task declared).
    """
    if cpus is not None:
        share = str(max(1, cpus))
    elif os.environ.get("TFCOMPRESS_JOB_CPUS", "").isdigit():  # set by the user (or a parent study): kept
        share = os.environ["TFCOMPRESS_JOB_CPUS"]
    else:
        cpus = usable_cpus()
        share = str(max(1, cpus // width))
    return {**os.environ, "TFCOMPRESS_JOB_CPUS": share, "TF_NUM_INTRAOP_THREADS": share,
            "TF_NUM_INTEROP_THREADS": share if width == 1 else "1", "OMP_NUM_THREADS": share}  # fmt: skip


def _wait_any(children: dict[int, Child]) -> int:
    """The index of a child that has ended (or run past its time-out), waiting as needed."""
    while True:
        for index, child in children.items():
            if child.ended():
                return index
        time.sleep(0.05)


def _last_line(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return ""
    # Skip TensorFlow's start-up chatter; the reason is usually the last real line.
    chatter = ("I0000", "W0000", "E0000", "WARNING: All log", "INFO:", "<frozen runpy>")
    lines = [line for line in lines if not line.startswith(chatter)]
    return lines[-1][:300] if lines else ""


@dataclasses.dataclass
class Child:
    """A recipe process started by start_isolated: its job file's paths, its process and its deadline."""

    proc: subprocess.Popen
    skeleton: Row
    row_out: str
    outputs_out: str
    stderr_path: str
    timeout_s: float
    deadline: float
    timed_out: bool = False

    def ended(self) -> bool:
        """Whether the child has exited; one past its deadline is killed first (and then has ended)."""
        if self.proc.poll() is not None:
            return True
        if time.monotonic() > self.deadline:
            self.timed_out = True
            self.kill()
            return True
        return False

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # its latency child dies with it (die_with_parent)
        self.proc.wait()


def start_isolated(
    config_dict: dict,
    recipe: str,
    skeleton: Row,
    work_dir: str,
    reference_path: str | None,
    timeout_s: float,
    inputs: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
) -> Child:
    """Starts one recipe of a study in a child process; ``finish_isolated`` reads its row once it has ended.

    Args:
      config_dict: the study's StudyConfig.to_dict().
      recipe: the recipe spec (a pipeline name).
      skeleton: the row to fill in if the child dies (task, model, recipe, params, key).
      work_dir: a private folder for the job's files.
      reference_path: the baseline's per-example outputs (Reference.save's .npz), for agreement and the
        metric's difference.
      timeout_s: the child is killed after this many seconds (``Child.ended`` checks).
      inputs: paths of a model and dataset the caller gave as objects (job.save_inputs).
      env: the child's environment (job_env), default this process's.
    """
    fd, job_path = tempfile.mkstemp(prefix="job-", suffix=".json", dir=work_dir)
    os.close(fd)
    stem = job_path[: -len(".json")]
    job = {
        "config": config_dict,
        "recipe": recipe,
        "reference": reference_path,
        "inputs": inputs or {},
        "row_out": stem + "-row.json",
        "outputs_out": stem + "-outputs.npz",
        "parent_pid": os.getpid(),
    }
    write_atomic(job_path, json.dumps(job))
    stderr_path = stem + "-stderr.txt"
    with open(stderr_path, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "tfcompress.study.executor", job_path], stderr=stderr, env=env)
    return Child(proc, skeleton, job["row_out"], job["outputs_out"], stderr_path, timeout_s,
                 time.monotonic() + timeout_s)  # fmt: skip


def finish_isolated(child: Child) -> tuple[Row, str | None]:
    """The row of an ended child: its own, or a failed one naming the time-out, the exit status or the signal."""
    child.proc.wait()
    if child.timed_out:
        return _failed(child.skeleton, f"recipe timed out after {child.timeout_s:g} s (--recipe_timeout_s)"), None
    if child.proc.returncode == 0 and os.path.exists(child.row_out):
        with open(child.row_out, encoding="utf-8") as f:
            row = Row.from_dict(json.load(f))
        return row, child.outputs_out if os.path.exists(child.outputs_out) else None
    detail = _last_line(child.stderr_path)
    reason = f"recipe process {describe_exit(child.proc.returncode)}" + (f": {detail}" if detail else "")
    return _failed(child.skeleton, reason), None


def _failed(skeleton: Row, error: str) -> Row:
    row = Row(task=skeleton.task, model=skeleton.model, recipe=skeleton.recipe, params=skeleton.params,
              key=skeleton.key)  # fmt: skip
    row.status = Status.FAILED
    row.error = error
    return row


def run_one(
    config: StudyConfig,
    recipe: str,
    reference: Reference | None = None,
    inputs: dict[str, str] | None = None,
    transform_cache: bool = True,
):
    """Runs a single recipe of a study in this process (what an isolated recipe process does).

    ``transform_cache``: reuse and save transform prefixes in OUTPUT_DIR/.transforms (off for the workers of
    a multi_worker job, which must all fine-tune every stage together).

    Returns the row and its per-example outputs on the test split (a Reference).
    """
    model, dataset = job_lib.load_inputs(inputs or {})
    pipeline = parse(recipe, config.recipe_defaults)
    prepared = job_lib.prepare(config, lambda _: None, verbose=2, model=model, dataset=dataset,
                               twin=bool(pipeline.transforms))  # fmt: skip
    cache = TransformCache(os.path.join(config.output_dir, ".transforms", job_lib.basis_key(prepared.basis)))
    return job_lib.run_recipe(prepared, pipeline, config, reference or Reference(), cache if transform_cache else {})


def _main(job_path: str) -> int:
    with open(job_path, encoding="utf-8") as f:
        job = json.load(f)
    die_with_parent(job["parent_pid"])
    config = StudyConfig.from_dict(job["config"])
    reference = Reference.load(job["reference"]) if job["reference"] else Reference()
    workers = None
    if config.run.strategy == "multi_worker" and parse(job["recipe"], config.recipe_defaults).transforms:
        from tfcompress.study import distribute

        workers = distribute.Workers(job, config.run.workers)  # they start now; this process is the chief
        distribute.strategy("multi_worker")  # before any other TensorFlow work in this process
    try:
        row, outputs = run_one(config, job["recipe"], reference, job.get("inputs"), transform_cache=workers is None)
        if workers is not None and row.ok:
            row.extras["workers"] = config.run.workers
            row.extras["workers_equal"] = workers.weights_equal(os.path.join(config.output_dir, row.tflite_path))
    finally:
        if workers is not None:
            workers.stop()
    if not outputs.empty:
        outputs.save(job["outputs_out"])
    write_atomic(job["row_out"], json.dumps(row.to_dict(), allow_nan=False))
    return 0


def _worker_main(job_path: str) -> int:
    """A non-chief multi_worker worker: the chief's pipeline on the same model and data, its files apart."""
    from tfcompress.study import distribute

    with open(job_path, encoding="utf-8") as f:
        job = json.load(f)
    die_with_parent(job["parent_pid"])
    run = dict(job["config"]["run"])
    run.update(
        output_dir=job["worker_output_dir"],
        finetune_stop_drop=None,
        cache_dir=run["cache_dir"] or os.path.join(run["output_dir"], "models"),
    )  # the chief's trained model
    config = StudyConfig.from_dict(dict(job["config"], run=run))
    distribute.strategy("multi_worker")  # before any other TensorFlow work in this process
    run_one(config, job["recipe"], None, job.get("inputs"), transform_cache=False)
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[2]) if sys.argv[1] == "--worker" else _main(sys.argv[1]))
