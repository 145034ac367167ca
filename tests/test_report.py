"""Results round-trip through results.json, and the report shows every row and column."""

import pytest

from tfcompress.measure.latency import LatencyStats
from tfcompress.study import latency_report, report, results
from tfcompress.study.results import Results, Row, Status


def _results():
    def lat(t, median):
        return LatencyStats(t, median, median * 1.1, median * 1.2, median, 0.01, 50)

    common = dict(task="classification", model="cnn", params=100_000, metric_name="accuracy")
    rows = [
        Row(recipe="fp32", size_bytes=400_000, gzip_bytes=360_000, bytes_per_param=4.0, metric=0.97,
            agreement=1.0, metric_ci=[0.959, 0.98], metric_delta_ci=[0.0, 0.0], delta_within_noise=True,
            latency=[lat(1, 2.0), lat(2, 1.0)], **common),
        Row(recipe="int8", size_bytes=100_000, gzip_bytes=80_000, bytes_per_param=1.0, metric=0.965,
            agreement=0.99, metric_ci=[0.953, 0.976], metric_delta_ci=[-1.1, 0.1], delta_within_noise=True,
            latency=[lat(1, 1.0), lat(2, 0.5)], extras={"calibration": 200}, **common),
        Row(task="classification", model="cnn", recipe="int16x8", status=Status.FAILED,
            error="latency at 1 thread(s): killed by signal SIGABRT"),
    ]  # fmt: skip
    return Results(config={"task": "classification", "num_runs": 50}, environment={"cpu": "test"}, rows=rows)


def test_results_round_trip_through_json(tmp_path):
    original = _results()
    path = tmp_path / "results.json"
    results.save(original, str(path))
    loaded = results.load(str(path))
    assert loaded.to_dict() == original.to_dict()
    assert loaded.rows[1].extras == {"calibration": 200}
    assert loaded.rows[1].metric_delta_ci == [-1.1, 0.1] and loaded.rows[1].delta_within_noise is True
    assert loaded.rows[0].metric_ci == [0.959, 0.98]
    assert loaded.rows[2].status is Status.FAILED
    assert report.format_table(loaded) == report.format_table(original)


def test_table_has_every_row_and_column_with_ratios_vs_fp32():
    headers, cells = report.table(_results())
    assert headers[:9] == ["recipe", "status", "size KB", "size x fp32", "gzip KB", "gzip x fp32", "accuracy",
                           "vs fp32", "agreement"]  # fmt: skip
    assert "speed-up (1t)" in headers and "speed-up (2t)" in headers and headers[-1] == "note"
    assert [c[0] for c in cells] == ["fp32", "int8", "int16x8"]
    int8 = dict(zip(headers, cells[1], strict=True))
    assert int8["size x fp32"] == "0.250"
    assert int8["vs fp32"] == "-0.50 pt [-1.10, +0.10] noise"  # the interval holds 0
    assert dict(zip(headers, cells[0], strict=True))["vs fp32"] == "+0.00 pt"  # fp32 itself: no interval
    assert int8["speed-up (1t)"] == "2.00x" and int8["speed-up (2t)"] == "2.00x"
    failed = dict(zip(headers, cells[2], strict=True))
    assert failed["status"] == "failed" and "SIGABRT" in failed["note"]


def test_a_change_outside_its_interval_is_not_marked_and_the_report_says_what_the_mark_means():
    base = _results()
    int8 = base.rows[1]
    int8.metric, int8.metric_delta_ci, int8.delta_within_noise = 0.94, [-4.2, -1.9], False
    headers, cells = report.table(base)
    assert dict(zip(headers, cells[1], strict=True))["vs fp32"] == "-3.00 pt [-4.20, -1.90]"
    int8.metric_delta_ci = int8.delta_within_noise = None  # a results.json written before the intervals
    assert dict(zip(headers, report.table(base)[1][1], strict=True))["vs fp32"] == "-3.00 pt"
    text = report.to_markdown(_results())
    assert "| -0.50 pt [-1.10, +0.10] noise |" in text
    assert "`noise` marks a change whose interval holds 0" in text and "paired bootstrap" in text


@pytest.mark.parametrize("fmt", ["github", "latex", "csv", "simple"])
def test_every_format_lists_every_recipe(fmt):
    text = report.format_table(_results(), fmt)
    for recipe in ("fp32", "int8", "int16x8"):
        assert recipe in text


def test_unknown_format_is_refused():
    with pytest.raises(ValueError, match="Unknown table format 'docx'"):
        report.format_table(_results(), "docx")


def test_csv_flattens_latency_per_thread_count():
    header, *lines = report.to_csv(_results()).splitlines()
    assert "latency_2t_median_ms" in header.split(",") and len(lines) == 3


def test_loading_something_else_is_a_clear_error(tmp_path):
    other = tmp_path / "other.json"
    other.write_text('{"schema_version": 7, "rows": []}')
    with pytest.raises(ValueError, match="schema_version 7"):
        results.load(str(other))
    with pytest.raises(ValueError, match="does not exist"):
        results.load(str(tmp_path / "missing.json"))


