"""Recipes run in their own processes: crashes, hangs and kills never cost finished rows."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, wait_for_rows
from tfcompress.study import from_flat, run
from tfcompress.study.results import Status

PLUGINS = ("tests.plugin_recipes",)


def _config(tmp_path, **kwargs):
    defaults = dict(
        dataset="digits", epochs=1, num_runs=3, rounds=1, min_time_s=0.0, warmup_runs=0, plugins=PLUGINS, isolate=True
    )
    return from_flat(output_dir=str(tmp_path / "out"), **(defaults | kwargs))


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
    wait_for_rows(proc, out)
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
