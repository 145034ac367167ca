"""Latency statistics: the median's interval, interleaved rounds, roofs per data type, overhead."""

import dataclasses

import numpy as np
import pytest

from tfcompress.measure import latency, roofs, rounds, stats


def test_the_order_statistic_interval_covers_a_known_median():
    rng = np.random.default_rng(0)
    covered = [
        low <= np.log(2) <= high
        for low, high in (stats.order_statistic_ci(rng.exponential(1.0, 101)) for _ in range(400))
    ]
    assert 0.93 <= np.mean(covered) <= 0.99  # exponential(1) has median ln 2


def test_the_rounds_interval_covers_a_known_median_and_widens_when_rounds_disagree():
    rng = np.random.default_rng(1)

    def timings(n, scale=1.0):  # latency-like: a floor and a tail; median 1 + 0.05 ln 2
        return scale * (1.0 + rng.exponential(0.05, n))

    covered, widths = [], []
    for _ in range(150):
        median, low, high = stats.median_ci(
            [timings(300) for _ in range(3)], n_boot=300, seed=int(rng.integers(1 << 30))
        )
        covered.append(low <= 1 + 0.05 * np.log(2) <= high)
        widths.append(stats.half_width(median, low, high))
    assert np.mean(covered) >= 0.9
    # One round on a busy minute (10% slower): the interval must say so, not hide it among 900 timings.
    shifted = stats.median_ci([timings(300), timings(300), timings(300, 1.10)], n_boot=300)
    assert stats.half_width(*shifted) > 0.03 > 5 * np.median(widths)


def test_a_speedup_interval_holds_one_for_equal_medians_and_not_for_a_clear_gain():
    _, low, high = stats.ratio_interval((1.0, 0.98, 1.02), (1.0, 0.98, 1.02))
    assert low < 1.0 < high
    ratio, low, high = stats.ratio_interval((2.0, 1.96, 2.04), (1.0, 0.98, 1.02))
    assert ratio == pytest.approx(2.0) and low > 1.9 and high < 2.1


def test_the_schedule_interleaves_every_timing_in_every_round():
    order = rounds.schedule(4, 3)
    assert sorted(order) == [(r, i) for r in range(3) for i in range(4)]  # each round visits each timing once
    assert [r for r, _ in order] == sorted(r for r, _ in order)  # round 2 starts after round 1 ends
    assert [i for r, i in order if r == 0] == [0, 1, 2, 3] and [i for r, i in order if r == 1] == [3, 2, 1, 0]


def test_interleaved_runs_each_timings_rounds_in_schedule_order(monkeypatch):
    calls = []

    batches = []

    def fake_round(path, threads, num_runs, **_):
        calls.append(path)
        if path == "crashes":
            return latency.LatencyError("latency child killed by signal SIGSEGV")
        times = np.full(num_runs, {"a": 1.0, "b": 2.0}[path])
        return {"threads": threads, "times_ms": list(times), "init_ms": 1, "first_invoke_ms": 1, "peak_rss_mb": 40}

    def fake_batch(entries, timeout_s):
        batches.append(len(entries))
        return [fake_round(e["path"], e["threads"], e["num_runs"]) for e in entries]

    monkeypatch.setattr(rounds, "measure_batch", fake_batch)
    timings = [rounds.Timing("A", "a"), rounds.Timing("B", "b"), rounds.Timing("C", "crashes")]
    result = rounds.interleaved(timings, rounds=3, num_runs=5, min_time_s=0.0)
    assert calls == ["a", "b", "crashes", "b", "a", "a", "b"]  # a crashed timing is not run again
    assert batches == [3, 2, 2]  # one measuring process per round, every file of the round in it
    assert result["A"].rounds == 3 and result["A"].round_medians_ms == [1.0, 1.0, 1.0] and result["A"].runs == 15
    assert result["B"].median_ms == 2.0 and isinstance(result["C"], latency.LatencyError)


@pytest.fixture(scope="module")
def roof_setup(roof_cache):
    paths = roofs.roof_files(str(roof_cache / "roofs"))
    return paths, roofs.overhead_file(str(roof_cache / "roofs"))


