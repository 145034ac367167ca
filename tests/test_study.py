"""The study end to end through the library: rows, files, the baseline, crashes, the model cache."""

import json
import os
import sys

import numpy as np
import pytest

from tfcompress.measure import latency as benchmark
from tfcompress.measure import macs
from tfcompress.study import StudyError, from_flat, run
from tfcompress.study.results import Status


def _config(tmp_path, **kwargs):
    defaults = dict(
        model="cnn",
        dataset="digits",
        epochs=3,
        recipes=("fp32", "dynamic_range", "int8"),
        num_runs=5,
        warmup_runs=1,
        isolate=False,  # in-process, so monkeypatched helpers apply; tests/test_isolation.py covers isolation
    )
    return from_flat(output_dir=str(tmp_path / "out"), **(defaults | kwargs))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("study")
    lines = []
    results = run(_config(tmp, threads=(1, 2)), progress=lines.append)
    return tmp / "out", results, lines


def test_every_recipe_gives_an_ok_row_with_measurements(study):
    out, results, _ = study
    assert [r.recipe for r in results.rows] == ["fp32", "dynamic_range", "int8"]
    for row in results.rows:
        assert row.status is Status.OK, row.error
        path = out / row.tflite_path
        assert path.is_file() and path.stat().st_size == row.size_bytes
        assert 0 < row.gzip_bytes < row.size_bytes
        assert row.bytes_per_param == pytest.approx(row.size_bytes / row.params)
        assert row.metric_name == "accuracy" and 0.5 < row.metric <= 1
        assert [s.threads for s in row.latency] == [1, 2]
        assert all(s.runs == 5 for s in row.latency)
        assert row.macs == macs.tflite_macs(path.read_bytes()) > 0
        assert all(s.delegated_ops == s.total_ops for s in row.latency), row.latency  # XNNPACK takes this CNN
    peaks = results.environment["peak"]
    assert set(peaks) == {"1", "2"} and all(p["peak_gflops"] > 0 for p in peaks.values())
    assert "int8_dot_product" in results.environment["cpu_features"]


def test_fp32_is_the_agreement_reference(study):
    _, results, _ = study
    fp32, _, int8 = results.rows
    assert fp32.agreement == 1.0
    assert 0.9 <= int8.agreement <= 1.0


def test_results_json_matches_the_schema(study):
    out, results, _ = study
    saved = json.loads((out / "results.json").read_text())
    assert saved["schema_version"] == 1
    assert {
        "python",
        "tensorflow",
        "tensorflow_model_optimization",
        "ai_edge_litert",
        "numpy",
        "cpu",
        "cpu_count",
    } <= set(saved["environment"])
    assert saved["config"]["recipes"] == ["fp32", "dynamic_range", "int8"]
    keys = {"task", "model", "recipe", "status", "error", "tflite_path", "size_bytes", "gzip_bytes", "params"}
    keys |= {"bytes_per_param", "metric_name", "metric", "agreement", "latency"}
    for row in saved["rows"]:
        assert keys <= set(row)
        assert set(row["latency"][0]) >= {"threads", "median_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "runs"}
    for name in ("results.csv", "report.md", "size_vs_metric.png", "latency.png"):
        assert (out / name).stat().st_size > 0
    assert not [p for p in os.listdir(out) if p.startswith(".tmp")]


def test_progress_has_a_line_per_recipe(study):
    _, _, lines = study
    assert sum(line.startswith("[") for line in lines) == 3
    assert lines[0].startswith("Model cnn: trained")


def test_rerun_reuses_the_cached_model(study, tmp_path):
    out, first, _ = study
    lines = []
    again = run(_config(out.parent, recipes=("fp32",)), progress=lines.append)
    assert lines[0].startswith("Model cnn: loaded from the cache")
    assert again.rows[0].metric == first.rows[0].metric


def test_fp32_runs_first_even_when_not_asked_for(tmp_path):
    results = run(_config(tmp_path, recipes=("float16",), epochs=1))
    assert [r.recipe for r in results.rows] == ["fp32", "float16"]


def _abort_latency_of(monkeypatch, file_name):
    """Makes the latency child of one .tflite file abort natively (SIGABRT)."""
    real = benchmark._worker_command

    def command(path, *args):
        if path.endswith(file_name):
            return [sys.executable, "-c", "import os; os.abort()"]
        return real(path, *args)

    monkeypatch.setattr(benchmark, "_worker_command", command)


def test_native_crash_in_latency_child_is_a_failed_row_and_the_study_goes_on(tmp_path, monkeypatch):
    _abort_latency_of(monkeypatch, "int8.tflite")
    results = run(_config(tmp_path, epochs=1))
    status = {r.recipe: r for r in results.rows}
    assert status["fp32"].ok and status["dynamic_range"].ok
    assert status["int8"].status is Status.FAILED
    assert "SIGABRT" in status["int8"].error
    assert status["int8"].metric is not None  # what was measured before the crash is kept


def test_bad_settings_are_refused_before_any_work(tmp_path):
    with pytest.raises(StudyError, match="threads must be positive"):
        _config(tmp_path, threads=(0,))
    with pytest.raises(StudyError, match="Unknown dataset 'cifar'"):
        _config(tmp_path, dataset="cifar")
    output_file = tmp_path / "file"
    output_file.write_text("x")
    with pytest.raises(StudyError, match="is a file"):
        run(from_flat(output_dir=str(output_file)))


def test_data_that_does_not_fit_the_model_names_both_shapes(tmp_path, tiny_cnn):
    model_path = tmp_path / "tiny.keras"
    tiny_cnn.save(model_path)
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "wrong.npz",
        x_train=rng.integers(0, 255, (20, 28, 28), dtype=np.uint8),
        y_train=np.arange(20) % 10,
        x_test=rng.integers(0, 255, (10, 28, 28), dtype=np.uint8),
        y_test=np.arange(10),
    )
    from tfcompress.data import DataError

    with pytest.raises(DataError, match=r"shape \(28, 28, 1\) but the model takes \(8, 8, 1\)"):
        run(from_flat(model=str(model_path), data=str(tmp_path / "wrong.npz"), output_dir=str(tmp_path / "o")))
    assert not (tmp_path / "o" / "results.json").exists()


