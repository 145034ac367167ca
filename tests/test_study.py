"""The study end to end through the library: rows, files, the baseline, crashes, the model cache."""

import json
import os
import sys

import numpy as np
import pytest

from tests.conftest import wrap_latency_worker
from tfcompress.measure import macs
from tfcompress.study import StudyError, from_flat, run, runner
from tfcompress.study.results import Status


def _config(tmp_path, **kwargs):
    defaults = dict(
        model="cnn",
        dataset="digits",
        epochs=3,
        recipes=("fp32", "dynamic_range", "int8"),
        num_runs=5,
        rounds=1,
        min_time_s=0.0,
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
    peaks = results.environment["peak"]  # a roof per data type, thread count and runtime
    assert set(peaks) == set(macs.DTYPES)
    assert all(peaks[d][t]["interpreter"]["gflops"] > 0 for d in peaks for t in ("1", "2"))
    for row in results.rows:
        assert row.compute_dtype == {"fp32": "fp32", "dynamic_range": "dynamic_range", "int8": "int8"}[row.recipe]
        for s in row.latency:  # each latency divides by the roof of the data type its MACs run in
            assert (
                s.roof == row.compute_dtype and s.roof_gflops == peaks[s.roof][str(s.threads)]["interpreter"]["gflops"]
            )
            assert s.roofline == pytest.approx(2 * row.macs / (s.median_ms * 1e-3) / 1e9 / s.roof_gflops)
            assert s.ci_low_ms <= s.median_ms <= s.ci_high_ms and s.overhead_bound in (True, False)
    assert set(results.environment["overhead"]["interpreter"]) == {"1", "2"}
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


def test_each_rows_metric_is_its_saved_tflite_scored_on_the_test_split(study):
    from tfcompress import tasks
    from tfcompress.measure.evaluate import run_tflite
    from tfcompress.study import StudyConfig
    from tfcompress.study.cache import ModelCache

    out, _, _ = study
    saved = json.loads((out / "results.json").read_text())
    config = StudyConfig.from_dict(saved["config"])  # the data as the study prepared it, from the file alone
    task = tasks.get(config.task)
    dataset = task.load_data(config.setup(ModelCache(config.run.models_dir)))
    rows = [row for row in saved["rows"] if row["status"] == "ok"]
    assert [row["recipe"] for row in rows] == ["fp32", "dynamic_range", "int8"]
    for row in rows:
        score = task.score(run_tflite(str(out / row["tflite_path"]), dataset.x_test), dataset)
        assert score.metric == row["metric"], row["recipe"]


def test_every_row_carries_its_metrics_interval_and_its_paired_difference_to_fp32(study):
    out, results, _ = study
    saved = json.loads((out / "results.json").read_text())
    for row, kept in zip(saved["rows"], results.rows, strict=True):
        low, high = row["metric_ci"]  # about +-2 points on the digits' 360 test images
        assert low <= row["metric"] <= high and 0 < high - low < 0.1
        assert (row["metric_delta_ci"], row["delta_within_noise"]) == (kept.metric_delta_ci, kept.delta_within_noise)
        assert not [key for key in row if key.startswith("_")]  # per-example arrays are never saved
    fp32 = results.rows[0]
    assert fp32.metric_delta_ci == [0.0, 0.0] and fp32.delta_within_noise is True
    for row in results.rows[1:]:
        low, high = row.metric_delta_ci  # in points, as the report shows accuracy's change
        assert low <= (row.metric - fp32.metric) * 100 <= high and high - low < 5
        assert row.delta_within_noise is (low <= 0 <= high)
        if row.agreement == 1.0:  # the same predictions as fp32 on every example: no difference in any draw
            assert [low, high] == [0.0, 0.0]


def test_a_row_identical_to_fp32_is_within_noise_and_a_clearly_worse_one_is_not(study, tmp_path):
    from tfcompress.study import InProcessExecutor, report
    from tfcompress.study import job as job_lib
    from tfcompress.study.executor import Job, Reference
    from tfcompress.study.results import Results

    out, _, _ = study
    config = _config(tmp_path, recipes=("tagged_for_test", "shifted_for_test"), plugins=("tests.plugin_recipes",),
                     cache_dir=str(out / "models"))  # fmt: skip
    prepared = job_lib.prepare(config, lambda _: None, 0)  # the study's trained CNN, from its cache
    jobs = [Job(i, p, job_lib.skeleton(config, prepared, p)) for i, p in enumerate(config.pipelines())]
    executor = InProcessExecutor(config, prepared)  # the rows' metrics, as the study's loop gets them (no latency)
    baseline = next(executor.run(jobs[:1], Reference()))
    fp32, (same, worse) = baseline.row, [o.row for o in executor.run(jobs[1:], baseline.outputs)]
    assert same.metric == fp32.metric and same.metric_delta_ci == [0.0, 0.0] and same.delta_within_noise is True
    low, high = worse.metric_delta_ci  # every digit named as the next one: accuracy falls to about 0
    assert worse.metric < 0.2 and high < -50 and worse.delta_within_noise is False
    table = report.format_table(Results({}, {}, [fp32, same, worse]))
    assert "+0.00 pt [+0.00, +0.00] noise" in table
    assert f"{(worse.metric - fp32.metric) * 100:+.2f} pt [{low:+.2f}, {high:+.2f}] " in table  # no mark


def test_progress_has_a_line_per_recipe_as_it_starts_and_as_it_ends(study):
    _, _, lines = study
    started = [line for line in lines if line.startswith("[") and line.endswith(" ...")]
    ended = [line for line in lines if line.startswith("[") and not line.endswith(" ...")]
    assert len(started) == len(ended) == 3
    assert "3 of 3 rows done" in ended[-1] and "elapsed" in ended[-1]  # and the time left, until the last
    assert "left before the latency phase" in ended[0]
    assert lines[0].startswith("Model cnn: trained")


def test_the_study_records_and_prints_the_wall_time_of_each_phase(study):
    out, results, lines = study
    phases = results.environment["phase_s"]
    assert list(phases) == ["prepare", "rows", "latency"] and all(v >= 0 for v in phases.values())
    assert phases["prepare"] > 0.5 and phases["latency"] > 0.5  # training the CNN; timing 3 rows at 2 settings
    assert json.loads((out / "results.json").read_text())["environment"]["phase_s"] == phases  # saved at the end
    assert lines[-1].startswith("Done in ") and lines[-1].endswith(".")
    m, s = (int(x) for x in lines[-1].split()[2].rstrip(":").split(":"))
    assert m * 60 + s >= round(sum(phases.values())) - 1  # the whole run, the report included
    for name, seconds in phases.items():
        assert f"{runner._Phases.NAMES[name]} {runner._clock(seconds)}" in lines[-1]


def test_rerun_reuses_the_cached_model(study, tmp_path):
    out, first, _ = study
    lines = []
    again = run(_config(out.parent, recipes=("fp32",)), progress=lines.append)
    assert lines[0].startswith("Model cnn: loaded from the cache")
    assert again.rows[0].metric == first.rows[0].metric


def test_fp32_runs_first_even_when_not_asked_for(tmp_path):
    results = run(_config(tmp_path, recipes=("float16",), epochs=1))
    assert [r.recipe for r in results.rows] == ["fp32", "float16"]


def _abort_latency_of(monkeypatch, file_name, folder):
    """Makes the latency measurement of one .tflite file abort its measuring process natively (SIGABRT)."""
    wrap_latency_worker(folder, monkeypatch, crash=file_name)


def test_native_crash_in_latency_child_is_a_failed_row_and_the_study_goes_on(tmp_path, monkeypatch):
    _abort_latency_of(monkeypatch, "int8.tflite", tmp_path)
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
                   "pruning_schedule": "polynomial", "allocation": "uniform"},
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
        assert (a.recipe, a.status, a.size_bytes, a.metric, a.agreement, a.metric_delta_ci) == (
            b.recipe, b.status, b.size_bytes, b.metric, b.agreement, b.metric_delta_ci
        )  # fmt: skip
    assert resumed.rows[2].metric_delta_ci is not None  # int8 ran against the kept fp32 row's recomputed outputs


