"""A study: one model x many recipes -> .tflite files, measured side by side.

``run(StudyConfig(...))`` is what ``experiments/study.py`` calls; a notebook
can call it too, with its own model and data objects, or use the pieces
(``convert``, ``run_tflite``, ``measure_latency``) directly.

The loop: prepare the model and data once, keep the rows a resumed run may
keep, run the fp32 baseline, then hand every other recipe to the executor
(tfcompress.study.executor) and write results.json atomically after each
finished row. An executor that runs jobs side by side (``--jobs`` > 1, Ray)
gets the baseline with the others, and the loop compares each row with it
(tfcompress.study.reference). Then the latency phase, the table, CSV,
report and plots.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable

from tfcompress import loading, tasks
from tfcompress import recipes as recipes_lib
from tfcompress.fields import Column
from tfcompress.models import predict_logits
from tfcompress.study import job as job_lib
from tfcompress.study import report as report_lib
from tfcompress.study import results as results_lib
from tfcompress.study import schedule, timing
from tfcompress.study.cache import prepare_output_dir
from tfcompress.study.config import StudyConfig, StudyError
from tfcompress.study.environment import environment
from tfcompress.study.executor import Executor, InProcessExecutor, IsolatedExecutor, Job, Outcome, Reference
from tfcompress.study.reference import compare
from tfcompress.study.results import Results, Row, Status


def run(
    config: StudyConfig,
    progress: Callable[[str], None] | None = None,
    *,
    model=None,
    dataset=None,
    executor: Executor | None = None,
) -> Results:
    """Runs every recipe of the study and writes results.json, results.csv, report.md and plots.

    results.json is rewritten (atomically) after each finished row. A recipe
    that fails becomes a failed row with its reason and the study goes on.
    With ``config.run.isolate`` (the default) each recipe runs in its own
    process, so native crashes and time-outs become failed rows too.

    Args:
      config: the study's configuration.
      progress: called with one line of text per step (the script prints them).
      model: a model to study instead of ``config.model``: tf_keras or Keras 3
        (training-time recipes then use its checked tf_keras twin), a
        tfcompress.loading.ExportedModel, or a tfcompress.loading.TFLiteModel
        (an fp32 .tflite file).
      dataset: a tfcompress Dataset to use instead of ``config.data``.
      executor: where the recipe jobs run; default in-process or isolated, as
        ``config.run.isolate`` says.

    Returns:
      The results, as also saved in OUTPUT_DIR/results.json.

    Raises:
      StudyError, data.DataError, models.ModelError: the study cannot start;
        nothing is written to the output directory in that case except a
        trained model's cache.
    """
    verbose = 2 if progress else 0  # Keras prints a line per fine-tuning epoch when the caller shows progress
    progress = progress or (lambda _: None)
    phases = _Phases()
    pipelines = config.pipelines()
    prepare_output_dir(config.output_dir)
    prepared = job_lib.prepare(config, progress, verbose, model, dataset, twin=any(p.transforms for p in pipelines))
    basis_key = job_lib.basis_key(prepared.basis)
    results = Results(
        config=config.to_dict() | {"basis_key": basis_key, "preprocessing": prepared.dataset.preprocessing},
        environment=environment(),
        columns=[c.to_dict() for c in study_columns(config.task, pipelines)],
        metrics={m.name: m.to_dict() for m in [tasks.get(config.task).metric]},
    )
    phases.end("prepare")
    results_path = os.path.join(config.output_dir, "results.json")
    jobs = [Job(i, p, job_lib.skeleton(config, prepared, p)) for i, p in enumerate(pipelines)]
    finished = _finished_rows(config, basis_key, results_path, progress) if config.run.resume else {}
    loop = _Loop(config, results, results_path, len(jobs), progress, schedule.expected_costs(jobs))
    work_dir = tempfile.mkdtemp(prefix=".work-", dir=config.output_dir)
    own = executor is None
    try:
        if own:
            executor = _executor(config, prepared, work_dir, model, dataset)
        todo, reference = [], Reference()
        for job in jobs:
            done = finished.get(job.pipeline.name)
            if done is not None and done.key == job.skeleton.key:
                if job.pipeline.name == recipes_lib.BASELINE:
                    path = os.path.join(config.output_dir, done.tflite_path)
                    outputs = job_lib.model_outputs(config, path, prepared.dataset.x_test)
                    reference = Reference.of(tasks.get(config.task).score(outputs, prepared.dataset))
                loop.record(Outcome(job, done), kept=True)
            else:
                if done is not None:
                    progress(f"{job.pipeline.name}: its settings changed since the earlier run; running it again.")
                todo.append(job)
        if executor.concurrent:  # the baseline beside the others, which are compared with it here
            _run_with_the_baseline(executor, todo, reference, loop, prepared, config, progress)
            todo = []
        if todo and todo[0].pipeline.name == recipes_lib.BASELINE:
            baseline = next(iter(executor.run(todo[:1], reference, loop.started)))
            _record_baseline(baseline, loop, prepared, config, progress)
            reference, todo = baseline.outputs, todo[1:]
        if todo and not loop.stopped:
            for outcome in executor.run(todo, reference, loop.started):
                loop.record(outcome)
                if loop.stopped:
                    break
        shutil.rmtree(os.path.join(config.output_dir, ".transforms"), ignore_errors=True)
        phases.end("rows")
        _time(config, results, prepared.dataset, progress, executor)
        phases.end("latency")
    except KeyboardInterrupt:  # Ctrl-C: the finished rows' report and CSV (untimed), then stop
        if results.rows:
            report_lib.write_all(results, config.output_dir)
            progress(f"Interrupted: report.md and results.csv hold the {len(results.rows)} finished row(s), "
                     + "without latency (the latency phase had not run).")  # fmt: skip
        raise
    finally:
        if own and executor is not None:
            executor.close()
        shutil.rmtree(work_dir, ignore_errors=True)
    results.environment["phase_s"] = dict(phases.seconds)
    results_lib.save(results, results_path)
    report_lib.write_all(results, config.output_dir)
    phases.end("report")
    progress(phases.line())
    return results


class _Phases:
    """This run's wall time in each phase: preparing the model and data, the rows, the latency phase, the report.

    results.json records the first three (its environment's ``phase_s``); the report is written after it.
    """

    NAMES = {"prepare": "preparing", "rows": "the rows", "latency": "the latency phase", "report": "the report"}

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.last = time.monotonic()

    def end(self, name: str) -> None:
        now = time.monotonic()
        self.seconds[name] = round(now - self.last, 3)
        self.last = now

    def line(self) -> str:
        """'Done in 6:12: preparing 0:10, the rows 4:01, the latency phase 1:45, the report 0:01.'"""
        parts = ", ".join(f"{self.NAMES[k]} {_clock(v)}" for k, v in self.seconds.items())
        return f"Done in {_clock(sum(self.seconds.values()))}: {parts}."


def _record_baseline(baseline: Outcome, loop: _Loop, prepared, config: StudyConfig, progress) -> None:
    _add_keras_metric(baseline.row, prepared, config.task, progress)
    loop.record(baseline)
    _check_baseline(baseline.row, prepared.dataset, config.task, progress)


def _run_with_the_baseline(executor: Executor, todo: list[Job], reference: Reference, loop: _Loop, prepared,
                           config: StudyConfig, progress) -> None:  # fmt: skip
    """Runs every job at once, the fp32 baseline among them; the other rows are compared with it here (compare).

    A row that ends before the baseline waits for it, so results.json never holds a row without its agreement.
    """
    waiting = bool(todo) and todo[0].pipeline.name == recipes_lib.BASELINE
    held: list[Outcome] = []
    for outcome in executor.run(todo, reference, loop.started):
        if waiting and outcome.job.index == todo[0].index:
            _record_baseline(outcome, loop, prepared, config, progress)
            reference, ready, held, waiting = outcome.outputs, held, [], False
        elif waiting:
            held.append(outcome)
            continue
        else:
            ready = [outcome]
        for other in ready:
            compare(other.row, other.outputs, reference, config.task, config.seed)
            loop.record(other)
        if loop.stopped:
            return


def _executor(config: StudyConfig, prepared, work_dir: str, model, dataset) -> Executor:
    """The executor ``config.run`` asks for: Ray tasks, isolated processes (``jobs`` at once) or this process."""
    if config.run.executor == "ray":
        from tfcompress.study.ray_executor import RayExecutor  # the only place Ray is imported

        return RayExecutor(config, work_dir, job_lib.save_inputs(work_dir, model, dataset))
    if config.run.isolate:
        return IsolatedExecutor(config, work_dir, job_lib.save_inputs(work_dir, model, dataset),
                                jobs=config.run.parallel_jobs)  # fmt: skip
    return InProcessExecutor(config, prepared)


def _time(config: StudyConfig, results: Results, dataset, progress, executor=None) -> None:
    """The latency phase (tfcompress.study.timing, or the executor's own): the rows that need it (run saves them).

    Nothing else runs meanwhile: every recipe job has finished.
    """
    rows = [r for r in results.rows if timing.needs_timing(r, config)]
    if not rows:
        return
    if hasattr(executor, "time_rows"):
        executor.time_rows(config, results, rows, dataset, progress)
    else:
        timing.time_rows(config, results, rows, dataset, progress)
    for row in rows:
        results_lib.fail_non_finite(row)
        progress(f"latency: {timing_line(row)}")


def timing_line(row: Row) -> str:
    """'int8: 0.512 ms +-1.2% @1t interpreter, ...' (or the row's error)."""
    if not row.ok:
        return f"{row.recipe}: {row.status.value} ({row.error})"
    parts = []
    for s in row.latency:
        width = f" +-{s.half_width:.1%}" if s.half_width is not None else ""
        parts.append(f"{s.median_ms:.3f} ms{width} @{s.threads}t {s.runtime}")
    return f"{row.recipe}: " + ", ".join(parts)


# The fp32 row's column: the metric of the Keras model itself (before conversion) on the same test split.
KERAS_METRIC = Column("keras_metric", "Keras metric", ".4f",
                      note="the model's own metric in Keras on the test split, beside its fp32 .tflite's")  # fmt: skip


def study_columns(task: str, pipelines: list) -> list:
    """The extra columns a study's rows may carry: the task's, then its pipelines' in registration order."""
    keys = {c.key for p in pipelines for c in p.columns}
    ordered = [c for c in recipes_lib.pipeline.all_columns() if c.key in keys]
    ordered += [c for p in pipelines for c in p.columns if c.key not in {o.key for o in ordered}]
    own = [KERAS_METRIC] if any(p.name == recipes_lib.BASELINE for p in pipelines) else []
    return own + list(tasks.get(task).columns) + ordered


def _add_keras_metric(row: Row, prepared, task_name: str, progress) -> None:
    """Puts the Keras model's own metric on the test split beside the fp32 row's .tflite metric.

    A .tflite model has none: its fp32 row is the file itself.
    """
    if isinstance(prepared.model.model, loading.TFLiteModel):
        return
    task = tasks.get(task_name)
    try:
        outputs = predict_logits(prepared.model.model, prepared.dataset.x_test)
        row.extras[KERAS_METRIC.key] = task.score(outputs, prepared.dataset).metric
    except Exception as e:  # a model Keras cannot run on the test split here: the .tflite's metric stands alone
        progress(f"The Keras model's own {task.metric.name} could not be computed: {job_lib.one_line(e)}")


def _check_baseline(row: Row, dataset, task_name: str, progress) -> None:
    """Says in one line when the fp32 metric looks wrong (the task's check, e.g. accuracy at chance level)."""
    check = tasks.get(task_name).check_baseline
    if row.ok and row.metric is not None and check is not None:
        warning = check(row.metric, dataset)
        if warning:
            progress(f"WARNING: {warning}")


class _Loop:
    """The study's bookkeeping: rows in study order, results.json after each, progress, --fail_fast."""

    def __init__(self, config: StudyConfig, results: Results, path: str, total: int, progress, costs: dict[int, int]):
        self.config, self.results, self.path, self.total, self.progress = config, results, path, total, progress
        self.costs = costs  # job index -> its expected cost (schedule.expected_costs), for the estimate of the rest
        self.index: dict[int, Row] = {}
        self.stopped = False
        self.began = time.monotonic()
        self.ran = 0  # the cost of the rows finished by this run (not kept from an earlier one)

    def started(self, job: Job) -> None:
        what = "fine-tuning" if job.pipeline.transforms else "converting"
        self.progress(f"[{job.index + 1}/{self.total}] {job.pipeline.name}: {what} ...")

    def eta(self) -> str:
        """'12 of 19 rows done, 3:05 elapsed, about 1:40 left' (the rest at this run's pace so far).

        The pace is per unit of expected cost, so a run that did its fine-tunings first does not expect the
        conversions left to take as long.
        """
        done, elapsed = len(self.index), time.monotonic() - self.began
        text = f"{done} of {self.total} rows done, {_clock(elapsed)} elapsed"
        if self.ran and done < self.total:
            left = sum(c for i, c in self.costs.items() if i not in self.index)
            text += f", about {_clock(elapsed / self.ran * left)} left before the latency phase"
        return text

    def record(self, outcome: Outcome, kept: bool = False) -> None:
        """Adds a finished row (saving results.json), or one kept from the earlier run (already in it)."""
        results_lib.fail_non_finite(outcome.row)  # from any executor, and with the fp32 row's Keras metric
        self.index[outcome.job.index] = outcome.row
        self.results.rows = [self.index[i] for i in sorted(self.index)]
        if not kept:
            results_lib.save(self.results, self.path)
        self.ran += 0 if kept else self.costs.get(outcome.job.index, 1)
        suffix = " [kept from the earlier run]" if kept else f" ({self.eta()})"
        self.progress(progress_line(outcome.job.index + 1, self.total, outcome.row) + suffix)
        if self.config.run.fail_fast and outcome.row.status is Status.FAILED:
            self.progress(f"Stopping at the first failure (--fail_fast): {outcome.row.recipe}.")
            self.stopped = True


def _clock(seconds: float) -> str:
    """'1:05:09' or '3:05'."""
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _finished_rows(config: StudyConfig, basis_key: str, results_path: str, progress) -> dict[str, Row]:
    """The rows of an earlier run of the same study that may not need to run again (keys are checked later)."""
    if not os.path.exists(results_path):
        progress(f"Nothing to resume in {config.output_dir}; starting from the beginning.")
        return {}
    try:
        earlier = results_lib.load(results_path)
    except ValueError as e:
        raise StudyError(f"Cannot resume: {e} Remove it or choose another --output_dir.") from None
    if earlier.config.get("basis_key") != basis_key:
        raise StudyError(
            f"Cannot resume: {results_path} was made with another configuration (task, model, data, seed, "
            + "epochs or measurement options); run without --resume to start over, or use another --output_dir."
        )
    kept = {}
    for row in earlier.rows:
        has_file = row.tflite_path and os.path.isfile(os.path.join(config.output_dir, row.tflite_path))
        if row.status is Status.NOT_APPLICABLE or (row.ok and has_file):
            kept[row.recipe] = row
    progress(f"Resuming: {len(kept)} finished row(s) found in {results_path}.")
    return kept


def progress_line(i: int, n: int, row: Row) -> str:
    text = f"[{i}/{n}] {row.recipe}: {row.status.value}"
    if row.size_bytes is not None:
        text += f", {row.size_bytes / 1024:.1f} KB"
    if row.metric is not None:
        text += f", {row.metric_name} {row.metric:.4f}"
    if row.latency:
        text += ", " + ", ".join(f"{s.median_ms:.3f} ms @{s.threads}t" for s in row.latency if s.median_ms is not None)
    if row.error:
        text += f" ({row.error})"
    return text
