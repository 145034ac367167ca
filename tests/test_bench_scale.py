"""The scale section's verdicts: the speed-up, sizes unchanged, metrics inside the serial run's interval."""

from tfcompress.study import bench_scale as bs
from tfcompress.study.results import Results, Row, Status


def _results(*rows):
    return Results(config={}, environment={}, columns=[], metrics={}, rows=list(rows))


def _row(recipe, size, metric, ci=None, status=Status.OK):
    return Row(task="classification", model="cnn", recipe=recipe, status=status, size_bytes=size, metric=metric,
               metric_ci=ci)  # fmt: skip


def test_rows_compare_by_size_exactly_and_by_metric_inside_the_reference_interval():
    serial = _results(_row("fp32", 100, 0.97, [0.96, 0.98]), _row("int8", 30, 0.96, [0.95, 0.97]))
    same = bs.compare(serial, _results(_row("fp32", 100, 0.975), _row("int8", 30, 0.95)))
    assert same == {"sizes_equal": True, "size_misses": [], "metrics_within": True, "metric_misses": []}
    off = bs.compare(serial, _results(_row("fp32", 101, 0.97), _row("int8", 30, 0.94)))
    assert off["size_misses"] == ["fp32"] and off["metric_misses"] == ["int8"]
    failed = _row("abort", None, None, status=Status.FAILED)
    assert bs.compare(_results(failed), _results(failed))["sizes_equal"]  # failed in both: the same row


def test_the_verdict_lines_say_yes_only_at_1_6x_and_name_the_misses():
    ok = {"sizes_equal": True, "size_misses": [], "metrics_within": True, "metric_misses": []}
    lines = bs.verdicts(160.0, 100.0, 2, ok, 120.0, ok, 2)
    assert "1.60x faster (target >= 1.6x): **yes**" in lines[0] and lines[1].endswith("**yes**.")
    assert "2-node local cluster" in lines[3] and "120 s" in lines[3] and "**yes**" in lines[3]
    slow = bs.verdicts(150.0, 100.0, 2, ok | {"metrics_within": False, "metric_misses": ["int8"]}, None, None, 0)
    assert "1.50x" in slow[0] and "**no**" in slow[0] and "['int8']" in slow[2] and len(slow) == 3


def test_the_multi_worker_line_checks_sparsity_and_the_gap_to_one_worker():
    single = _row("prune", 100, 0.970)
    multi = _row("prune", 100, 0.962)
    multi.extras = {"sparsity": 0.8, "workers_equal": True, "finetune_s": 30.0}
    assert "**yes**" in bs.multi_worker_line(single, multi, 60.0) and "-0.80 pt" in bs.multi_worker_line(
        single, multi, 60
    )
    multi.metric = 0.955
    assert "**no**" in bs.multi_worker_line(single, multi, 60.0)


def test_the_where_line_splits_the_time_by_phase_and_bounds_the_gain():
    serial = _results(_row("fp32", 100, 0.97), _row("prune", 100, 0.97))
    parallel = _results(_row("fp32", 100, 0.97), _row("prune", 100, 0.97))
    for results, prune_s, phases in ((serial, 20.0, (10, 300, 100)), (parallel, 30.0, (10, 200, 100))):
        results.rows[1].convert_s = prune_s  # fp32's is None: nothing to convert
        results.environment["phase_s"] = dict(zip(("prepare", "rows", "latency"), phases, strict=True))
    line = bs.where_line(serial, parallel, 2)
    assert "the rows 300 / 200 s (1.50x)" in line and "the latency phase 100 / 100 s" in line
    assert "at most 1.58x faster" in line  # 410 s against 410 s less half the rows: 260 s
    assert "took 20 s one at a time and 30 s side by side: each ran 1.50x longer" in line and "1.33x the work" in line
    assert "not recorded" in bs.where_line(_results(), parallel, 2)


def test_the_side_by_side_line_gives_the_work_of_two_pinned_against_one_alone_and_what_pinning_saves():
    line = bs.side_by_side_line({"alone": 2.0, "alone_share": 3.0, "two": 3.5, "two_pinned": 3.2}, 2)
    assert "alone 2.00 s" in line and "3.00 s at one job's share" in line
    assert "3.50 s each unpinned, 3.20 s each pinned apart" in line
    assert "do 1.25x the work of one alone" in line and "pinning saves 9%" in line  # 4.0 / 3.2; 1 - 3.2 / 3.5
