"""The advise section's verdict lines say yes exactly when a pick meets its question's target."""

import pytest

from tfcompress.study import bench_advise as ba


def _advice(figures, unit="pt", remeasured=True):
    pick = None
    if figures is not None:
        pick = {"spec": "channel_prune:keep_fraction=0.25>int8", "stage": 2, "figures": figures,
                "remeasured": {"figures": figures, "meets_limits": remeasured, "misses": None if remeasured
                               else "latency 0.1 ms is 0.02 ms over"}}  # fmt: skip
    closest = None if pick else {"spec": "int8", "misses_by": "gzip size 140 KB is 100 KB over"}
    return {"metric": {"drop_unit": unit}, "trials_run": 16, "search_s": 900.0, "pick": pick, "closest": closest}


def _fig(drop, size_x, gzip_x):
    return {"drop": drop, "size_x": size_x, "gzip_x": gzip_x, "latency_ms": 0.02}


@pytest.mark.parametrize(
    ("name", "figures", "met"),
    [
        ("classification_gzip", _fig(0.5, 0.04, 0.009), True),
        ("classification_gzip", _fig(0.5, 0.04, 0.02), False),  # 50x smaller, not 100x
        ("detection_gzip", _fig(0.9, 0.2, 0.079), True),
        ("detection_gzip", _fig(0.9, 0.2, 0.081), False),
        ("language_size", _fig(0.9, 0.369, 0.3), True),
        ("language_size", _fig(0.9, 0.371, 0.3), False),
        ("classification_latency", _fig(0.2, 0.3, 0.3), True),
    ],
)
def test_verdict_says_yes_only_when_the_target_is_met(name, figures, met):
    line = ba.verdict(name, "the target", _advice(figures))
    assert line.endswith(f"**{'yes' if met else 'no'}**.")
    assert "`channel_prune:keep_fraction=0.25>int8` (stage 2)" in line and "900 s of search" in line


def test_no_pick_is_a_no_naming_the_closest_trial():
    line = ba.verdict("classification_gzip", "gzip >= 100x", _advice(None))
    assert "no recipe met the limits; the closest was `int8`: gzip size 140 KB is 100 KB over" in line
    assert line.endswith("**no**.")


def test_a_pick_that_fails_its_remeasurement_says_so():
    line = ba.verdict("classification_latency", "t", _advice(_fig(0.2, 0.3, 0.3), remeasured=False))
    assert "misses: latency 0.1 ms is 0.02 ms over" in line
