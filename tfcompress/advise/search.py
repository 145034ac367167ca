"""The advisor's search: Optuna ask-and-tell over recipe specs, each trial a row of one growing study.

Every trial is a recipe spec run by the study itself (tfcompress.study.runner,
so isolated child processes, time-outs and atomic results.json as in any
study) into OUTPUT_DIR/study, whose recipes grow with the trials and whose
finished rows are kept from one batch to the next. Optuna holds the search
state in OUTPUT_DIR/advice.journal (a journal file): each trial's spec,
stage, status and figures are its user attributes, its two values the
objective and the drop (Constraints.objective_values), and every limit a
constraint (``trial.set_constraint``), so the sampler knows what is feasible.
A killed advisor resumes from the journal with ``resume``: finished trials
are kept, the trial that was running is marked failed (``interrupted``) and
asked again; the sampler is re-seeded from the number of finished trials, so
a resumed search proposes what an uninterrupted one would have.
"""

from __future__ import annotations

import dataclasses
import os
import time
import warnings
from collections.abc import Callable
from typing import Any

from tfcompress import tasks
from tfcompress.advise import constraints as c_lib
from tfcompress.advise import space
from tfcompress.study import job as job_lib
from tfcompress.study import runner
from tfcompress.study.config import StudyConfig
from tfcompress.study.results import Status

JOURNAL = "advice.journal"
STUDY = "study"
STOPPED = "FinetuneStopped"  # the error of a trial whose fine-tuning was stopped (pruned)


def stop_line(limits: c_lib.Constraints) -> float | None:
    """How much worse than fp32 a fine-tuning may be half-way (StopIfWorse) before its trial is pruned: 3x limit + 2."""
    return None if limits.max_drop is None else 3 * max(limits.max_drop, 0.0) + 2.0


@dataclasses.dataclass(frozen=True)
class SearchOptions:
    """How long and how the advisor searches.

    Attributes:
      trials: trials to run at most (de-duplicated proposals and the fp32 row not counted).
      time_budget_s: stop asking for trials after this much search time (None: no limit).
      trial_rounds: latency rounds per trial (the pick is re-measured with the study's own rounds).
      batch: stage-2 trials asked and run together (they share one latency phase).
      resume: continue the search in OUTPUT_DIR/advice.journal.
      stages: which stages run (0 post-training, 1 repairs, 2 training-time).
    """

    trials: int = 24
    time_budget_s: float | None = None
    trial_rounds: int = 3
    batch: int = 4
    resume: bool = False
    stages: tuple[int, ...] = (0, 1, 2)

    def __post_init__(self):
        if self.trials < 1:
            raise c_lib.AdviseError(f"trials must be >= 1, got {self.trials}.")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise c_lib.AdviseError(f"time_budget_s must be > 0, got {self.time_budget_s}; leave it out for no limit.")
        if self.batch < 1 or self.trial_rounds < 1:
            raise c_lib.AdviseError("batch and trial_rounds must be >= 1.")