def test_resume_refuses_results_of_another_configuration(tmp_path):
    run(_config(tmp_path, epochs=1, recipes=("fp32",)))
    with pytest.raises(StudyError, match="made with another configuration"):
        run(_config(tmp_path, epochs=1, recipes=("fp32",), seed=1, resume=True))


def test_fail_fast_stops_at_the_first_failed_row(tmp_path):
    config = _config(tmp_path, epochs=1, fail_fast=True, plugins=("tests.plugin_recipes",),
                     recipes=("fp32", "raise_for_test", "int8"))  # fmt: skip
    results = run(config)
    assert [(r.recipe, r.status.value) for r in results.rows] == [("fp32", "ok"), ("raise_for_test", "failed")]
    assert results.rows[0].latency  # the rows finished before the stop are still timed


def test_a_latency_crash_after_every_row_is_built_fails_only_its_row(tmp_path, monkeypatch):
    _abort_latency_of(monkeypatch, "dynamic_range.tflite", tmp_path)
    results = run(_config(tmp_path, epochs=1, fail_fast=True))
    status = {r.recipe: r.status.value for r in results.rows}
    assert status == {"fp32": "ok", "dynamic_range": "failed", "int8": "ok"}  # timing comes last: nothing to stop
    assert "killed by signal SIGABRT" in results.rows[1].error


