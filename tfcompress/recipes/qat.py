"""Quantization-aware training with TFMOT, alone or preserving earlier sparsity and clusters.

``preserve`` chooses TFMOT's collaborative-optimization scheme: 'sparsity'
(PQAT, after pruning), 'clusters' (CQAT, after clustering) or 'all' (PCQAT,
after sparsity-preserving clustering of a pruned model). The result is meant
for the int8 export, which is the recipe's default.
"""

from __future__ import annotations

import dataclasses

import tensorflow_model_optimization as tfmot

from tfcompress import models
from tfcompress._keras import keras
from tfcompress.recipes.base import Kind, NotApplicable, Recipe, RecipeContext, Transformed, param, register
from tfcompress.recipes.training import FinetuneParams, finetune, reason, require_graph

PRESERVE = ("none", "sparsity", "clusters", "all")


@dataclasses.dataclass(frozen=True)
class QatParams(FinetuneParams):
    """Parameters of `qat` (and the fine-tuning ones of FinetuneParams).

    Attributes:
      preserve: what of an earlier stage the fake quantization keeps: none,
        sparsity, clusters or all.
    """

    preserve: str = param("none", "qat: what of an earlier stage QAT preserves.", flag="qat_preserve", choices=PRESERVE)

    def __post_init__(self):
        super().__post_init__()
        if self.preserve not in PRESERVE:
            raise ValueError(f"preserve must be one of {', '.join(PRESERVE)}, got {self.preserve!r}.")


def _scheme(preserve: str):
    combine = tfmot.experimental.combine
    if preserve == "sparsity":
        return combine.Default8BitPrunePreserveQuantizeScheme()
    if preserve == "clusters":
        return combine.Default8BitClusterPreserveQuantizeScheme()
    return combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=True)


def qat(model: keras.Model, context: RecipeContext, params: QatParams) -> Transformed:
    """Wraps the model with fake quantization (quantize_model clones it) and fine-tunes it."""
    require_graph(model)
    quantization = tfmot.quantization.keras
    try:
        if params.preserve == "none":
            wrapped = quantization.quantize_model(model)
        else:
            annotated = quantization.quantize_annotate_model(models.clone(model))
            wrapped = quantization.quantize_apply(annotated, _scheme(params.preserve))
    except (ValueError, RuntimeError, TypeError) as e:  # e.g. a layer QAT has no QuantizeConfig for
        raise NotApplicable(reason(e)) from None
    seconds = finetune(wrapped, context, params)
    return Transformed(wrapped, {"finetune_s": seconds})


register(
    Recipe(
        "qat",
        "quantization-aware training (TFMOT quantize_model), exported as int8",
        Kind.TRANSFORM,
        qat,
        QatParams,
        "preserve",
        export="int8",
    )
)
