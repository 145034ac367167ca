"""The bootstrap of a metric over test examples: its interval, and a paired interval of a difference.

A study's metric is an estimate from a finite test split: 1,000 test digits know an accuracy near 0.97
to about +-0.5 points (one standard error), so two rows 0.4 points apart may not differ at all. The
bootstrap redraws the test split with replacement many times and recomputes the metric on each draw;
the 2.5th and 97.5th percentiles of the recomputed values are the 95% percentile interval.

A difference between two models measured on the same examples is bootstrapped *paired*: each draw
resamples the same example indices for both, so what both get right or wrong together cancels and
only where they differ remains. This is narrower than two separate intervals, and exact for a model
identical to the reference (every draw's difference is 0).

A statistic is a function of resampling counts: ``counts`` (B, n) says how often each of the n test
examples appears in each of B draws (the rows sum to n), and the statistic returns the B recomputed
metrics. A mean over examples is ``mean_statistic(values)``; a metric that is not a mean (COCO mAP)
supplies its own (tfcompress.tasks.detection).

numpy only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence

import numpy as np

# 1,000 draws: the Monte-Carlo error of a 2.5% or 97.5% percentile from B draws is about
# sqrt(0.025 * 0.975 / B) / pdf(1.96) = 0.085 standard errors at B = 1,000, 4% of the 1.96-standard-error
# half-width; 2,000 draws would bring that to 3% for twice the time (Efron and Tibshirani recommend at
# least 1,000 draws for percentile intervals).
RESAMPLES = 1000
LEVEL = 0.95
_CELLS_PER_CHUNK = 2_000_000  # draws are made in chunks of at most this many counts (16 MB of int64)

Statistic = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Interval:
    """A closed interval [low, high]."""

    low: float
    high: float

    def __post_init__(self):
        if not self.low <= self.high:
            raise ValueError(f"An interval needs low <= high, got [{self.low}, {self.high}].")

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def contains(self, value: float = 0.0) -> bool:
        return self.low <= value <= self.high

    def to_list(self) -> list[float]:
        return [float(self.low), float(self.high)]


def resample_counts(n: int, resamples: int = RESAMPLES, seed: int = 0) -> Iterator[np.ndarray]:
    """Yields the draws' counts in chunks: (b, n) int64 arrays whose rows sum to n, ``resamples`` rows in all.

    The same ``n``, ``resamples`` and ``seed`` give the same draws.

    Raises:
      ValueError: n or resamples below 1.
    """
    if n < 1 or resamples < 1:
        raise ValueError(f"A bootstrap needs n >= 1 examples and resamples >= 1, got n={n}, resamples={resamples}.")
    rng = np.random.default_rng(seed)
    chunk = max(1, min(resamples, _CELLS_PER_CHUNK // n))
    for start in range(0, resamples, chunk):
        b = min(chunk, resamples - start)
        indices = rng.integers(0, n, size=(b, n)) + n * np.arange(b)[:, np.newaxis]
        yield np.bincount(indices.ravel(), minlength=b * n).reshape(b, n)


def resampled(statistics: Sequence[Statistic], n: int, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """Every statistic on the same bootstrap draws of n examples: an array (len(statistics), resamples).

    Raises:
      ValueError: as resample_counts; a statistic returns other than one value per draw.
    """
    chunks = []
    for counts in resample_counts(n, resamples, seed):
        values = [np.asarray(statistic(counts), dtype=np.float64) for statistic in statistics]
        for value in values:
            if value.shape != (len(counts),):
                raise ValueError(f"A statistic must return one value per draw, {len(counts)}; got shape {value.shape}.")
        chunks.append(np.stack(values))
    return np.concatenate(chunks, axis=1)


def percentile_interval(values: np.ndarray, level: float = LEVEL) -> Interval:
    """The percentile interval of bootstrap values: their (1 - level) / 2 and (1 + level) / 2 quantiles.

    Raises:
      ValueError: level outside (0, 1), no values, or a value that is NaN or infinite.
    """
    values = np.asarray(values, dtype=np.float64)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}.")
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise ValueError("A percentile interval needs at least one value, all finite.")
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return Interval(float(low), float(high))


def interval(statistic: Statistic, n: int, resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL) -> Interval:
    """The percentile interval of one statistic over n examples."""
    return percentile_interval(resampled([statistic], n, resamples, seed)[0], level)


def paired_difference(
    statistic: Statistic, reference: Statistic, n: int, resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL
) -> Interval:
    """The percentile interval of ``statistic - reference``, both recomputed on the same draws of the n examples."""
    values = resampled([statistic, reference], n, resamples, seed)
    return percentile_interval(values[0] - values[1], level)


def mean_statistic(values: np.ndarray) -> Statistic:
    """The statistic of a metric that is the mean of per-example ``values`` (n,): the draws' weighted means."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"Per-example values must be one-dimensional (n,), got shape {values.shape}.")
    return lambda counts: counts @ values / len(values)
