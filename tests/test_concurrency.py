"""Recipes side by side (--jobs): the same rows as one at a time, longest first, and Ctrl-C still reports."""

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.conftest import ROOT, wait_for_rows
from tfcompress.study import from_flat, run
from tfcompress.study.executor import CpuSlots
from tfcompress.study.results import Status

PLUGINS = ("tests.plugin_recipes",)


def _config(tmp_path, **kwargs):
    defaults = dict(
        dataset="digits", epochs=1, num_runs=3, rounds=1, min_time_s=0.0, warmup_runs=0, plugins=PLUGINS, isolate=True
    )
    return from_flat(output_dir=str(tmp_path / "out"), **(defaults | kwargs))


def test_prefix_dependencies_make_a_job_wait_for_the_one_that_builds_its_transform():
    from tfcompress import recipes
    from tfcompress.study.executor import Job
    from tfcompress.study.schedule import prefix_dependencies

    specs = ["fp32", "prune:0.5>int8", "int8", "prune:0.5>dynamic_range", "prune:0.5>cluster:8>int8",
             "prune:0.5>cluster:8>dynamic_range", "prune:0.8>int8"]  # fmt: skip
    jobs = [Job(i, recipes.parse(s), None) for i, s in enumerate(specs)]
    # the first earlier job sharing the longest prefix: the one that builds it (job 4 need not wait for job 3)
    assert prefix_dependencies(jobs) == {3: 1, 4: 1, 5: 4}


def test_the_scheduler_keeps_to_its_width_and_order_and_stops_what_runs_when_left():
    from tfcompress import recipes
    from tfcompress.study.executor import Job
    from tfcompress.study.schedule import scheduled

    specs = ["prune:0.5>int8", "int8", "prune:0.5>dynamic_range", "dynamic_range", "float16"]
    jobs = [Job(i, recipes.parse(s), None) for i, s in enumerate(specs)]
    log, stopped = [], []

    def start(job):
        log.append(("start", job.index))
        return f"handle-{job.index}"

    def wait_any(handles):  # the newest running job ends first
        assert 1 <= len(handles) <= 2
        return max(handles)

    done = []
    for job, handle in scheduled(jobs, start, wait_any, stopped.append, width=2):
        assert handle == f"handle-{job.index}"
        done.append(job.index)
        log.append(("end", job.index))
    assert done == [1, 3, 4, 0, 2] and not stopped
    # job 2 reuses job 0's pruned model: it starts only after job 0 ended, and job 3 went ahead of it meanwhile
    assert log.index(("start", 2)) > log.index(("end", 0)) and log.index(("start", 3)) < log.index(("start", 2))

    stopped.clear()
    loop = scheduled(jobs, start, wait_any, stopped.append, width=2)
    next(loop)  # the caller stops after the first row (--fail_fast): what is still running is stopped
    loop.close()
    assert stopped == ["handle-0"]

    # Two at a time, the job with the most fine-tuning starts first, wherever it stands in the study ...
    specs = ["int8", "dynamic_range", "prune:0.5", "prune:0.5>cluster:8>int8", "float16"]
    jobs = [Job(i, recipes.parse(s), None) for i, s in enumerate(specs)]
    log.clear()
    list(scheduled(jobs, start, wait_any, stopped.append, width=2))
    starts = [i for what, i in log if what == "start"]
    assert starts[:2] == [2, 0] and starts.index(3) == 2  # job 3 waits for the pruning of job 2, then goes next
    # ... and one at a time keeps the study's order.
    log.clear()
    list(scheduled(jobs, start, wait_any, stopped.append, width=1))
    assert [i for what, i in log if what == "start"] == [0, 1, 2, 3, 4]


