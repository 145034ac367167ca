"""Latency measurement in a child process: consistent statistics, and crashes become errors."""

import sys

import pytest

from tfcompress import benchmark, recipes


@pytest.fixture(scope="module")
def tflite_path(tiny_cnn, calibration, tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "model.tflite"
    path.write_bytes(recipes.get("fp32").apply(tiny_cnn, recipes.RecipeContext(calibration)))
    return str(path)


@pytest.mark.parametrize("threads", [1, 2])
def test_latency_statistics_are_consistent(tflite_path, threads):
    stats = benchmark.measure_latency(tflite_path, threads=threads, num_runs=37, warmup_runs=3)
    assert stats.threads == threads and stats.runs == 37 and stats.warmup_runs == 3
    assert 0 < stats.median_ms <= stats.p90_ms <= stats.p99_ms
    assert stats.mean_ms > 0 and stats.std_ms >= 0


def test_int8_model_is_timed_with_int8_input(tiny_cnn, calibration, tmp_path):
    path = tmp_path / "int8.tflite"
    path.write_bytes(recipes.get("int8").apply(tiny_cnn, recipes.RecipeContext(calibration)))
    assert benchmark.measure_latency(str(path), num_runs=5, warmup_runs=1).runs == 5


def test_native_crash_in_child_becomes_latency_error(tflite_path, monkeypatch):
    monkeypatch.setattr(benchmark, "_worker_command", lambda *args: [sys.executable, "-c", "import os; os.abort()"])
    with pytest.raises(benchmark.LatencyError, match="SIGABRT"):
        benchmark.measure_latency(tflite_path)


def test_unreadable_model_becomes_latency_error(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer")
    with pytest.raises(benchmark.LatencyError, match="exited with status 1"):
        benchmark.measure_latency(str(bad), num_runs=1)


@pytest.mark.parametrize("kwargs", [{"threads": 0}, {"num_runs": 0}, {"warmup_runs": -1}])
def test_bad_arguments_are_refused(tflite_path, kwargs):
    with pytest.raises(ValueError, match="must be"):
        benchmark.measure_latency(tflite_path, **kwargs)


def test_a_real_example_can_be_the_timed_input(tflite_path, digits, tmp_path):
    import numpy as np

    from tfcompress.evaluate import as_input

    sample = tmp_path / "x.npy"
    np.save(sample, as_input(digits.x_test[:1], tflite_path), allow_pickle=False)
    assert benchmark.measure_latency(tflite_path, num_runs=3, warmup_runs=0, input_path=str(sample)).runs == 3
    np.save(sample, np.zeros((2, 8, 8, 1), np.float32))
    with pytest.raises(benchmark.LatencyError, match=r"input float32\[2, 8, 8, 1\] does not match"):
        benchmark.measure_latency(tflite_path, num_runs=1, input_path=str(sample))
