"""What every fine-tuning recipe shares: its parameters, the model check, the training call, the trainable share."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from tfcompress import models
from tfcompress._keras import keras
from tfcompress.recipes.base import Column, NotApplicable, RecipeContext, param


@dataclasses.dataclass(frozen=True)
class FinetuneParams:
    """How long and how fast a recipe fine-tunes on the training split.

    Attributes:
      finetune_epochs: epochs of fine-tuning, at least 1.
      finetune_learning_rate: Adam's learning rate, above 0.
    """

    finetune_epochs: int = param(3, "Fine-tuning epochs of training-time recipes (default: the preset's).",
                                 bounds=(1, None))  # fmt: skip
    finetune_learning_rate: float = param(5e-4, "Adam learning rate of training-time recipes.", bounds=(1e-8, None))

    def __post_init__(self):
        if self.finetune_epochs < 1:
            raise ValueError(f"finetune_epochs must be >= 1, got {self.finetune_epochs}.")
        if not self.finetune_learning_rate > 0:
            raise ValueError(f"finetune_learning_rate must be > 0, got {self.finetune_learning_rate}.")


def require_graph(model: keras.Model) -> None:
    """Raises NotApplicable for subclassed models, which TFMOT cannot wrap."""
    if models.is_subclassed(model):
        raise NotApplicable(
            f"{type(model).__name__} is a subclassed model; TFMOT needs a Sequential or Functional model."
        )


def reason(error: Exception) -> str:
    """An exception's message on one line, for a not_applicable row."""
    return " ".join(str(error).split())[:300]


def finetune(model: keras.Model, context: RecipeContext, params: FinetuneParams, callbacks=None) -> float:
    """Fine-tunes in place on the context's training split; returns the wall time in seconds."""
    if context.dataset is None:
        raise ValueError("Fine-tuning recipes need RecipeContext.dataset (the training data).")
    return models.train(
        model,
        context.dataset,
        epochs=params.finetune_epochs,
        seed=context.seed,
        learning_rate=params.finetune_learning_rate * context.learning_rate_scale,
        verbose=context.verbose,
        callbacks=[*(callbacks or []), *context.finetune_callbacks],
        loss=context.loss,
        batch_size=context.batch_size,
    )


class FinetuneStopped(RuntimeError):
    """A fine-tuning stopped early because its model is already too far from the limit (a pruned trial)."""


class StopIfWorse(keras.callbacks.Callback):
    """Stops a fine-tuning part-way when ``drop(model)`` exceeds ``limit`` (raises FinetuneStopped).

    The check runs once, at the end of epoch ``epochs`` (default: half of the fit's epochs, rounded up), so
    that a pruning schedule has nearly reached its target and the model has had time to recover from it:
    after one epoch of three, a model that ends within the limit can still look many points worse.
    """

    def __init__(self, drop, limit: float, epochs: int | None = None):
        super().__init__()
        self.drop, self.limit, self.epochs = drop, limit, epochs

    def check_epoch(self) -> int:
        """The epoch (counted from 1) at whose end the check runs in this fit."""
        return self.epochs or max(1, math.ceil(int(self.params.get("epochs") or 1) / 2))

    def on_epoch_end(self, epoch, logs=None):
        at = self.check_epoch()
        if epoch + 1 == at:
            worse = self.drop(self.model)
            if worse > self.limit:
                raise FinetuneStopped(
                    f"after {at} epoch(s) of fine-tuning the metric is {worse:.3g} worse than fp32's in "
                    + f"Keras, over the stop line of {self.limit:.3g} (--max_drop and its margin)"
                )


# The share of the model's parameters a recipe trains (lora's adapters; every weight for finetune).
TRAINABLE = Column("trainable_fraction", "trainable", ".4f")


def trainable_params(model: keras.Model) -> int:
    """The number of trainable weights (scalars) of a model."""
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))
