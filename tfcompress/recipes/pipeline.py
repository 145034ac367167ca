"""Pipelines of recipes: parsing a recipe spec, and running it on a model.

A recipe spec chains stages with ``>`` and gives parameters after ``:``::

    prune                       # prune with the study's defaults, then its default export (fp32)
    prune:0.9                   # a bare value sets the recipe's main parameter (here sparsity)
    prune:sparsity=0.9:pruning_schedule=constant
    prune:0.8>int8              # prune, then full-integer post-training quantization
    prune>cluster:preserve_sparsity=true>qat:preserve=all    # what the alias `pcqat` stands for
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from tfcompress._keras import keras
from tfcompress.recipes.base import (
    Baseline,
    Column,
    Compressed,
    Kind,
    NotApplicable,
    Recipe,
    RecipeContext,
    RecipeError,
    alias_spec,
    default_names,
    get,
    recipes,
)


@dataclasses.dataclass(frozen=True)
class Stage:
    """One recipe with its resolved parameters."""

    recipe: Recipe
    params: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {"recipe": self.recipe.name, "params": dataclasses.asdict(self.params) if self.params else {}}

    def key(self) -> tuple:
        return (self.recipe.name, tuple(sorted(self.to_dict()["params"].items())))


@dataclasses.dataclass(frozen=True)
class Pipeline:
    """Transforms in order, then exactly one export; ``name`` is the spec as the user wrote it."""

    name: str
    stages: tuple[Stage, ...]

    @property
    def transforms(self) -> tuple[Stage, ...]:
        return self.stages[:-1]

    @property
    def export(self) -> Stage:
        return self.stages[-1]

    @property
    def columns(self) -> tuple[Column, ...]:
        """The extra columns of this pipeline's row: its stages' and, after transforms, the pipeline's own."""
        own = [c for s in self.stages for c in s.recipe.columns]
        if self.transforms:
            own += PIPELINE_COLUMNS
        return tuple(dict((c.key, c) for c in own).values())

    @property
    def file_stem(self) -> str:
        """A file-system-safe name for the pipeline's .tflite file."""
        return re.sub(r"[^A-Za-z0-9._-]", "_", self.name.replace(">", "__").replace("=", "-"))


# Columns of every pipeline with transforms, filled by ``run``.
PIPELINE_COLUMNS = (
    Column("sparse_tflite_bytes", "sparse KB", ".1f", 1 / 1024),
    Column("finetune_s", "finetune s", ".1f"),
)


def all_columns() -> list[Column]:
    """Every column any registered recipe declares, in registration order, then the pipeline's own."""
    columns = [c for r in recipes() for c in r.columns] + list(PIPELINE_COLUMNS)
    return list(dict((c.key, c) for c in columns).values())


def _coerce(text: str, default: Any, where: str) -> Any:
    try:
        if isinstance(default, bool):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return text.lower() in ("true", "1", "yes")
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        raise RecipeError(f"{where}: {text!r} is not a {type(default).__name__}.") from None
    return text


def _stage(text: str, defaults: Mapping[str, Mapping[str, Any]]) -> Stage:
    name, *args = text.split(":")
    recipe = get(name.strip())
    if recipe.params is None:
        if args:
            raise RecipeError(f"Recipe {recipe.name!r} takes no parameters, got {':'.join(args)!r}.")
        return Stage(recipe)
    fields = {f.name: f for f in dataclasses.fields(recipe.params)}
    values = dict(defaults.get(recipe.name) or {})
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep:
            key, value = recipe.primary, arg
            if key is None:
                raise RecipeError(f"Recipe {recipe.name!r} has no main parameter; write {recipe.name}:NAME=VALUE.")
        key = key.strip()
        if key not in fields:
            raise RecipeError(
                f"Recipe {recipe.name!r} has no parameter {key!r}; its parameters are: {', '.join(fields)}."
            )
        default = values.get(key, fields[key].default)
        values[key] = _coerce(value.strip(), default, f"{recipe.name}:{key}")
    try:
        return Stage(recipe, recipe.params(**values))
    except ValueError as e:
        raise RecipeError(f"{text}: {e}") from None


