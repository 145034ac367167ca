"""Confidence intervals for latency medians and the ratios between them.

A latency is timed in rounds (separate processes at different times of a study), each round many
invoke() timings. Timings inside one round are not independent draws: a round that landed on a busy
minute of a shared machine is slow as a whole. So the interval of the median is a two-level
(hierarchical) bootstrap: resample the rounds with replacement, then the timings inside each chosen
round, and take the median of the pooled resample; the 2.5th and 97.5th percentiles of those medians
are the 95% interval. With few rounds it is about as wide as the rounds' medians are spread, which is
what a reader needs to know. One round alone falls back to the distribution-free order-statistic
interval of its timings.

numpy only.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

import numpy as np

# At most this many timings of a round take part in the bootstrap (a random subset, seeded): the
# interval of a median of thousands of timings hardly changes beyond it, and the cost stays small.
_BOOTSTRAP_CAP = 1000


def order_statistic_ci(samples: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free interval of the median of independent samples (binomial order statistics).

    The interval runs from the j-th to the k-th smallest sample, j and k the ranks that a
    Binomial(n, 1/2) count falls below and above with probability (1 - confidence) / 2 each (normal
    approximation with continuity correction for n > 50, exact below).

    Raises:
      ValueError: no samples, or confidence outside (0, 1).
    """
    x = np.sort(np.asarray(samples, dtype=np.float64))
    n = x.size
    _check(n, confidence)
    if n == 1:
        return float(x[0]), float(x[0])
    alpha = 1 - confidence
    if n > 50:
        z = statistics.NormalDist().inv_cdf(1 - alpha / 2)
        j = max(0, math.floor(n / 2 - z * math.sqrt(n) / 2))
        k = min(n - 1, math.ceil(n / 2 + z * math.sqrt(n) / 2))
        return float(x[j]), float(x[k])
    cdf = np.cumsum([math.comb(n, i) for i in range(n + 1)]) / 2.0**n  # P(count <= i)
    j = int(np.searchsorted(cdf, alpha / 2, side="right"))  # P(count < j) <= alpha / 2
    j = max(0, j - 1)
    k = n - 1 - j
    return float(x[j]), float(x[k])


def median_ci(
    rounds: Sequence[Sequence[float]], confidence: float = 0.95, n_boot: int = 1000, seed: int = 0
) -> tuple[float, float, float]:
    """(median, low, high): the pooled median of all rounds' timings and its interval (module docstring).

    Raises:
      ValueError: no rounds, an empty round, or confidence outside (0, 1).
    """
    arrays = [np.asarray(r, dtype=np.float64) for r in rounds]
    if not arrays or any(a.size == 0 for a in arrays):
        raise ValueError("median_ci needs at least one round, each with at least one timing.")
    _check(sum(a.size for a in arrays), confidence)
    median = float(np.median(np.concatenate(arrays)))
    if len(arrays) == 1:
        low, high = order_statistic_ci(arrays[0], confidence)
        return median, low, high
    rng = np.random.default_rng(seed)
    capped = [a if a.size <= _BOOTSTRAP_CAP else rng.choice(a, _BOOTSTRAP_CAP, replace=False) for a in arrays]
    r = len(capped)
    medians = np.empty(n_boot)
    for b in range(n_boot):
        chosen = rng.integers(0, r, size=r)
        pooled = np.concatenate([capped[i][rng.integers(0, capped[i].size, size=capped[i].size)] for i in chosen])
        medians[b] = np.median(pooled)
    alpha = 1 - confidence
    low, high = np.quantile(medians, [alpha / 2, 1 - alpha / 2])
    return median, float(min(low, median)), float(max(high, median))


def half_width(median: float, low: float, high: float) -> float:
    """The interval's half-width as a fraction of the median (the larger side, so it is never understated)."""
    if median <= 0:
        raise ValueError(f"median must be > 0, got {median}.")
    return max(median - low, high - median) / median


def ratio_interval(a: tuple[float, float, float], b: tuple[float, float, float]) -> tuple[float, float, float]:
    """a / b with an approximate interval, from two independent (median, low, high) triples.

    The relative half-widths add in quadrature on the log scale (the delta method): a speed-up of
    fp32's median over a row's, each known to +-2%, is known to about +-2.8%.
    """
    (ma, la, ha), (mb, lb, hb) = a, b
    if min(ma, la, mb, lb) <= 0:
        raise ValueError(f"medians and interval bounds must be > 0, got {a} and {b}.")
    wa = (math.log(ha) - math.log(la)) / 2
    wb = (math.log(hb) - math.log(lb)) / 2
    ratio = ma / mb
    w = math.hypot(wa, wb)
    return ratio, ratio * math.exp(-w), ratio * math.exp(w)


def paired_ratio_interval(
    a_rounds: Sequence[float],
    b_rounds: Sequence[float],
    ratio: float,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``ratio`` (a's median over b's) with an interval from rounds the two were timed in together.

    Interleaved rounds share the machine's state: round i of a and round i of b ran within seconds of each
    other, so a slow minute slows both. Resampling the rounds with the same indices for both (a paired
    bootstrap of median(a's round medians) / median(b's)) keeps that pairing, which independent intervals
    would throw away; the interval is that bootstrap's percentiles, widened to hold ``ratio`` itself.

    Raises:
      ValueError: different round counts, fewer than 2 rounds, or a median that is not positive.
    """
    a, b = np.asarray(a_rounds, dtype=np.float64), np.asarray(b_rounds, dtype=np.float64)
    if a.size != b.size or a.size < 2:
        raise ValueError(f"a paired interval needs the same number (>= 2) of rounds, got {a.size} and {b.size}.")
    if min(a.min(), b.min(), ratio) <= 0:
        raise ValueError("round medians and the ratio must be > 0.")
    _check(a.size, confidence)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(n_boot, a.size))
    ratios = np.median(a[idx], axis=1) / np.median(b[idx], axis=1)
    alpha = 1 - confidence
    low, high = np.quantile(ratios, [alpha / 2, 1 - alpha / 2])
    return ratio, float(min(low, ratio)), float(max(high, ratio))


def _check(n: int, confidence: float) -> None:
    if n < 1:
        raise ValueError("need at least one sample.")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}.")