def test_concurrent_jobs_give_the_rows_of_a_serial_run_and_overlap(tmp_path, monkeypatch):
    monkeypatch.setenv("TFCOMPRESS_JOB_CPUS", "1")  # the same threads per job in both runs, so the same numbers
    recipes = ("prune:0.5>int8", "int8", "prune:0.5>dynamic_range", "abort_for_test", "raise_for_test")
    lines = {"serial": [], "concurrent": []}
    serial = run(_config(tmp_path / "a", recipes=recipes, finetune_epochs=1, jobs=1), lines["serial"].append)
    concurrent = run(_config(tmp_path / "b", recipes=recipes, finetune_epochs=1, jobs=2), lines["concurrent"].append)
    for a, b in zip(serial.rows, concurrent.rows, strict=True):  # in study order, whatever order they finished in
        assert (a.recipe, a.status, a.metric, a.agreement, a.metric_delta_ci) == (
            b.recipe, b.status, b.metric, b.agreement, b.metric_delta_ci)  # fmt: skip
        assert (a.metric_ci, a.delta_within_noise) == (b.metric_ci, b.delta_within_noise)
        assert a.size_bytes == pytest.approx(b.size_bytes, rel=0.001) if a.ok else a.error == b.error
        assert a.extras.get("sparsity") == b.extras.get("sparsity")

    # A native abort and an exception are failed rows, and the study goes on (in both runs: the rows are equal).
    rows = {r.recipe: r for r in concurrent.rows}
    assert [r.recipe for r in concurrent.rows] == ["fp32", *recipes]
    assert rows["abort_for_test"].status is Status.FAILED
    assert "recipe process killed by signal SIGABRT" in rows["abort_for_test"].error
    assert rows["raise_for_test"].error == "RuntimeError: this recipe always fails"
    assert rows["fp32"].ok and rows["int8"].ok
    # The baseline ran beside the others, and the loop compared each row with it: agreement and the paired
    # bootstrap of the difference (equal to the serial run's, where each recipe process compared itself).
    assert 0.9 <= rows["int8"].agreement <= 1.0
    low, high = rows["int8"].metric_delta_ci
    assert low <= (rows["int8"].metric - rows["fp32"].metric) * 100 <= high and high - low < 5
    assert rows["fp32"].metric_delta_ci == [0.0, 0.0] and rows["fp32"].metric_ci[0] <= rows["fp32"].metric
    for out in (tmp_path / "a" / "out", tmp_path / "b" / "out"):
        assert not [p for p in os.listdir(out) if p.startswith((".work", ".tmp", ".transforms"))]

    def order(log):
        return [line.split("] ", 1)[1].split(" (")[0] for line in log if line.startswith("[")]

    events = order(lines["concurrent"])
    # fp32 started first, and the pruning (the longest job) beside it, before the conversions ...
    assert events[:2] == ["fp32: converting ...", "prune:0.5>int8: fine-tuning ..."]
    # ... int8 started while the pruning was still running (two at once) ...
    assert events.index("int8: converting ...") < next(
        i for i, e in enumerate(events) if e.startswith("prune:0.5>int8: ok")
    )
    # ... and the job reusing the pruned model waited for the job that built it.
    first_done = next(i for i, e in enumerate(events) if e.startswith("prune:0.5>int8: ok"))
    assert events.index("prune:0.5>dynamic_range: fine-tuning ...") > first_done
    assert any("rows done" in line and "elapsed" in line for line in lines["concurrent"])


def test_ctrl_c_writes_the_report_of_the_finished_rows_and_leaves_no_process(tmp_path):
    out = tmp_path / "interrupted"
    command = [sys.executable, "-m", "experiments.study", "--dataset=digits", "--epochs=1", "--num_runs=3",
               "--rounds=1", "--min_time_s=0", "--jobs=2", "--recipes=fp32,dynamic_range,float16,int8,int16x8,"
               + "q_dynamic_int8,q_int8", f"--output_dir={out}"]  # fmt: skip
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    wait_for_rows(proc, out)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends: the whole foreground group
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "Interrupted" in stderr and "--resume" in stderr
    finished = [r["recipe"] for r in json.loads((out / "results.json").read_text())["rows"]]
    assert 2 <= len(finished) < 7
    report, csv = (out / "report.md").read_text(), (out / "results.csv").read_text().splitlines()
    assert len(csv) == 1 + len(finished) and all(f"| {r}" in report or f"`{r}`" in report for r in finished)
    left = subprocess.run(["pgrep", "-f", str(out)], capture_output=True, text=True).stdout.split()
    assert not left, f"processes left running: {left}"


def test_cpu_slots_pin_each_running_job_to_cores_of_its_own_and_reuse_them():
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs 2 CPUs")
    slots = CpuSlots(2, 1)
    children = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) for _ in range(3)]
    try:
        first, second = slots.pin(0, children[0].pid), slots.pin(1, children[1].pid)
        assert first == {cpus[0]} and second == {cpus[1]}  # disjoint, one core each
        assert [os.sched_getaffinity(c.pid) for c in children[:2]] == [first, second]  # the processes', not a record
        slots.release(0)
        assert slots.pin(2, children[2].pid) == first and os.sched_getaffinity(children[2].pid) == first
    finally:
        for child in children:
            child.kill()
            child.wait()
    assert not CpuSlots(len(cpus) + 1, 1) and not CpuSlots(2, len(cpus)) and not CpuSlots(1, 1)  # pin nothing
