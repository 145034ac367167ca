"""Magnitude pruning with TFMOT: schedules, 2:4 sparsity and the XNNPACK latency policy.

Each recipe clones the baseline, wraps it with ``prune_low_magnitude``,
fine-tunes it on the training split, and strips the wrappers, leaving a plain
Keras model whose kernels hold the zeros.
"""

from __future__ import annotations

import dataclasses
import math

import tensorflow_model_optimization as tfmot

from tfcompress import models
from tfcompress._keras import keras
from tfcompress.measure.tflite_graph import weight_stats
from tfcompress.recipes import sensitivity
from tfcompress.recipes.base import Column, Kind, NotApplicable, Recipe, RecipeContext, Transformed, param, register
from tfcompress.recipes.training import FinetuneParams, finetune, reason, require_graph

SCHEDULES = ("polynomial", "constant")
ALLOCATIONS = ("uniform", "sensitivity")
# Fine-tuning steps between two pruning updates: about this many updates over
# the ramp. TFMOT's default frequency of 100 prunes nothing at all when a run
# has fewer than 100 steps, and a coarse frequency costs accuracy.
_UPDATES = 40


@dataclasses.dataclass(frozen=True)
class PruneParams(FinetuneParams):
    """Parameters of `prune` and `prune_xnnpack` (and the fine-tuning ones of FinetuneParams).

    Attributes:
      sparsity: the fraction of each prunable kernel set to zero, in [0, 1).
      pruning_schedule: 'polynomial' ramps sparsity from 0 to the target over
        the first 3/4 of fine-tuning; 'constant' prunes to the target at once
        and keeps it there.
      allocation: 'uniform' prunes every layer to ``sparsity``; 'sensitivity'
        (prune only) gives each layer its own sparsity from its sensitivity
        curve (tfcompress.recipes.sensitivity), ``sparsity`` holding over the
        prunable parameters.
    """

    sparsity: float = param(0.8, "Target sparsity of prune recipes.", bounds=(0.0, 0.999))
    pruning_schedule: str = param("polynomial", "TFMOT pruning schedule of prune recipes.", choices=SCHEDULES)
    allocation: str = param("uniform", "prune: uniform (every layer at --sparsity) or sensitivity (each layer its own "
                            + "sparsity from its measured sensitivity, --sparsity over all prunable weights).",
                            choices=ALLOCATIONS)  # fmt: skip

    def __post_init__(self):
        super().__post_init__()
        if not 0 <= self.sparsity < 1:
            raise ValueError(f"sparsity must be in [0, 1), got {self.sparsity}.")
        if self.pruning_schedule not in SCHEDULES:
            raise ValueError(f"pruning_schedule must be one of {', '.join(SCHEDULES)}, got {self.pruning_schedule!r}.")
        if self.allocation not in ALLOCATIONS:
            raise ValueError(f"allocation must be one of {', '.join(ALLOCATIONS)}, got {self.allocation!r}.")


def steps_per_epoch(num_examples: int, batch_size: int = 64) -> int:
    return math.ceil(num_examples / batch_size)


