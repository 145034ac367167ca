"""The bootstrap of a metric over test examples: coverage on synthetic data, pairing, seeding, bad input."""

import numpy as np
import pytest

from tfcompress.measure import bootstrap


def _paired_correctness(rng, n, p_reference, difference):
    """Per-example correctness of a reference and a row that agree on most examples; E[row - ref] = difference."""
    reference = rng.random(n) < p_reference
    flip = rng.random(n)
    # The row fixes a wrong example with probability a and breaks a right one with probability b:
    # E[row] - p = (1 - p) a - p b.
    a = 0.3
    b = (a * (1 - p_reference) - difference) / p_reference
    row = np.where(reference, flip >= b, flip < a)
    return row.astype(float), reference.astype(float)


@pytest.mark.parametrize("difference", [0.0, 0.03], ids=["zero", "three_points"])
def test_paired_interval_covers_the_true_difference_about_95_percent_of_the_time(difference):
    rng = np.random.default_rng(0)
    repetitions, n = 300, 300
    covered = 0
    for seed in range(repetitions):
        row, reference = _paired_correctness(rng, n, 0.85, difference)
        interval = bootstrap.paired_difference(
            bootstrap.mean_statistic(row), bootstrap.mean_statistic(reference), n, resamples=500, seed=seed
        )
        covered += interval.contains(difference)
    # 95% nominal; 300 repetitions resolve it to about +-1.3 points (one standard error).
    assert 0.91 <= covered / repetitions <= 0.99, covered / repetitions


def test_continuous_paired_difference_covers_about_95_percent_and_is_narrower_than_unpaired():
    rng = np.random.default_rng(1)
    covered, paired_widths, unpaired_widths = 0, [], []
    for seed in range(300):
        base = rng.normal(20.0, 3.0, 200)  # per-example PSNR-like values with a large spread between examples
        row = base - 0.2 + rng.normal(0.0, 0.5, 200)  # truly 0.2 lower, close to the reference example by example
        interval = bootstrap.paired_difference(
            bootstrap.mean_statistic(row), bootstrap.mean_statistic(base), 200, resamples=500, seed=seed
        )
        covered += interval.contains(-0.2)
        paired_widths.append(interval.half_width)
        unpaired_widths.append(bootstrap.interval(bootstrap.mean_statistic(row), 200, 500, seed).half_width)
    assert 0.91 <= covered / 300 <= 0.99
    # Pairing cancels the spread between examples: the difference is far better known than either mean.
    assert np.median(paired_widths) < 0.3 * np.median(unpaired_widths)


def test_a_row_identical_to_its_reference_has_a_zero_interval_that_holds_zero():
    values = (np.random.default_rng(2).random(1000) < 0.97).astype(float)
    interval = bootstrap.paired_difference(bootstrap.mean_statistic(values), bootstrap.mean_statistic(values), 1000)
    assert (interval.low, interval.high) == (0.0, 0.0) and interval.contains(0.0)


def test_a_constant_shift_is_known_exactly_when_paired():
    values = np.random.default_rng(3).normal(0, 1, 400)
    shifted, reference = bootstrap.mean_statistic(values + 0.5), bootstrap.mean_statistic(values)
    interval = bootstrap.paired_difference(shifted, reference, 400)
    assert interval.low == pytest.approx(0.5) and interval.high == pytest.approx(0.5)
    assert not interval.contains(0.0)


def test_the_interval_of_an_accuracy_matches_its_standard_error():
    correct = np.zeros(1000)
    correct[:970] = 1.0  # 0.97 on 1,000 examples: standard error sqrt(0.97 * 0.03 / 1000) = 0.0054
    interval = bootstrap.interval(bootstrap.mean_statistic(correct), 1000, seed=0)
    assert interval.half_width == pytest.approx(1.96 * np.sqrt(0.97 * 0.03 / 1000), rel=0.15)
    assert interval.contains(0.97)


def test_draws_are_seeded_and_every_draw_resamples_n_examples():
    draws = np.concatenate(list(bootstrap.resample_counts(50, 300, seed=7)))
    again = np.concatenate(list(bootstrap.resample_counts(50, 300, seed=7)))
    assert draws.shape == (300, 50) and np.all(draws.sum(axis=1) == 50)
    np.testing.assert_array_equal(draws, again)
    assert not np.array_equal(draws, np.concatenate(list(bootstrap.resample_counts(50, 300, seed=8))))
    # Many examples: the draws come in chunks, and still total the requested number.
    chunks = list(bootstrap.resample_counts(1_000_000, 5, seed=0))
    assert len(chunks) == 3 and sum(len(c) for c in chunks) == 5


def test_bad_input_is_refused_with_the_value():
    with pytest.raises(ValueError, match="n=0"):
        next(bootstrap.resample_counts(0))
    with pytest.raises(ValueError, match="level must be in"):
        bootstrap.percentile_interval(np.ones(3), level=95)
    with pytest.raises(ValueError, match="all finite"):
        bootstrap.percentile_interval(np.array([1.0, np.inf]))
    with pytest.raises(ValueError, match="one value per draw"):
        bootstrap.resampled([lambda counts: np.zeros(3)], 10, resamples=20)
    with pytest.raises(ValueError, match=r"low <= high, got \[2, 1\]"):
        bootstrap.Interval(2, 1)