@pytest.mark.slow
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
    low, high = rows["dynamic_range"].metric_delta_ci  # in bits per character: windows resampled, paired
    assert low <= rows["dynamic_range"].metric - fp32.metric <= high and high - low < 0.05
    int16 = rows["int16x8"]  # it converts, but the runtime has no int16 kernel for LayerNorm's squared difference
    assert int16.status is Status.FAILED and int16.size_bytes > 0 and int16.metric is None
    assert int16.error.startswith("RuntimeError: SquaredDifference only supports FLOAT32 and INT32")
    assert "(SQUARED_DIFFERENCE) failed to invoke" in int16.error
    assert rows["prune:0.5"].ok and rows["prune:0.5"].extras["sparsity"] > 0.3
    report = (tmp_path / "out" / "report.md").read_text()
    assert "lower is better" in report


@pytest.fixture
def nan_task(monkeypatch):
    """tests/plugin_tasks.py's task whose metric is NaN, registered for one test (the registry is restored after)."""
    from tfcompress.tasks import base

    monkeypatch.setattr(base, "_TASKS", dict(base._TASKS))
    monkeypatch.delitem(sys.modules, "tests.plugin_tasks", raising=False)  # so importing it registers it again
    return "tests.plugin_tasks"


def _refuse_non_finite(constant):
    raise ValueError(f"results.json holds {constant}, which is not JSON")


@pytest.mark.parametrize("isolate", [False, True], ids=["in_process", "isolated"])
def test_a_nan_metric_is_a_failed_row_and_results_json_stays_valid(tmp_path, nan_task, isolate):
    config = _config(tmp_path, task="nan_metric_for_test", epochs=1, recipes=("fp32", "dynamic_range"), num_runs=2,
                     warmup_runs=0, plugins=(nan_task,), isolate=isolate)  # fmt: skip
    results = run(config)
    saved = json.loads((tmp_path / "out" / "results.json").read_text(), parse_constant=_refuse_non_finite)
    assert [row["recipe"] for row in saved["rows"]] == ["fp32", "dynamic_range"]
    for row, kept in zip(saved["rows"], results.rows, strict=True):
        assert row["status"] == "failed" and kept.status is Status.FAILED
        assert row["metric"] is None and row["nan_extra"] is None
        assert "metric nan_accuracy is nan (not finite)" in row["error"], row["error"]
        assert "nan_extra is nan (not finite)" in row["error"]
        assert row["size_bytes"] > 0 and 0.9 <= row["agreement"] <= 1  # what is finite is still there
    assert "keras_metric is nan (not finite)" in saved["rows"][0]["error"]  # the Keras model's own metric too
    assert (tmp_path / "out" / "report.md").stat().st_size > 0


def test_every_value_that_is_not_finite_is_nulled_and_named():
    import numpy as np

    from tfcompress.measure.latency import LatencyStats
    from tfcompress.study.results import Row, fail_non_finite

    stats = LatencyStats(threads=2, median_ms=float("inf"), p90_ms=1.0, p99_ms=1.0, mean_ms=1.0, std_ms=0.0, runs=3)
    extras = {"layer_sparsity": {"conv": np.float32("nan"), "dense": 0.5}, "runs": [1, -np.inf], "flag": True}
    row = Row("classification", "cnn", "prune", error="latency at 1 thread(s): timed out", metric_name="accuracy",
              metric=0.5, agreement=float("nan"), latency=[stats], extras=extras)  # fmt: skip
    fail_non_finite(row)
    assert row.status is Status.FAILED and row.metric == 0.5
    assert row.agreement is None
    assert row.extras == {"layer_sparsity": {"conv": None, "dense": 0.5}, "runs": [1, None], "flag": True}
    assert row.latency[0].median_ms is None and row.latency[0].p90_ms == 1.0
    assert row.error == (
        "latency at 1 thread(s): timed out; agreement is nan (not finite); layer_sparsity.conv is nan (not finite); "
        + "runs[1] is -inf (not finite); latency at 2 thread(s): median_ms is inf (not finite)"
    )
    json.dumps(row.to_dict(), allow_nan=False)
    before = row.error
    assert fail_non_finite(row).error == before  # a second pass finds nothing


def test_the_estimate_of_the_time_left_weighs_the_rows_by_their_fine_tuning(tmp_path):
    import time

    from tfcompress import recipes
    from tfcompress.study.executor import Job, Outcome
    from tfcompress.study.results import Results, Row
    from tfcompress.study.runner import _Loop
    from tfcompress.study.schedule import expected_costs

    jobs = [Job(i, recipes.parse(s), None) for i, s in enumerate(["int8", "prune:0.5>cluster:8>int8", "float16"])]
    costs = expected_costs(jobs)
    assert costs == {0: 1, 1: 7, 2: 1}  # three epochs per transform, plus the conversion
    lines = []
    loop = _Loop(_config(tmp_path), Results({}, {}, []), str(tmp_path / "results.json"), 3, lines.append, costs)
    loop.began = time.monotonic() - 70  # the long row took 70 s: 10 s per unit, and 2 units are left
    loop.record(Outcome(jobs[1], Row(task="classification", model="cnn", recipe=jobs[1].pipeline.name)))
    assert "1 of 3 rows done, 1:10 elapsed, about 0:20 left before the latency phase" in lines[-1]
