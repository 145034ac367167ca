"""Per-layer sensitivity to pruning, and a model-wide sparsity target shared out by it.

As Distiller's sensitivity analysis does: each prunable layer alone is
magnitude-pruned to each of a few levels, without fine-tuning, and the
model's loss is measured on held-out training examples (``curves``). Then
``allocate`` gives each layer its own sparsity so that the model-wide target
holds by parameter count and the summed loss increase is smallest: every
layer is pruned as far as it can while its loss increase stays under one
common threshold (a water level), found by bisection. Sensitive layers end
lower than insensitive ones.

The recipes use the training loss (task-agnostic, available to every recipe);
``experiments.sensitivity`` also reports the task's metric per layer.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import numpy as np

from tfcompress._keras import keras

LEVELS = (0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98)
HELD_OUT = 512  # training examples the loss is measured on (a seeded draw)


@dataclasses.dataclass(frozen=True)
class Curve:
    """One layer's sensitivity: its prunable parameters and the score increase at each level."""

    layer: str
    params: int
    levels: tuple[float, ...]
    increase: tuple[float, ...]  # score(layer pruned to level) - score(model), one per level

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def prunable_weights(model: keras.Model) -> dict[str, list]:
    """{layer name: the weight variables TFMOT prunes in it} for every layer TFMOT can prune."""
    from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry

    registry = prune_registry.PruneRegistry
    out = {}
    for layer in model.layers:
        if not registry.supports(layer) or registry._is_rnn_layer(layer):
            continue
        # Names may be paths ("_query_dense.kernel" in MultiHeadAttention).
        weights = [functools.reduce(getattr, name.split("."), layer) for name in registry._weight_names(layer)]
        if weights:
            out[layer.name] = weights
    return out


def magnitude_prune(weight: np.ndarray, sparsity: float) -> np.ndarray:
    """A copy with the smallest-magnitude ``sparsity`` fraction of entries set to zero."""
    flat = np.abs(weight).ravel()
    k = int(round(sparsity * flat.size))
    if k <= 0:
        return weight.copy()
    threshold = np.partition(flat, k - 1)[k - 1]
    out = weight.copy()
    out[np.abs(weight) <= threshold] = 0
    return out


def loss_score(model: keras.Model, x: np.ndarray, y: np.ndarray, loss=None) -> Callable[[keras.Model], float]:
    """score(model): the mean training loss on (x, y); higher is worse."""
    from tfcompress.models import outputs_probabilities, predict_logits

    if loss is None:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=not outputs_probabilities(model))

    def score(m: keras.Model) -> float:
        return float(np.mean(loss(y, predict_logits(m, x)).numpy()))

    return score


def held_out(dataset, seed: int, n: int = HELD_OUT) -> tuple[np.ndarray, np.ndarray]:
    """A seeded draw of training examples (the test split is left to the measurement)."""
    rng = np.random.default_rng(seed + 1)
    idx = rng.choice(len(dataset.x_train), min(n, len(dataset.x_train)), replace=False)
    return dataset.x_train[idx], dataset.y_train[idx]


def curves(model: keras.Model, score: Callable[[keras.Model], float], levels=LEVELS) -> list[Curve]:
    """Each prunable layer pruned alone to each level (the others untouched): the score increase."""
    base = score(model)
    out = []
    for name, variables in prunable_weights(model).items():
        saved = [v.numpy() for v in variables]
        increases = []
        for level in levels:
            for v, w in zip(variables, saved, strict=True):
                v.assign(magnitude_prune(w, level))
            increases.append(score(model) - base)
        for v, w in zip(variables, saved, strict=True):
            v.assign(w)
        out.append(Curve(name, int(sum(w.size for w in saved)), tuple(levels), tuple(increases)))
    return out


def _level_at(curve: Curve, threshold: float) -> float:
    """The highest sparsity whose (monotone) increase stays <= threshold, linear between levels."""
    levels = np.array((0.0, *curve.levels))
    increase = np.maximum.accumulate(np.maximum(np.array((0.0, *curve.increase)), 0.0))
    if threshold >= increase[-1]:
        return float(levels[-1])
    i = int(np.searchsorted(increase, threshold, side="right"))  # first level above the threshold
    lo, hi = increase[i - 1], increase[i]
    t = 0.0 if hi <= lo else (threshold - lo) / (hi - lo)
    return float(levels[i - 1] + t * (levels[i] - levels[i - 1]))


def allocate(layer_curves: list[Curve], target: float) -> dict[str, float]:
    """Per-layer sparsities whose parameter-weighted mean is ``target``, the least sensitive layers pruned most.

    Raises:
      ValueError: no layers, or a target above the highest level measured.
    """
    if not layer_curves:
        raise ValueError("allocation=sensitivity found no prunable layer.")
    top = min(c.levels[-1] for c in layer_curves)
    if not 0 <= target <= top:
        raise ValueError(f"allocation=sensitivity can share out sparsities up to {top}, got {target}.")
    params = np.array([c.params for c in layer_curves], dtype=float)

    def at(threshold: float) -> np.ndarray:
        return np.array([_level_at(c, threshold) for c in layer_curves])

    def mean(s: np.ndarray) -> float:
        return float((s * params).sum() / params.sum())

    lo, hi = 0.0, max(max(max(c.increase), 0.0) for c in layer_curves) + 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mean(at(mid)) < target else (lo, mid)
    s_lo, s_hi = at(lo), at(hi)
    # The water level may jump (a flat stretch of a curve): share the last step out in proportion.
    gap = mean(s_hi) - mean(s_lo)
    t = 0.0 if gap <= 1e-12 else (target - mean(s_lo)) / gap
    sparsity = s_lo + min(max(t, 0.0), 1.0) * (s_hi - s_lo)
    return {c.layer: round(float(s), 4) for c, s in zip(layer_curves, sparsity, strict=True)}


def weighted_sparsity(allocation: dict[str, float], layer_curves: list[Curve]) -> float:
    """The model-wide sparsity an allocation gives, by parameter count over the prunable layers."""
    params = {c.layer: c.params for c in layer_curves}
    return sum(allocation[n] * params[n] for n in allocation) / sum(params[n] for n in allocation)
