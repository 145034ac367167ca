"""`finetune`: full fine-tuning of every weight, the control that `lora` is measured against."""

from __future__ import annotations

from tfcompress import models
from tfcompress._keras import keras
from tfcompress.recipes.base import Kind, Recipe, RecipeContext, Transformed, register
from tfcompress.recipes.training import TRAINABLE, FinetuneParams, finetune, require_graph, trainable_params


def full_finetune(model: keras.Model, context: RecipeContext, params: FinetuneParams) -> Transformed:
    """Fine-tunes every weight of a copy of the model on the training split (the control for `lora`)."""
    require_graph(model)
    tuned = models.clone(model)
    seconds = finetune(tuned, context, params)
    trainable = trainable_params(tuned)
    return Transformed(tuned, {"finetune_s": seconds, "trainable_params": trainable,
                               "trainable_fraction": trainable / model.count_params()})  # fmt: skip


register(
    Recipe(
        "finetune",
        "full fine-tuning of every weight on the training split (the control for lora)",
        Kind.TRANSFORM,
        full_finetune,
        FinetuneParams,
        in_default_study=False,
        columns=(TRAINABLE,),
    )
)
