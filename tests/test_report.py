"""Results round-trip through results.json, and the report shows every row and column."""

import pytest

from tfcompress.measure.latency import LatencyStats
from tfcompress.study import report, results
from tfcompress.study.results import Results, Row, Status


def _results():
    def lat(t, median):
        return LatencyStats(t, median, median * 1.1, median * 1.2, median, 0.01, 50)

    common = dict(task="classification", model="cnn", params=100_000, metric_name="accuracy")
    rows = [
        Row(recipe="fp32", size_bytes=400_000, gzip_bytes=360_000, bytes_per_param=4.0, metric=0.97,
            agreement=1.0, latency=[lat(1, 2.0), lat(2, 1.0)], **common),
        Row(recipe="int8", size_bytes=100_000, gzip_bytes=80_000, bytes_per_param=1.0, metric=0.965,
            agreement=0.99, latency=[lat(1, 1.0), lat(2, 0.5)], extras={"calibration": 200}, **common),
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
    assert int8["vs fp32"] == "-0.50 pt"
    assert int8["speed-up (1t)"] == "2.00x" and int8["speed-up (2t)"] == "2.00x"
    failed = dict(zip(headers, cells[2], strict=True))
    assert failed["status"] == "failed" and "SIGABRT" in failed["note"]


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
    headers, cells = report.lab_table(base)
    by_recipe = {line[0]: dict(zip(headers, line, strict=True)) for line in cells}
    assert set(by_recipe) == {"fp32", "int8"}  # a failed row has nothing to explain
    # 5 M MACs = 10 M flops in 2 ms: 5 GFLOP/s, a quarter of the 20 GFLOP/s peak.
    assert by_recipe["fp32"]["MMACs"] == "5.00" and by_recipe["fp32"]["GFLOP/s (1t)"] == "5.0"
    assert by_recipe["fp32"]["roofline (1t)"] == "25%" and by_recipe["int8"]["roofline (1t)"] == "50%"
    assert by_recipe["fp32"]["XNNPACK ops"] == "7/7" and by_recipe["fp32"]["left to default kernels"] == "none"
    assert by_recipe["int8"]["left to default kernels"] == "CUMSUM x1, TOPK_V2 x1"
    # Twice the threads, half the time: perfect scaling.
    assert by_recipe["fp32"]["scaling (2t)"] == "1.00"
    assert "float32 peak at 1 thread(s): 20.0 GFLOP/s" in report.to_markdown(base)
