"""Latency measurement in a child process: consistent statistics, and crashes become errors."""

import collections
import json
import sys

import pytest

from tests.conftest import wrap_latency_worker
from tfcompress import recipes
from tfcompress.measure import latency as benchmark
from tfcompress.measure import peak, rounds
from tfcompress.measure import tflite_graph as graph


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


def test_int8_model_is_timed_with_int8_input(tiny_cnn, calibration, digits, tmp_path):
    import numpy as np

    from tfcompress.measure.evaluate import as_input, load_interpreter

    path = tmp_path / "int8.tflite"
    path.write_bytes(recipes.get("int8").apply(tiny_cnn, recipes.RecipeContext(calibration)))
    assert load_interpreter(str(path)).get_input_details()[0]["dtype"] == np.int8
    sample = tmp_path / "x.npy"
    example = as_input(digits.x_test[:1], str(path))  # what a study feeds: a real example, quantized
    assert example.dtype == np.int8
    np.save(sample, example, allow_pickle=False)
    assert benchmark.measure_latency(str(path), num_runs=5, warmup_runs=1, input_path=str(sample)).runs == 5
    # The worker feeds the tensor as given and refuses one that is not int8, so the timed input was int8.
    np.save(sample, digits.x_test[:1].astype(np.float32), allow_pickle=False)
    with pytest.raises(benchmark.LatencyError, match="float32.*int8"):
        benchmark.measure_latency(str(path), num_runs=1, warmup_runs=0, input_path=str(sample))
    assert benchmark.measure_latency(str(path), num_runs=5, warmup_runs=1).runs == 5  # its own random input


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

    from tfcompress.measure.evaluate import as_input

    sample = tmp_path / "x.npy"
    np.save(sample, as_input(digits.x_test[:1], tflite_path), allow_pickle=False)
    assert benchmark.measure_latency(tflite_path, num_runs=3, warmup_runs=0, input_path=str(sample)).runs == 3
    np.save(sample, np.zeros((2, 8, 8, 1), np.float32))
    with pytest.raises(benchmark.LatencyError, match=r"input float32\[2, 8, 8, 1\] does not match"):
        benchmark.measure_latency(tflite_path, num_runs=1, input_path=str(sample))


def test_latency_reports_startup_memory_and_full_delegation_of_an_fp32_cnn(tflite_path):
    stats = benchmark.measure_latency(tflite_path, num_runs=5, warmup_runs=1)
    assert stats.init_ms > 0 and stats.first_invoke_ms > 0
    # The child's own peak (Python + numpy + LiteRT is about 45 MB), not the TensorFlow parent's.
    assert 10 < stats.peak_rss_mb < 300
    assert stats.total_ops == len(graph.ops(tflite_path))
    assert stats.delegated_ops == stats.total_ops and stats.undelegated == {} and stats.fully_delegated
    assert stats.delegate_partitions == 1
    json.dumps(stats.to_dict())  # the record is JSON as it stands


@pytest.fixture(scope="module")
def partly_delegated_model():
    """A float CNN with CUMSUM and TOPK_V2 in the middle, which XNNPACK does not take."""
    from tfcompress._keras import keras, tf
    from tfcompress.recipes.converter import convert

    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Lambda(lambda t: tf.math.cumsum(t, axis=-1))(x)
    x = keras.layers.Lambda(lambda t: tf.math.top_k(t, k=16).values)(x)
    outputs = keras.layers.Dense(3)(keras.layers.Lambda(lambda t: tf.math.log(t + 1.0))(x))
    return convert(keras.Model(inputs, outputs))


def test_delegation_lists_every_op_once_and_names_the_undelegated_ones(partly_delegated_model):
    report = benchmark.delegation(partly_delegated_model)
    all_ops = collections.Counter(op.name for op in graph.ops(partly_delegated_model))
    assert report["total_ops"] == sum(all_ops.values())
    assert report["delegated_ops"] + sum(report["undelegated"].values()) == report["total_ops"]
    assert report["undelegated"] == {"CUMSUM": 1, "TOPK_V2": 1}
    assert report["delegate_partitions"] == 2  # conv + reshape before them, add + log + dense after


def test_measured_delegation_matches_the_in_process_report(partly_delegated_model, tmp_path):
    path = tmp_path / "mixed.tflite"
    path.write_bytes(partly_delegated_model)
    stats = benchmark.measure_latency(str(path), num_runs=2, warmup_runs=0)
    assert stats.undelegated == {"CUMSUM": 1, "TOPK_V2": 1} and stats.fully_delegated is False
    assert stats.delegated_ops == stats.total_ops - 2


def test_results_saved_before_the_new_fields_still_load():
    old = {"threads": 1, "median_ms": 1.0, "p90_ms": 1.2, "p99_ms": 1.5, "mean_ms": 1.1, "std_ms": 0.1, "runs": 50,
           "warmup_runs": 5}  # fmt: skip
    stats = benchmark.LatencyStats.from_dict(old)
    assert stats.median_ms == 1.0 and stats.init_ms is None and stats.delegated_ops is None
    assert stats.undelegated == {} and stats.fully_delegated is None
    assert benchmark.LatencyStats.from_dict(json.loads(json.dumps(stats.to_dict()))) == stats
    assert benchmark.LatencyStats.from_dict({**old, "undelegated": None}).undelegated == {}


def _stats(threads, median_ms):
    return benchmark.LatencyStats(threads, median_ms, median_ms, median_ms, median_ms, 0.0, 10)