def test_the_roof_table_has_every_data_type_and_a_synthetic_file_stays_under_its_roof(roof_setup, tmp_path):
    from tfcompress.measure.macs import DTYPES, compute_dtype, macs_by_dtype
    from tfcompress.study import timing

    paths, overhead = roof_setup
    assert {dtype for dtype, _ in paths} == set(DTYPES)
    for (dtype, _), path in paths.items():
        assert compute_dtype(path) == dtype  # each file runs its MACs in the type it stands for
    # Another compute-bound file, not one of the roofs: a 3x3 conv on 20x20x48, in every type.
    from tfcompress._keras import keras

    probes = {}
    inputs = keras.Input((20, 20, 48), batch_size=1)
    probe = keras.Model(inputs, keras.layers.Conv2D(48, 3, padding="same", activation="relu")(inputs))
    for dtype in DTYPES:
        probes[dtype] = str(tmp_path / f"probe-{dtype}.tflite")
        with open(probes[dtype], "wb") as f:
            f.write(roofs._convert(probe, dtype))
    timings = [rounds.Timing(("roof", *key), path, num_runs=5) for key, path in paths.items()]
    timings += [rounds.Timing(("probe", d), p, num_runs=5) for d, p in probes.items()]
    timings.append(rounds.Timing(("overhead",), overhead))
    # The other test worker shares these 2 cores, so one measurement can put a probe above its roof by chance;
    # a probe that is really faster than its roof is above it in every one of three independent measurements.
    for _attempt in range(3):
        measured = rounds.interleaved(timings, rounds=3, num_runs=20, warmup_runs=2, min_time_s=0.15)
        medians = {k[1:]: s.median_ms for k, s in measured.items() if k[0] == "roof"}
        table = roofs.roof_table(medians, paths)
        assert set(table) == set(DTYPES) and all(entry["gflops"] > 0 for entry in table.values())
        peaks = {dtype: {"1": {"interpreter": entry}} for dtype, entry in table.items()}
        floor = {"interpreter": {"1": {"median_ms": measured[("overhead",)].median_ms}}}
        probed = {}
        for dtype, path in probes.items():
            stats_ = timing.annotate(measured[("probe", dtype)], sum(macs_by_dtype(path).values()), dtype, peaks, floor)
            assert stats_.roof == dtype and stats_.roof_gflops == table[dtype]["gflops"]
            assert stats_.overhead_bound is False  # a 20x20x48 conv is far above one ADD's cost
            probed[dtype] = stats_
        if all(0 < s.roofline <= 1.05 for s in probed.values()):
            break
    for dtype, stats_ in probed.items():
        assert 0 < stats_.roofline <= 1.05, (dtype, stats_.gflops, table[dtype])


def test_overhead_bound_marks_a_median_within_five_times_the_trivial_models():
    base = latency.LatencyStats(threads=1, median_ms=0.004, p90_ms=0, p99_ms=0, mean_ms=0, std_ms=0, runs=1)
    from tfcompress.study import timing

    floor = {"interpreter": {"1": {"median_ms": 0.001}}}
    assert timing.annotate(base, 1000, "fp32", {}, floor).overhead_bound is True
    slow = dataclasses.replace(base, median_ms=0.006)
    assert timing.annotate(slow, 1000, "fp32", {}, floor).overhead_bound is False
    assert timing.annotate(slow, 1000, "fp32", {}, {}).overhead_bound is None  # not compared


def test_a_paired_speedup_interval_sees_through_a_drift_that_hits_both_rows_alike():
    drift = np.array([1.00, 1.08, 0.95, 1.12, 0.97, 1.05, 0.93, 1.02])  # the machine's speed, round by round
    base, row = 2.0 * drift, 1.0 * drift * np.array([1.0, 1.01, 0.99, 1.0, 1.01, 0.99, 1.0, 1.0])
    ratio = float(np.median(base) / np.median(row))
    _, low, high = stats.paired_ratio_interval(base, row, ratio)
    assert 1.95 < low <= ratio <= high < 2.05  # the drift cancels round by round
    independent = stats.ratio_interval(stats.median_ci([base]), stats.median_ci([row]))
    assert independent[2] - independent[1] > 3 * (high - low)
    with pytest.raises(ValueError, match="same number"):
        stats.paired_ratio_interval(base, row[:5], ratio)
