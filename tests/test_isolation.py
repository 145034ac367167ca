"""Recipes run in their own processes: crashes, hangs and kills never cost finished rows."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT
from tfcompress.study import from_flat, run
from tfcompress.study.results import Status

PLUGINS = ("tests.plugin_recipes",)


def _config(tmp_path, **kwargs):
    defaults = dict(
        dataset="digits", epochs=1, num_runs=3, rounds=1, min_time_s=0.0, warmup_runs=0, plugins=PLUGINS, isolate=True
    )
    return from_flat(output_dir=str(tmp_path / "out"), **(defaults | kwargs))


def test_a_native_abort_is_a_failed_row_and_the_study_goes_on(tmp_path):
    results = run(_config(tmp_path, recipes=("abort_for_test", "raise_for_test", "int8")))
    rows = {r.recipe: r for r in results.rows}
    assert [r.recipe for r in results.rows] == ["fp32", "abort_for_test", "raise_for_test", "int8"]
    assert rows["abort_for_test"].status is Status.FAILED
    assert "recipe process killed by signal SIGABRT" in rows["abort_for_test"].error
    assert rows["raise_for_test"].error == "RuntimeError: this recipe always fails"
    assert rows["fp32"].ok and rows["int8"].ok
    assert 0.9 <= rows["int8"].agreement <= 1.0  # the baseline's predictions reached the isolated int8 run
    low, high = rows["int8"].metric_delta_ci  # and so did its per-example correctness, for the paired bootstrap
    assert low <= (rows["int8"].metric - rows["fp32"].metric) * 100 <= high and high - low < 5
    assert rows["fp32"].metric_delta_ci == [0.0, 0.0] and rows["fp32"].metric_ci[0] <= rows["fp32"].metric
    assert not [p for p in os.listdir(tmp_path / "out") if p.startswith((".work", ".tmp", ".transforms"))]


def test_a_hanging_recipe_is_killed_after_the_timeout(tmp_path):
    start = time.monotonic()
    results = run(_config(tmp_path, recipes=("hang_for_test",), recipe_timeout_s=12))
    hung = results.rows[1]
    assert hung.status is Status.FAILED and "timed out after 12 s" in hung.error
    assert time.monotonic() - start < 90


def test_isolated_rows_equal_in_process_rows(tmp_path):
    isolated = run(_config(tmp_path / "a", recipes=("prune:0.5>int8",), finetune_epochs=1))
    in_process = run(_config(tmp_path / "b", recipes=("prune:0.5>int8",), finetune_epochs=1, isolate=False))
    for a, b in zip(isolated.rows, in_process.rows, strict=True):
        assert (a.recipe, a.status, a.metric, a.agreement) == (b.recipe, b.status, b.metric, b.agreement)
        assert (a.metric_ci, a.metric_delta_ci, a.delta_within_noise) == (
            b.metric_ci, b.metric_delta_ci, b.delta_within_noise
        )  # fmt: skip
        assert a.extras.get("sparsity") == b.extras.get("sparsity")
        # Tensor names in the file differ (Keras numbers layers per process), so sizes differ by a few bytes.
        assert a.size_bytes == pytest.approx(b.size_bytes, rel=0.001)


def _study_command(out):
    # In-process recipes (--noisolate): a kill of the study itself is what this tests, and it is 3x faster.
    return [sys.executable, "-m", "experiments.study", "--dataset=digits", "--epochs=1", "--num_runs=3", "--rounds=1",
            "--min_time_s=0", "--noisolate", "--recipes=fp32,dynamic_range,float16,int8,int16x8",
            f"--output_dir={out}"]  # fmt: skip


def _rows(out):
    return [
        (r["recipe"], r["status"], r["size_bytes"], r["metric"], r["agreement"])
        for r in json.loads((out / "results.json").read_text())["rows"]
    ]


def test_sigkill_mid_study_then_resume_gives_the_rows_of_an_uninterrupted_run(tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen(_study_command(out), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        try:
            if len(json.loads((out / "results.json").read_text())["rows"]) >= 2:
                break
        except (FileNotFoundError, json.JSONDecodeError):
            pass  # not written yet (a partial file is never visible: writes are atomic)
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("the study never finished two rows")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = _rows(out)  # still valid JSON, holding every finished row
    assert 2 <= len(partial) < 5 and all(status == "ok" for _, status, *_ in partial)

    resumed = subprocess.run(_study_command(out) + ["--resume"], cwd=ROOT, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "[kept from the earlier run]" in resumed.stdout

    # The uninterrupted reference starts from the same trained baseline (its cached model).
    shutil.copytree(out / "models", tmp_path / "ref" / "models")
    reference = subprocess.run(_study_command(tmp_path / "ref"), cwd=ROOT, capture_output=True, text=True)
    assert reference.returncode == 0, reference.stderr[-2000:]
    assert _rows(out) == _rows(tmp_path / "ref")