def test_scaling_efficiency_is_speedup_over_one_thread_per_thread():
    eff = benchmark.scaling_efficiency([_stats(2, 6.0), _stats(1, 10.0), _stats(4, 4.0)])
    assert eff == pytest.approx({1: 1.0, 2: 10 / 6 / 2, 4: 10 / 4 / 4})


def test_scaling_efficiency_without_one_thread_is_relative_to_the_fewest():
    assert benchmark.scaling_efficiency([_stats(2, 6.0), _stats(4, 4.0)]) == pytest.approx({2: 1.0, 4: 6 / 4 / 2})
    with pytest.raises(ValueError, match="one measurement per thread count"):
        benchmark.scaling_efficiency([_stats(1, 1.0), _stats(1, 2.0)])
    with pytest.raises(ValueError, match="at least one"):
        benchmark.scaling_efficiency([])


def test_roofline_counts_two_flops_per_mac():
    gflops, fraction = peak.roofline(macs=1_000_000_000, median_ms=10.0, peak_gflops=400.0)
    assert gflops == pytest.approx(200.0) and fraction == pytest.approx(0.5)
    assert peak.roofline(1_000_000_000, 10.0, None) == (pytest.approx(200.0), None)  # no peak: the rate alone
    with pytest.raises(ValueError, match="median_ms"):
        peak.roofline(1, 0.0, 1.0)


def test_peak_microbenchmark_gives_a_positive_rate():
    result = peak.measure_peak_gflops(threads=1, seconds=0.2, sizes=(64, 128))
    assert result["peak_gflops"] > 0 and result["threads"] == 1
    assert result["method"].startswith("numpy float32 matmul")
    with pytest.raises(ValueError, match="threads"):
        peak.measure_peak_gflops(threads=0)


@pytest.mark.parametrize(
    "flags, dot_product, word",
    [("fpu sse2 avx avx2 fma f16c", False, "no int8 dot-product"), ("avx2 fma avx512f avx512_vnni", True, "can beat")],
)
def test_cpu_features_say_whether_int8_has_dot_product_instructions(tmp_path, flags, dot_product, word):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    features = peak.cpu_features(str(cpuinfo))
    assert features["model_name"] == "Some CPU" and features["avx2"] and features["fma"]
    assert features["int8_dot_product"] is dot_product and features["avx512_vnni"] is dot_product
    assert word in features["note"]
    assert peak.cpu_features(str(tmp_path / "missing"))["model_name"] is None


@pytest.mark.parametrize("recipe", ["fp32", "int8"])
def test_both_runtimes_time_a_file_and_give_the_same_outputs(tiny_cnn, calibration, digits, tmp_path, recipe):
    import numpy as np

    from tfcompress.measure.evaluate import run_compiled_model, run_tflite

    path = tmp_path / f"{recipe}.tflite"
    path.write_bytes(recipes.get(recipe).apply(tiny_cnn, recipes.RecipeContext(calibration)))
    x = digits.x_test[:50]
    ours, theirs = run_tflite(str(path), x), run_compiled_model(str(path), x)
    assert ours.shape == theirs.shape == (50, digits.num_classes)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)  # the same kernels: the same logits (int8: the same codes)
    stats = benchmark.measure_latency(str(path), num_runs=5, warmup_runs=1, runtime="compiled_model", rounds=2)
    assert stats.runtime == "compiled_model" and stats.rounds == 2 and len(stats.round_medians_ms) == 2
    assert stats.runs >= 10 and stats.ci_low_ms <= stats.median_ms <= stats.ci_high_ms
    reference = benchmark.litert_benchmark(str(path), num_runs=5, warmup_runs=1)
    assert stats.fully_accelerated is reference["fully_accelerated"]  # what litert-benchmark says of the file
    assert stats.input_dtypes == (["int8"] if recipe == "int8" else ["float32"])


def test_min_time_s_extends_a_round_past_num_runs(tflite_path):
    stats = benchmark.measure_latency(tflite_path, num_runs=3, warmup_runs=0, min_time_s=0.2)
    assert stats.runs > 3 and stats.runs * stats.mean_ms >= 200 * 0.9  # >= 0.2 s of timed runs


def test_an_unknown_runtime_is_refused(tflite_path):
    with pytest.raises(ValueError, match="runtime must be one of interpreter, compiled_model"):
        benchmark.measure_latency(tflite_path, runtime="gpu")


def test_a_batch_times_every_file_in_one_child_and_a_crash_or_hang_fails_only_its_own_file(
    tflite_path, tmp_path, monkeypatch
):
    wrap_latency_worker(tmp_path, monkeypatch)
    entry = rounds.round_entry(tflite_path, 1, 5, 1, 0, None, "interpreter", 0.0)
    entries = [entry, {**entry, "path": "crash.tflite"}, {**entry, "threads": 2}, {**entry, "path": "hang.tflite"},
               {**entry, "path": str(tmp_path / "missing.tflite")}, entry]  # fmt: skip
    results = rounds.measure_batch(entries, timeout_s=20)
    assert [type(r).__name__ for r in results] == ["dict", "LatencyError", "dict", "LatencyError", "LatencyError",
                                                   "dict"]  # fmt: skip
    assert "SIGABRT" in str(results[1]) and "timed out after 20 s" in str(results[3])
    assert "missing.tflite" in str(results[4]) or "ValueError" in str(results[4])  # a Python error: the round goes on
    assert results[0]["threads"] == 1 and results[2]["threads"] == 2 and len(results[5]["times_ms"]) == 5
    # Each file's peak memory is its own: the mark is reset before each file, so a later file of the same
    # model does not report the earlier ones' high-water mark plus its own.
    assert results[5]["peak_rss_mb"] is not None and results[5]["peak_rss_mb"] < results[0]["peak_rss_mb"] + 20