def schedule(name: str, sparsity: float, total_steps: int) -> tfmot.sparsity.keras.PruningSchedule:
    """A TFMOT schedule whose end step and frequency come from the real number of steps.

    The polynomial ramp ends at 3/4 of the steps, leaving the rest to recover
    accuracy at the final sparsity; pruning updates happen about 40 times.
    """
    end_step = max(1, (3 * total_steps) // 4)
    frequency = max(1, end_step // _UPDATES)
    if name == "constant":
        return tfmot.sparsity.keras.ConstantSparsity(sparsity, begin_step=0, end_step=-1, frequency=frequency)
    return tfmot.sparsity.keras.PolynomialDecay(0.0, sparsity, begin_step=0, end_step=end_step, frequency=frequency)


def _finetune_pruned(model, context: RecipeContext, params, **prune_kwargs) -> Transformed:
    require_graph(model)
    total_steps = params.finetune_epochs * steps_per_epoch(len(context.dataset.x_train), context.batch_size)
    sparsity = prune_kwargs.pop("sparsity", 0.5)
    if "pruning_schedule" not in prune_kwargs:
        prune_kwargs["pruning_schedule"] = schedule(
            getattr(params, "pruning_schedule", "constant"), sparsity, total_steps
        )
    copy = models.clone(model)
    try:
        wrapped = tfmot.sparsity.keras.prune_low_magnitude(copy, **prune_kwargs)
    except ValueError as e:  # TFMOT's word for "this model or layer cannot be pruned this way"
        if "pruning_policy" in prune_kwargs:
            raise NotApplicable(reason(e)) from None
        wrapped = _wrap_supported_layers(copy, prune_kwargs, e)
    seconds = finetune(wrapped, context, params, callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    return Transformed(tfmot.sparsity.keras.strip_pruning(wrapped), {"finetune_s": seconds})


def _wrap_supported_layers(model: keras.Model, prune_kwargs: dict, error: Exception) -> keras.Model:
    """Wraps only the layers TFMOT can prune (Dense, Conv, Embedding, attention, ...), leaving the others dense.

    A model with one unsupported layer (a custom layer such as the language
    model's position embedding) is still pruned where it can be, as TFMOT's
    guide does with clone_function.
    """
    from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry

    def wrap(layer):
        if prune_registry.PruneRegistry.supports(layer):
            return tfmot.sparsity.keras.prune_low_magnitude(layer, **prune_kwargs)
        return layer

    if not any(prune_registry.PruneRegistry.supports(layer) for layer in model.layers):
        raise NotApplicable(reason(error))
    try:
        return keras.models.clone_model(model, clone_function=wrap)
    except ValueError as e:
        raise NotApplicable(reason(e)) from None


def prune(model: keras.Model, context: RecipeContext, params: PruneParams) -> Transformed:
    """Magnitude pruning of every prunable kernel to ``params.sparsity`` (or per layer, by sensitivity)."""
    if params.allocation == "sensitivity":
        return _prune_allocated(model, context, params)
    return _finetune_pruned(model, context, params, sparsity=params.sparsity)


def _prune_allocated(model: keras.Model, context: RecipeContext, params: PruneParams) -> Transformed:
    """Each layer pruned to its own sparsity, shared out from the layers' sensitivity curves (no fine-tuning)."""
    require_graph(model)
    x, y = sensitivity.held_out(context.dataset, context.seed)
    probe = models.clone(model)
    curves = sensitivity.curves(probe, sensitivity.loss_score(probe, x, y, context.loss))
    try:
        allocation = sensitivity.allocate(curves, params.sparsity)
    except ValueError as e:
        raise NotApplicable(str(e)) from None
    total_steps = params.finetune_epochs * steps_per_epoch(len(context.dataset.x_train), context.batch_size)

    def wrap(layer):
        if allocation.get(layer.name, 0) > 0:
            s = allocation[layer.name]
            return tfmot.sparsity.keras.prune_low_magnitude(
                layer, pruning_schedule=schedule(params.pruning_schedule, s, total_steps)
            )
        return layer

    try:
        wrapped = keras.models.clone_model(models.clone(model), clone_function=wrap)
    except ValueError as e:
        raise NotApplicable(reason(e)) from None
    seconds = finetune(wrapped, context, params, callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    extras = {"finetune_s": seconds, "allocated_sparsity": allocation,
              "sensitivity": [c.to_dict() for c in curves]}  # fmt: skip
    return Transformed(tfmot.sparsity.keras.strip_pruning(wrapped), extras)


def prune_2of4(model: keras.Model, context: RecipeContext, params: FinetuneParams) -> Transformed:
    """2:4 structured sparsity: at most 2 non-zeros in every block of 4 input weights."""
    return _finetune_pruned(model, context, params, sparsity=0.5, sparsity_m_by_n=(2, 4))


def prune_xnnpack(model: keras.Model, context: RecipeContext, params: PruneParams) -> Transformed:
    """Pruning restricted by TFMOT's PruneForLatencyOnXNNPack policy (uniform allocation only).

    The policy only accepts models with the stem XNNPACK's sparse inference
    needs (ZeroPadding2D + 3x3 stride-2 VALID Conv2D on 3 channels); others
    become not_applicable with TFMOT's reason.
    """
    if params.allocation != "uniform":
        raise NotApplicable("prune_xnnpack prunes uniformly (its policy decides the layers); use prune:allocation=...")
    return _finetune_pruned(
        model,
        context,
        params,
        sparsity=params.sparsity,
        pruning_policy=tfmot.sparsity.keras.PruneForLatencyOnXNNPack(),
    )


SPARSITY = Column(
    "sparsity",
    "sparsity",
    ".3f",
    note="sparsity is the measured fraction of zero weights in the .tflite's kernels. Zeros and shared "
    + "(clustered) values do not shrink the .tflite file itself, only its compressed size: compare "
    + "`gzip x fp32`, not `size x fp32`, for pruning and clustering (or `sparse KB`, the file written with "
    + "the converter's EXPERIMENTAL_SPARSITY, when the study ran with --sparse_tflite).",
)
TWO_FOUR = Column("two_four", "2:4")


def measure_sparsity(tflite: bytes) -> dict:
    """The fraction of zeros over the .tflite's kernels, and per layer (``layer_sparsity``, results.json only)."""
    stats = weight_stats(tflite)
    return {"sparsity": stats["sparsity"], "layer_sparsity": stats["layer_sparsity"]}


def measure_two_four(tflite: bytes) -> dict:
    """The sparsity columns, and whether every kernel that can be is 2:4 sparse (with the exempt ones)."""
    stats = weight_stats(tflite)
    return measure_sparsity(tflite) | {"two_four": stats["two_four"], "two_four_exempt": stats["two_four_exempt"]}


register(
    Recipe(
        "prune",
        "magnitude pruning (TFMOT) to --sparsity, fine-tuned",
        Kind.TRANSFORM,
        prune,
        PruneParams,
        "sparsity",
        columns=(SPARSITY,),
        measure=measure_sparsity,
    )
)
register(
    Recipe(
        "prune_2of4",
        "2:4 structured sparsity (TFMOT sparsity_m_by_n)",
        Kind.TRANSFORM,
        prune_2of4,
        FinetuneParams,
        columns=(SPARSITY, TWO_FOUR),
        measure=measure_two_four,
    )
)
register(
    Recipe(
        "prune_xnnpack",
        "pruning with TFMOT's PruneForLatencyOnXNNPack policy",
        Kind.TRANSFORM,
        prune_xnnpack,
        PruneParams,
        "sparsity",
        columns=(SPARSITY,),
        measure=measure_sparsity,
    )
)
