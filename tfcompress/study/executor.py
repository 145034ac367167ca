"""Executors: where a study's recipe jobs run. The study's loop hands them jobs and writes the results.

An ``Executor`` takes jobs and yields their outcomes as they finish (in any
order); the loop (tfcompress.study.runner) owns results.json. Two executors:

- ``InProcessExecutor``: each job in this process, one after another; shared
  transform prefixes are reused from memory.
- ``IsolatedExecutor`` (the default): each job in a fresh Python process
  (``python -m tfcompress.study.executor JOB.json``) that rebuilds the study's
  model and data, runs the recipe exactly as in process and writes its row as
  JSON. Whatever happens to the child (an exception, a native abort or
  segfault, a time-out), the parent gets a row back: the child's own, or a
  failed one naming the exit status, the signal or the time-out. Children die
  with their parent (Linux PR_SET_PDEATHSIG), so killing a study with SIGKILL
  leaves no orphaned recipe or latency process behind.

A concurrent or distributed executor implements ``run`` the same way.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence

from tfcompress._process import describe_exit, die_with_parent
from tfcompress.recipes.pipeline import Pipeline, parse
from tfcompress.study import job as job_lib
from tfcompress.study.cache import TransformCache
from tfcompress.study.config import StudyConfig
from tfcompress.study.job import Reference
from tfcompress.study.results import Row, Status, write_atomic


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
    """Runs recipe jobs; ``run`` yields each job's Outcome as it finishes. Never writes results.json."""

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
    """Each job in its own child process, one at a time (see the module docstring)."""

    def __init__(self, config: StudyConfig, work_dir: str, inputs: dict[str, str] | None = None):
        self.config = config
        self.work_dir = work_dir
        self.inputs = inputs or {}

    def run(self, jobs: Sequence[Job], reference: Reference, started: Started = None) -> Iterator[Outcome]:
        reference_path = None
        if not reference.empty:  # the children read the baseline's per-example outputs from a file
            fd, reference_path = tempfile.mkstemp(prefix="reference-", suffix=".npz", dir=self.work_dir)
            os.close(fd)
            reference.save(reference_path)
        for job in jobs:
            if started:
                started(job)
            row, outputs_path = run_isolated(
                self.config.to_dict(), job.pipeline.name, job.skeleton, self.work_dir, reference_path,
                self.config.run.recipe_timeout_s, self.inputs,
            )  # fmt: skip
            yield Outcome(job, row, Reference.load(outputs_path) if outputs_path else Reference())


def _last_line(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return ""
    # Skip TensorFlow's start-up chatter; the reason is usually the last real line.
    lines = [line for line in lines if not line.startswith(("I0000", "W0000", "E0000", "WARNING: All log", "INFO:"))]
    return lines[-1][:300] if lines else ""


def run_isolated(
    config_dict: dict,
    recipe: str,
    skeleton: Row,
    work_dir: str,
    reference_path: str | None,
    timeout_s: float,
    inputs: dict[str, str] | None = None,
) -> tuple[Row, str | None]:
    """Runs one recipe of a study in a child process.

    Args:
      config_dict: the study's StudyConfig.to_dict().
      recipe: the recipe spec (a pipeline name).
      skeleton: the row to fill in if the child dies (task, model, recipe, params, key).
      work_dir: a private folder for the job's files.
      reference_path: the baseline's per-example outputs (Reference.save's .npz), for agreement and the
        metric's difference.
      timeout_s: the child is killed after this many seconds.
      inputs: paths of a model and dataset the caller gave as objects (job.save_inputs).

    Returns:
      (row, path of this row's own per-example outputs (.npz) or None).
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
        proc = subprocess.Popen([sys.executable, "-m", "tfcompress.study.executor", job_path], stderr=stderr)
        try:
            returncode = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()  # its latency child dies with it (die_with_parent)
            proc.wait()
            return _failed(skeleton, f"recipe timed out after {timeout_s:g} s (--recipe_timeout_s)"), None
        except BaseException:  # Ctrl-C or SIGTERM in the parent: take the child down too
            proc.kill()
            proc.wait()
            raise
    if returncode == 0 and os.path.exists(job["row_out"]):
        with open(job["row_out"], encoding="utf-8") as f:
            row = Row.from_dict(json.load(f))
        return row, job["outputs_out"] if os.path.exists(job["outputs_out"]) else None
    detail = _last_line(stderr_path)
    return _failed(skeleton, f"recipe process {describe_exit(returncode)}" + (f": {detail}" if detail else "")), None


def _failed(skeleton: Row, error: str) -> Row:
    row = Row(task=skeleton.task, model=skeleton.model, recipe=skeleton.recipe, params=skeleton.params,
              key=skeleton.key)  # fmt: skip
    row.status = Status.FAILED
    row.error = error
    return row


def run_one(config: StudyConfig, recipe: str, reference: Reference | None = None, inputs: dict[str, str] | None = None):
    """Runs a single recipe of a study in this process (what an isolated recipe process does).

    Returns the row and its per-example outputs on the test split (a Reference).
    """
    model, dataset = job_lib.load_inputs(inputs or {})
    pipeline = parse(recipe, config.recipe_defaults)
    prepared = job_lib.prepare(config, lambda _: None, verbose=2, model=model, dataset=dataset,
                               twin=bool(pipeline.transforms))  # fmt: skip
    cache = TransformCache(os.path.join(config.output_dir, ".transforms", job_lib.basis_key(prepared.basis)))
    return job_lib.run_recipe(prepared, pipeline, config, reference or Reference(), cache)


def _main(job_path: str) -> int:
    with open(job_path, encoding="utf-8") as f:
        job = json.load(f)
    die_with_parent(job["parent_pid"])
    config = StudyConfig.from_dict(job["config"])
    reference = Reference.load(job["reference"]) if job["reference"] else Reference()
    row, outputs = run_one(config, job["recipe"], reference, job.get("inputs"))
    if not outputs.empty:
        outputs.save(job["outputs_out"])
    write_atomic(job["row_out"], json.dumps(row.to_dict(), allow_nan=False))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1]))