def check_defaults(defaults: Mapping[str, Mapping[str, Any]]) -> None:
    """Checks a recipe name -> {parameter: value} mapping: every recipe and parameter must exist.

    Raises:
      RecipeError: naming the unknown recipe or parameter.
    """
    for name, overrides in defaults.items():
        recipe = get(name)
        fields = {f.name for f in dataclasses.fields(recipe.params)} if recipe.params else set()
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise RecipeError(
                f"Recipe {name!r} has no parameter {unknown[0]!r}; its parameters are: {', '.join(sorted(fields))}."
            )


def parse(spec: str, defaults: Mapping[str, Mapping[str, Any]] | None = None) -> Pipeline:
    """Parses a recipe spec (a name, an alias, or stages joined by '>') into a Pipeline.

    ``defaults`` maps a recipe name to its parameter values for this study
    (the spec's own parameters win over them).

    Raises:
      RecipeError: an unknown name or parameter, a bad value, or an export
        stage anywhere but last.
    """
    defaults = defaults or {}
    name = spec.strip()
    if not name:
        raise RecipeError("Empty recipe name; give a recipe such as 'int8' or 'prune:0.8>int8'.")
    text = alias_spec(name) or name
    stages = [_stage(part, defaults) for part in text.split(">")]
    for stage in stages[:-1]:
        if stage.recipe.kind is Kind.EXPORT:
            raise RecipeError(
                f"In {spec!r}, the export {stage.recipe.name!r} must be the last stage; "
                + "exports turn the model into a .tflite file."
            )
    if stages[-1].recipe.kind is Kind.TRANSFORM:
        stages.append(_stage(stages[-1].recipe.export, defaults))
    return Pipeline(name, tuple(stages))


def parse_recipes(
    spec: str | list[str] | tuple[str, ...] | None, defaults: Mapping[str, Mapping[str, Any]] | None = None
) -> list[Pipeline]:
    """Parses a comma list (or list) of recipe specs; empty means every recipe of the default study.

    Duplicates are dropped, keeping the first. Returns Pipelines.
    """
    if spec is None:
        items = []
    else:
        items = spec.split(",") if isinstance(spec, str) else list(spec)
    items = [s.strip() for s in items if s.strip()] or default_names()
    pipelines = [parse(item, defaults) for item in dict.fromkeys(items)]
    return pipelines


def run(
    pipeline: Pipeline, model: keras.Model | Baseline, context: RecipeContext, cache: dict | None = None
) -> Compressed:
    """Applies a pipeline's transforms in order, then its export.

    ``model`` is a tf_keras model, or a Baseline: then an export-only pipeline
    converts ``Baseline.model`` as it is (a Keras 3 model or an exported
    SavedModel included) and transforms start from ``Baseline.trainable``.
    ``cache`` (a dict the caller keeps across pipelines) reuses the model of an
    identical prefix of transforms, so `prune`, `prune_int8` and `pqat` in one
    study fine-tune the pruned model once.

    Raises:
      NotApplicable: a stage cannot apply to this model.
    """
    extras: dict[str, Any] = {}
    finetune_s = 0.0
    baseline = model if isinstance(model, Baseline) else Baseline(model, model)
    current = baseline.trainable if pipeline.transforms else baseline.model
    if current is None:
        raise NotApplicable(
            f"{pipeline.transforms[0].recipe.name} trains the model, which needs its tf_keras form: "
            + baseline.why_not_trainable
        )
    for i, stage in enumerate(pipeline.transforms):
        key = tuple(s.key() for s in pipeline.transforms[: i + 1])
        if cache is not None and key in cache:
            result = cache[key]
        else:
            with context.scope() if context.scope is not None else contextlib.nullcontext():
                result = stage.recipe.apply(current, context, stage.params)
            if cache is not None:
                cache[key] = result
        current = result.model
        finetune_s += result.extras.get("finetune_s", 0.0)
        extras.update(result.extras)
    export = pipeline.export
    tflite = export.recipe.apply(current, context, export.params)
    if isinstance(tflite, Compressed):  # an export with row fields of its own (the LiteRT Quantizer's)
        extras.update(tflite.extras)
        tflite = tflite.tflite
    extras["stages"] = [s.to_dict() for s in pipeline.stages]
    if pipeline.transforms:
        extras["finetune_s"] = finetune_s
        for stage in pipeline.transforms:
            if stage.recipe.measure is not None:
                extras.update(stage.recipe.measure(tflite))
        if context.sparse_tflite and export.recipe.sparse is not None:
            extras["sparse_tflite_bytes"] = len(export.recipe.sparse(current, context, export.params))
    return Compressed(tflite, extras)
