"""Low-rank factorization: each large Dense kernel W (m x n) becomes A (m x r) @ B (r x n) by truncated SVD.

The factorized layer (``LowRankDense``) computes ``activation(x @ A @ B + b)``,
which converts to two small matrix multiplications in TFLite. With r at
full rank it reproduces the original outputs; below it, it trades accuracy for
parameters and multiply-adds, and a short fine-tuning recovers some of it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tfcompress._keras import keras
from tfcompress.recipes.base import Kind, NotApplicable, Recipe, RecipeContext, Transformed, param, register
from tfcompress.recipes.training import FinetuneParams, finetune, require_graph


@keras.utils.register_keras_serializable(package="tfcompress")
class LowRankDense(keras.layers.Layer):
    """A Dense layer whose kernel is stored as two factors: activation(x @ a @ b + bias)."""

    def __init__(self, units: int, rank: int, activation=None, use_bias: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.units, self.rank, self.use_bias = units, rank, use_bias
        self.activation = keras.activations.get(activation)

    def build(self, input_shape):
        features = int(input_shape[-1])
        self.a = self.add_weight(name="a", shape=(features, self.rank), initializer="glorot_uniform")
        self.b = self.add_weight(name="b", shape=(self.rank, self.units), initializer="glorot_uniform")
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros") if self.use_bias else None
        super().build(input_shape)

    def call(self, inputs):
        y = keras.backend.dot(keras.backend.dot(inputs, self.a), self.b)
        if self.bias is not None:
            y = y + self.bias
        return self.activation(y)

    def get_config(self):
        return super().get_config() | {
            "units": self.units,
            "rank": self.rank,
            "activation": keras.activations.serialize(self.activation),
            "use_bias": self.use_bias,
        }


@dataclasses.dataclass(frozen=True)
class LowRankParams(FinetuneParams):
    """Parameters of `lowrank` (and the fine-tuning ones of FinetuneParams).

    Attributes:
      rank_fraction: kept rank as a fraction of min(inputs, outputs), in (0, 1].
      energy: if above 0, keep instead the smallest rank whose singular values
        hold this fraction of the kernel's energy (sum of squares), in (0, 1].
      min_features: only Dense layers with at least this many inputs and
        outputs are factorized (small ones gain nothing).
    """

    rank_fraction: float = param(0.25, "Kept rank of the lowrank recipe, as a fraction of full rank.",
                                 bounds=(1e-6, 1.0))  # fmt: skip
    energy: float = param(0.0, "lowrank: keep the singular values holding this share of the energy (0: use "
                          + "--rank_fraction).", flag="lowrank_energy", bounds=(0.0, 1.0))  # fmt: skip
    min_features: int = param(32, "lowrank: factorize only Dense layers with at least this many inputs and "
                              + "outputs.", flag="lowrank_min_features", bounds=(1, None))  # fmt: skip

    def __post_init__(self):
        super().__post_init__()
        if not 0 < self.rank_fraction <= 1:
            raise ValueError(f"rank_fraction must be in (0, 1], got {self.rank_fraction}.")
        if not 0 <= self.energy <= 1:
            raise ValueError(f"energy must be in [0, 1] (0: use rank_fraction), got {self.energy}.")
        if self.min_features < 1:
            raise ValueError(f"min_features must be >= 1, got {self.min_features}.")


def _rank(singular_values: np.ndarray, params: LowRankParams) -> int:
    if params.energy > 0:
        cumulative = np.cumsum(singular_values**2) / np.sum(singular_values**2)
        return int(np.searchsorted(cumulative, params.energy - 1e-12) + 1)
    return max(1, int(round(params.rank_fraction * len(singular_values))))


def factorize(model: keras.Model, params: LowRankParams) -> tuple[keras.Model, list[dict]]:
    """A copy of the model with every large Dense replaced by its truncated-SVD LowRankDense.

    Returns the new model and, per factorized layer, its name, shape and kept rank.
    """
    require_graph(model)
    plans: dict[str, tuple] = {}
    for layer in model.layers:
        if type(layer) is keras.layers.Dense:
            kernel = layer.get_weights()[0]
            if min(kernel.shape) >= params.min_features:
                u, s, vt = np.linalg.svd(kernel, full_matrices=False)
                r = _rank(s, params)
                root = np.sqrt(s[:r])
                plans[layer.name] = (u[:, :r] * root, root[:, None] * vt[:r], r)
    if not plans:
        raise NotApplicable(
            f"no Dense layer has at least {params.min_features} inputs and outputs to factorize "
            + "(lower min_features to include smaller ones)."
        )

    def clone(layer):
        if layer.name not in plans:
            return layer.__class__.from_config(layer.get_config())
        config = layer.get_config()
        return LowRankDense(config["units"], plans[layer.name][2], config["activation"], config["use_bias"],
                            name=layer.name)  # fmt: skip

    new = keras.models.clone_model(model, clone_function=clone)
    report = []
    for old_layer, new_layer in zip(model.layers, new.layers, strict=True):
        if old_layer.name in plans:
            a, b, r = plans[old_layer.name]
            weights = [a, b] + old_layer.get_weights()[1:]
            new_layer.set_weights(weights)
            m, n = old_layer.get_weights()[0].shape
            report.append({"layer": old_layer.name, "shape": [m, n], "rank": r})
        else:
            new_layer.set_weights(old_layer.get_weights())
    return new, report


def lowrank(model: keras.Model, context: RecipeContext, params: LowRankParams) -> Transformed:
    """Factorizes every large Dense layer, then fine-tunes briefly."""
    factorized, report = factorize(model, params)
    seconds = finetune(factorized, context, params)
    # "params" replaces the baseline's count in the row (and so bytes_per_param).
    return Transformed(factorized, {"finetune_s": seconds, "lowrank_layers": report,
                                    "params": int(factorized.count_params())})  # fmt: skip


register(
    Recipe(
        "lowrank",
        "low-rank factorization (truncated SVD) of large Dense kernels, fine-tuned",
        Kind.TRANSFORM,
        lowrank,
        LowRankParams,
        "rank_fraction",
    )
)