def test_training_time_rows_carry_sparsity_and_not_applicable_reasons(tmp_path):
    results = run(_config(tmp_path, recipes=("prune:0.5", "prune_xnnpack"), finetune_epochs=1, threads=(1,)))
    rows = {r.recipe: r for r in results.rows}
    assert rows["prune:0.5"].ok and abs(rows["prune:0.5"].extras["sparsity"] - 0.5) <= 0.01
    assert rows["prune:0.5"].extras["stages"][0] == {
        "recipe": "prune",
        "params": {"finetune_epochs": 1, "finetune_learning_rate": 5e-4, "sparsity": 0.5,
                   "pruning_schedule": "polynomial"},
    }  # fmt: skip
    assert (tmp_path / "out" / "cnn" / "prune_0.5.tflite").is_file()
    xnn = rows["prune_xnnpack"]
    assert xnn.status is Status.NOT_APPLICABLE and "Conv2D 3x3" in xnn.error and xnn.tflite_path is None
    report = (tmp_path / "out" / "report.md").read_text()
    assert "compare `gzip x fp32`" in report and "not_applicable" in report


def test_resume_keeps_finished_rows_and_runs_the_rest(tmp_path):
    full = run(_config(tmp_path, epochs=1))
    out = tmp_path / "out"
    saved = json.loads((out / "results.json").read_text())
    saved["rows"] = saved["rows"][:2]  # as if the study had been killed during int8
    (out / "results.json").write_text(json.dumps(saved))
    lines = []
    resumed = run(_config(tmp_path, epochs=1, resume=True), progress=lines.append)
    assert [r.recipe for r in resumed.rows] == ["fp32", "dynamic_range", "int8"]
    assert sum("[kept from the earlier run]" in line for line in lines) == 2
    for a, b in zip(full.rows, resumed.rows, strict=True):
        assert (a.recipe, a.status, a.size_bytes, a.metric, a.agreement) == (
            b.recipe, b.status, b.size_bytes, b.metric, b.agreement
        )  # fmt: skip


def test_resume_refuses_results_of_another_configuration(tmp_path):
    run(_config(tmp_path, epochs=1, recipes=("fp32",)))
    with pytest.raises(StudyError, match="made with another configuration"):
        run(_config(tmp_path, epochs=1, recipes=("fp32",), seed=1, resume=True))


def test_fail_fast_stops_at_the_first_failed_row(tmp_path, monkeypatch):
    _abort_latency_of(monkeypatch, "dynamic_range.tflite")
    results = run(_config(tmp_path, epochs=1, fail_fast=True))
    assert [(r.recipe, r.status.value) for r in results.rows] == [("fp32", "ok"), ("dynamic_range", "failed")]


def test_language_task_reports_bits_per_char_measured_on_the_tflite(tmp_path):
    from tfcompress.tasks import language

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(language.default_text()[:12_000], encoding="utf-8")
    config = _config(tmp_path, task="language", model="", text_file=str(corpus), context=16, epochs=1,
                     recipes=("dynamic_range", "int16x8", "prune:0.5"), finetune_epochs=1, num_runs=3)  # fmt: skip
    assert config.model == "transformer"
    rows = {r.recipe: r for r in run(config).rows}
    fp32 = rows["fp32"]
    assert fp32.ok and fp32.metric_name == "bits_per_char" and 0 < fp32.metric < 6  # uniform over ~90 chars: 6.5
    assert fp32.extras["perplexity"] == pytest.approx(2**fp32.metric)
    assert rows["dynamic_range"].ok and rows["dynamic_range"].metric == pytest.approx(fp32.metric, rel=0.01)
    int16 = rows["int16x8"]  # the runtime cannot run LayerNorm in int16: reported as it is
    assert int16.ok or (int16.status is Status.FAILED and int16.error)
    assert rows["prune:0.5"].ok and rows["prune:0.5"].extras["sparsity"] > 0.3
    report = (tmp_path / "out" / "report.md").read_text()
    assert "lower is better" in report