def test_lab_table_explains_latency_from_macs_peak_delegation_and_threads():
    import dataclasses

    base = _results()
    fp32, int8, failed = base.rows
    fp32.macs = int8.macs = 5_000_000
    fp32.latency = [dataclasses.replace(s, init_ms=3.0, first_invoke_ms=2.5, peak_rss_mb=50.0, delegated_ops=7,
                                        total_ops=7) for s in fp32.latency]  # fmt: skip
    int8.latency = [dataclasses.replace(s, delegated_ops=5, total_ops=7, undelegated={"TOPK_V2": 1, "CUMSUM": 1})
                    for s in int8.latency]  # fmt: skip
    base.environment["peak"] = {"1": {"peak_gflops": 20.0, "threads": 1, "method": "numpy float32 matmul"}}
    headers, cells = latency_report.lab_table(base)
    by_recipe = {line[0]: dict(zip(headers, line, strict=True)) for line in cells}
    assert set(by_recipe) == {"fp32", "int8"}  # a failed row has nothing to explain
    # 5 M MACs = 10 M flops in 2 ms: 5 GFLOP/s, a quarter of the 20 GFLOP/s peak.
    assert by_recipe["fp32"]["MMACs"] == "5.00" and by_recipe["fp32"]["GFLOP/s (1t)"] == "5.0"
    assert by_recipe["fp32"]["roofline (1t)"] == "25%" and by_recipe["int8"]["roofline (1t)"] == "50%"
    assert by_recipe["fp32"]["XNNPACK ops"] == "7/7" and by_recipe["fp32"]["left to default kernels"] == "none"
    assert by_recipe["int8"]["left to default kernels"] == "CUMSUM x1, TOPK_V2 x1"
    # Twice the threads, half the time: perfect scaling.
    assert by_recipe["fp32"]["scaling (2t)"] == "1.00"
    assert "float32 matmul peak at 1 thread(s): 20.0 GFLOP/s" in report.to_markdown(base)  # an older file's peak


def _timed(median, low, high, runtime="interpreter", **kw):
    return LatencyStats(1, median, median, median, median, 0.0, 300, runtime=runtime, rounds=3, ci_low_ms=low,
                        ci_high_ms=high, **kw)  # fmt: skip


def test_the_table_shows_each_median_with_its_interval_and_a_speedup_inside_the_noise_as_such():
    base = _results()
    fp32, int8, _ = base.rows
    fp32.latency = [_timed(2.0, 1.96, 2.04), _timed(2.2, 2.1, 2.3, "compiled_model")]
    int8.latency = [_timed(1.98, 1.94, 2.02), _timed(1.0, 0.99, 1.01, "compiled_model", overhead_bound=True)]
    headers, cells = report.table(base)
    by_recipe = {line[0]: dict(zip(headers, line, strict=True)) for line in cells}
    # Both runtimes get their own columns; each median shows its 95% interval's half-width.
    assert by_recipe["fp32"]["p50 ms (1t, interpreter)"] == "2.000 ±2.0%"
    assert by_recipe["int8"]["p50 ms (1t, compiled_model)"] == "1.000 ±1.0% overhead"
    # 2.00 / 1.98 ms, each +-2%: a 1.01x "speed-up" that the intervals cannot tell from none.
    assert by_recipe["int8"]["speed-up (1t, interpreter)"] == "1.01x noise"
    assert by_recipe["int8"]["speed-up (1t, compiled_model)"] == "2.20x"
    assert by_recipe["fp32"]["speed-up (1t, interpreter)"] == "1.00x"


def test_the_lab_divides_by_the_roof_of_the_rows_data_type():
    base = _results()
    fp32, int8, _ = base.rows
    fp32.latency = [_timed(2.0, 1.9, 2.1, roof="fp32", roof_gflops=100.0, gflops=5.0, roofline=0.05)]
    int8.latency = [_timed(1.0, 0.9, 1.1, roof="int8", roof_gflops=1000.0, gflops=10.0, roofline=0.01)]
    base.environment["peak"] = {"fp32": {"1": {"interpreter": {"gflops": 100.0, "shape": "fc"}}},
                                "int8": {"1": {"interpreter": {"gflops": 1000.0, "shape": "fc"}}}}  # fmt: skip
    headers, cells = latency_report.lab_table(base)
    by_recipe = {line[0]: dict(zip(headers, line, strict=True)) for line in cells}
    assert by_recipe["fp32"]["roof GFLOP/s"] == "fp32 100" and by_recipe["fp32"]["roofline (1t)"] == "5%"
    assert by_recipe["int8"]["roof GFLOP/s"] == "int8 1000" and by_recipe["int8"]["roofline (1t)"] == "1%"
    notes = report.to_markdown(base)
    assert "int8 roof at 1 thread(s), interpreter: 1000.0 GFLOP/s (fc)" in notes