class Search:
    """One advisor run: the trial study, the Optuna study, and the stages (see the module docstring)."""

    def __init__(self, config: StudyConfig, limits: c_lib.Constraints, options: SearchOptions,
                 progress: Callable[[str], None], model=None, dataset=None):  # fmt: skip
        import optuna

        self.config, self.limits, self.options, self.progress = config, limits, options, progress
        self.model, self.dataset = model, dataset
        self.out = config.output_dir
        self.study_dir = os.path.join(self.out, STUDY)
        self.trial_config = config.replace(
            output_dir=self.study_dir, cache_dir=config.run.models_dir, resume=True, fail_fast=False, recipes=(),
            rounds=min(options.trial_rounds, config.measure.rounds), finetune_stop_drop=stop_line(limits),
        )  # fmt: skip
        self.metric = tasks.get(config.task).metric.to_dict()
        self.threads, self.runtime = config.measure.threads[0], config.measure.runtime[0]
        self.started = time.monotonic()
        self.specs: list[str] = []
        self.rows: dict[str, Any] = {}
        self.base: dict | None = None
        journal = os.path.join(self.out, JOURNAL)
        if not options.resume:
            for stale in (journal, os.path.join(self.study_dir, "results.json")):
                if os.path.exists(stale):
                    os.remove(stale)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # multivariate, group
        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(journal))
        self.study = optuna.create_study(study_name="advice", storage=storage, load_if_exists=True,
                                         directions=["minimize", "minimize"])  # fmt: skip
        self._check_request()
        self._recover()
        # A resumed search keeps its trials' rows in the study (a study drops the rows its recipes do not list);
        # failed and pruned ones are left out, or every batch would run them again (a study re-runs failed rows).
        self.specs = list(dict.fromkeys(t.user_attrs["spec"] for t in self.trials() if _kept(t.user_attrs)))

    # --- the request and the journal --------------------------------------------------------------------------

    def request(self) -> dict:
        """What must match for --resume to continue a search: the study basis and the constraints."""
        keep = ("task", "model", "dataset", "data", "epochs", "seed", "recipe_defaults", "task_options")
        d = self.config.to_dict()
        return {k: d[k] for k in keep} | {"constraints": self.limits.to_dict()}

    def _check_request(self) -> None:
        earlier = self.study.user_attrs.get("request")
        if earlier is None:
            self.study.set_user_attr("request", _jsonable(self.request()))
        elif earlier != _jsonable(self.request()):
            raise c_lib.AdviseError(
                f"Cannot resume: {os.path.join(self.out, JOURNAL)} holds a search with other settings or limits; "
                + "run without --resume to start over, or choose another --output_dir."
            )

    def _recover(self) -> None:
        """Marks trials left running by a killed advisor as failed (interrupted): they are asked again."""
        from optuna.trial import TrialState

        self.reruns = 0
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            self.study._storage.set_trial_user_attr(t._trial_id, "status", "interrupted")
            self.study.tell(t.number, state=TrialState.FAIL)
            if t.params:  # a stage-2 point: run again with the same parameters, in a batch of its own
                self.study.enqueue_trial(t.params)
                self.reruns += 1
            self.progress(f"Trial {t.number} ({t.user_attrs.get('spec', '?')}) was interrupted; it runs again.")

    def trials(self) -> list:
        """Every recorded trial but the interrupted ones, in order."""
        skipped = (None, "interrupted")
        return [t for t in self.study.get_trials(deepcopy=False) if t.user_attrs.get("status") not in skipped]

    def _done(self) -> dict[tuple, Any]:
        return {tuple(map(_tuple, t.user_attrs["key"])): t for t in self.trials() if t.user_attrs.get("key")}

    def ran(self) -> int:
        return sum(1 for t in self.trials() if t.user_attrs.get("status") != "duplicate")

    def out_of_budget(self) -> str | None:
        if self.ran() >= self.options.trials:
            return f"{self.options.trials} trials run (--trials)"
        spent = self.study.user_attrs.get("elapsed_s", 0.0) + time.monotonic() - self.started
        if self.options.time_budget_s is not None and spent >= self.options.time_budget_s:
            return f"{spent:.0f} s spent of {self.options.time_budget_s:g} s (--time_budget_s)"
        return None

    def save_elapsed(self) -> None:
        self.study.set_user_attr("elapsed_s", self.study.user_attrs.get("elapsed_s", 0.0) + time.monotonic()
                                 - self.started)  # fmt: skip
        self.started = time.monotonic()

    # --- running trials ---------------------------------------------------------------------------------------

    def baseline(self) -> dict:
        """Runs (or keeps) the fp32 row; its figures are what every trial is compared with."""
        self._run([])
        base = self.rows.get("fp32")
        if base is None or base["status"] != Status.OK.value:
            raise c_lib.AdviseError(f"the fp32 baseline failed: {(base or {}).get('error', 'no row')}")
        self.base = base
        return base

    def _run(self, specs: list[str]) -> None:
        self.specs += [s for s in specs if s not in self.specs]
        config = self.trial_config.replace(recipes=tuple(self.specs) or ("fp32",))  # () would be the default study
        results = runner.run(config, progress=lambda line: self.progress("    " + line), model=self.model,
                             dataset=self.dataset)  # fmt: skip
        self.rows = {r.recipe: r.to_dict() for r in results.rows}

    def run_batch(self, batch: list[tuple[Any, str, int]]) -> None:
        """Runs (trial, spec, stage) triples as one study call and tells Optuna each outcome."""
        from optuna.trial import TrialState

        if not batch:
            return
        names = ", ".join(spec for _, spec, _ in batch)
        self.progress(f"Trials {batch[0][0].number}-{batch[-1][0].number} (stage {batch[0][2]}): {names}")
        self._run([spec for _, spec, _ in batch])
        for trial, spec, stage in batch:
            row = self.rows.get(spec) or {"status": "failed", "error": "no row came back"}
            status, reason, fig = "ok", row.get("error"), None
            if row["status"] == Status.NOT_APPLICABLE.value:
                status = "not_applicable"
            elif row["status"] != Status.OK.value:
                status = "pruned" if STOPPED in (reason or "") else "failed"
            else:
                fig = c_lib.figures(row, self.base, self.metric, self.threads, self.runtime)
                status = "feasible" if not c_lib.misses(fig, self.limits) else "infeasible"
                reason = c_lib.describe_misses(fig, self.limits, c_lib.drop_unit(self.metric)) or None
            self._attrs(trial, spec, stage, status, reason, fig, row.get("tflite_path"))
            if fig is None:
                self.study.tell(trial, state=TrialState.PRUNED if status == "pruned" else TrialState.FAIL)
            else:
                self.study.tell(trial, c_lib.objective_values(fig, self.limits))
            self.progress(f"  trial {trial.number}: {spec}: {status}" + (f" ({reason})" if reason else ""))
            if status in ("failed", "pruned"):  # its outcome is in the journal; the next batch must not re-run it
                self.specs.remove(spec)
        self.save_elapsed()

    def _attrs(self, trial, spec, stage, status, reason, fig, path, duplicate_of=None) -> None:
        trial.set_user_attr("spec", spec)
        trial.set_user_attr("key", _jsonable(space.key(spec, self.config.recipe_defaults)))
        trial.set_user_attr("stage", stage)
        trial.set_user_attr("status", status)
        trial.set_user_attr("reason", reason)
        trial.set_user_attr("figures", _jsonable(fig))
        trial.set_user_attr("tflite_path", path)
        if duplicate_of is not None:
            trial.set_user_attr("duplicate_of", duplicate_of)
        if fig is not None:
            for name, value in zip(self.limits.limits(), c_lib.violations(fig, self.limits), strict=True):
                trial.set_constraint(name, value)

    def fixed(self, specs: list[str], stage: int) -> list[str]:
        """Runs these specs (those not run yet, up to the budget) as trials of ``stage``; returns the new ones."""
        done, todo = self._done(), []
        for spec in specs:
            k = tuple(map(_tuple, _jsonable(space.key(spec, self.config.recipe_defaults))))
            if k not in done and spec not in todo:
                todo.append(spec)
        ran = []
        while todo and not self.out_of_budget():
            room = self.options.trials - self.ran()
            chunk, todo = todo[: min(room, self.options.batch * 2)], todo[min(room, self.options.batch * 2) :]
            self.run_batch([(self.study.ask(), spec, stage) for spec in chunk])
            ran += chunk
        return ran

    def sampled(self, convolutional: bool, export: str = "int8") -> None:
        """Stage 2: the sampler proposes; duplicates are told the earlier result without running.

        Its first points are space.warm_start's, with ``export`` after their transforms.
        """
        import optuna

        for point in space.warm_start(convolutional, export):
            if not self.study.user_attrs.get("warm_started"):
                self.study.enqueue_trial(point, skip_if_exists=True)
        self.study.set_user_attr("warm_started", True)
        asked, limit = 0, self.options.trials * 4  # a sampler stuck on known points stops here
        while not self.out_of_budget() and asked < limit:
            finished = len(self.trials())  # not the interrupted ones: a resumed search is seeded as the first was
            self.study.sampler = optuna.samplers.TPESampler(
                seed=self.config.seed * 100_003 + finished, n_startup_trials=6, multivariate=True, group=True
            )
            batch, done = [], self._done()
            size = self.reruns or self.options.batch  # the interrupted batch first, as it was (then seeds agree)
            self.reruns = 0
            while len(batch) < min(size, self.options.trials - self.ran()) and asked < limit:
                trial = self.study.ask()
                asked += 1
                spec = space.sample(trial, convolutional)
                k = tuple(map(_tuple, _jsonable(space.key(spec, self.config.recipe_defaults))))
                earlier = done.get(k) or next((b for b in batch if b[1] == spec), None)
                if earlier is None:
                    batch.append((trial, spec, 2))
                    continue
                self._duplicate(trial, spec, earlier)
            self.run_batch(batch)
            if not batch:
                break

    def _duplicate(self, trial, spec: str, earlier) -> None:
        from optuna.trial import TrialState

        if isinstance(earlier, tuple):  # proposed twice in one batch: the second one is not run
            self._attrs(trial, spec, 2, "duplicate", f"same as trial {earlier[0].number}", None, None,
                        earlier[0].number)  # fmt: skip
            self.study.tell(trial, state=TrialState.FAIL)
            return
        fig = earlier.user_attrs.get("figures")
        self._attrs(trial, spec, 2, "duplicate", f"same as trial {earlier.number}", fig,
                    earlier.user_attrs.get("tflite_path"), earlier.number)  # fmt: skip
        if earlier.state == TrialState.COMPLETE:
            self.study.tell(trial, list(earlier.values))
        else:
            self.study.tell(trial, state=earlier.state)
        self.progress(f"  trial {trial.number}: {spec}: the same as trial {earlier.number}; not run again")

    def prepared(self):
        # twin=True: a Keras 3 model's tf_keras twin is what stage 2's training-time recipes would start from.
        return job_lib.prepare(self.trial_config, lambda _: None, 0, self.model, self.dataset, twin=True)


def _kept(attrs: dict) -> bool:
    """Whether a trial's row stays in the study: it has a spec and did not fail (failed rows run again)."""
    return bool(attrs.get("spec")) and attrs.get("status") not in ("failed", "pruned")


def _jsonable(value):
    """Tuples as lists, recursively (what the journal stores and gives back)."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _tuple(value):
    return tuple(map(_tuple, value)) if isinstance(value, list) else value
