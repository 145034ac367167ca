"""Weight clustering with TFMOT: every kernel shares k centroid values."""

from __future__ import annotations

import dataclasses

import tensorflow_model_optimization as tfmot

from tfcompress import models
from tfcompress._keras import keras
from tfcompress.measure.tflite_graph import weight_stats
from tfcompress.recipes.base import Column, Kind, NotApplicable, Recipe, RecipeContext, Transformed, param, register
from tfcompress.recipes.pruning import SPARSITY, measure_sparsity
from tfcompress.recipes.training import FinetuneParams, finetune, reason, require_graph

_INIT = {
    "kmeans++": tfmot.clustering.keras.CentroidInitialization.KMEANS_PLUS_PLUS,
    "linear": tfmot.clustering.keras.CentroidInitialization.LINEAR,
    "density": tfmot.clustering.keras.CentroidInitialization.DENSITY_BASED,
    "random": tfmot.clustering.keras.CentroidInitialization.RANDOM,
}
CENTROID_INITS = tuple(_INIT)


@dataclasses.dataclass(frozen=True)
class ClusterParams(FinetuneParams):
    """Parameters of `cluster` (and the fine-tuning ones of FinetuneParams).

    Attributes:
      clusters: distinct values per kernel (k), at least 2.
      centroid_init: how the k centroids start: kmeans++, linear, density or random.
      preserve_sparsity: keep the zeros of an earlier pruning stage (sparsity-preserving clustering).
    """

    clusters: int = param(16, "Distinct values per kernel for cluster recipes.", bounds=(2, None))
    centroid_init: str = param("kmeans++", "Centroid initialization of cluster.", choices=CENTROID_INITS)
    preserve_sparsity: bool = param(False, "cluster: keep the zeros of an earlier pruning stage.")

    def __post_init__(self):
        super().__post_init__()
        if self.clusters < 2:
            raise ValueError(f"clusters must be >= 2, got {self.clusters}.")
        if self.centroid_init not in _INIT:
            raise ValueError(f"centroid_init must be one of {', '.join(_INIT)}, got {self.centroid_init!r}.")


def cluster(model: keras.Model, context: RecipeContext, params: ClusterParams) -> Transformed:
    """Clusters every clusterable kernel into ``params.clusters`` shared values, fine-tuned."""
    require_graph(model)
    kwargs = {"preserve_sparsity": True} if params.preserve_sparsity else {}
    try:
        wrapped = tfmot.clustering.keras.cluster_weights(
            models.clone(model),
            number_of_clusters=params.clusters,
            cluster_centroids_init=_INIT[params.centroid_init],
            **kwargs,
        )
    except ValueError as e:
        raise NotApplicable(reason(e)) from None
    if wrapped is None:  # what cluster_weights returns for a model it cannot handle (e.g. Keras 3)
        raise NotApplicable("TFMOT's cluster_weights could not wrap this model.")
    seconds = finetune(wrapped, context, params)
    return Transformed(tfmot.clustering.keras.strip_clustering(wrapped), {"finetune_s": seconds})


UNIQUE_WEIGHTS = Column("unique_weights", "unique weights", "d")


def measure_clusters(tflite: bytes) -> dict:
    """The sparsity columns and the most distinct values in any kernel of the .tflite."""
    return measure_sparsity(tflite) | {"unique_weights": weight_stats(tflite)["unique_weights"]}


register(
    Recipe(
        "cluster",
        "weight clustering (TFMOT) to --clusters shared values per kernel, fine-tuned",
        Kind.TRANSFORM,
        cluster,
        ClusterParams,
        "clusters",
        columns=(SPARSITY, UNIQUE_WEIGHTS),
        measure=measure_clusters,
    )
)
