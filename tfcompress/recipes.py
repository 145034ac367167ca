"""What a compression recipe is, the registry of recipes, and pipelines of them.

There are two kinds of recipe:

- an *export* recipe turns a Keras model into .tflite bytes (the post-training
  modes: ``fp32``, ``dynamic_range``, ``float16``, ``int8``, ``int16x8``);
- a *transform* recipe turns a Keras model into another Keras model, usually
  by fine-tuning (``prune``, ``cluster``, ``qat``, ...), and names the export
  that follows it by default.

A recipe spec chains stages with ``>`` and gives parameters after ``:``::

    prune                       # prune with the study's defaults, then its default export (fp32)
    prune:0.9                   # a bare value sets the recipe's main parameter (here sparsity)
    prune:sparsity=0.9:pruning_schedule=constant
    prune:0.8>int8              # prune, then full-integer post-training quantization
    prune>cluster:preserve_sparsity=true>qat:preserve=all    # what the alias `pcqat` stands for

Parameters not given in the spec take the study's values (its flags), then
the parameter class's defaults. Aliases (``prune_int8``, ``pqat``, ...) are
names for fixed specs.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from tfcompress._keras import keras
from tfcompress.convert import Quantization, convert
from tfcompress.data import Dataset


class RecipeError(ValueError):
    """An unknown or malformed recipe spec, or a parameter out of range."""


class NotApplicable(Exception):
    """The recipe cannot apply to this model; the message says why (becomes a not_applicable row)."""


class Kind(enum.Enum):
    TRANSFORM = "transform"  # Keras model -> Keras model
    EXPORT = "export"  # Keras model -> .tflite bytes


@dataclasses.dataclass(frozen=True)
class RecipeContext:
    """What a recipe may use besides the model.

    Attributes:
      calibration_data: representative inputs drawn from the training split.
      dataset: the study's data; transforms fine-tune on its training split.
      seed: seeds anything random the recipe does.
      sparse_tflite: also convert transformed models with the converter's
        EXPERIMENTAL_SPARSITY and report that file's size.
      verbose: Keras verbosity for fine-tuning (0 silent, 2 a line per epoch).
      loss: the task's training loss for (y_train, model output); None for a
        classifier's sparse cross-entropy.
      batch_size: fine-tuning batch size.
    """

    calibration_data: np.ndarray
    dataset: Dataset | None = None
    seed: int = 0
    sparse_tflite: bool = False
    verbose: int = 0
    loss: Any = None
    batch_size: int = 64


@dataclasses.dataclass(frozen=True)
class Compressed:
    """A pipeline's output: the .tflite bytes and extra row fields (recipe-specific columns)."""

    tflite: bytes
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Transformed:
    """A transform's output: the new Keras model and what it measured (e.g. finetune_s)."""

    model: keras.Model
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A named compression recipe.

    Attributes:
      name: the name used in --recipes and in output file names.
      description: one line for --help and the README.
      kind: transform or export.
      apply: for a transform, (model, context, params) -> Transformed; for an
        export, (model, context, params) -> bytes. Must not change the model.
      params: a frozen dataclass of the recipe's parameters, every field with a
        default, validated in __post_init__; None if it takes none.
      primary: the parameter that a bare value sets ('prune:0.9').
      export: for a transform, the export recipe used when the spec names none.
      mode: for a post-training export, its converter mode.
      in_default_study: whether a study with no --recipes runs it (False for
        recipes that only make sense for some tasks, such as lora).
    """

    name: str
    description: str
    kind: Kind
    apply: Callable[..., Any]
    params: type | None = None
    primary: str | None = None
    export: str = "fp32"
    mode: Quantization | None = None
    in_default_study: bool = True

    def __post_init__(self):
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.name):
            raise RecipeError(f"Recipe name {self.name!r} must be lower-case letters, digits and underscores.")


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
    def file_stem(self) -> str:
        """A file-system-safe name for the pipeline's .tflite file."""
        return re.sub(r"[^A-Za-z0-9._-]", "_", self.name.replace(">", "__").replace("=", "-"))


_REGISTRY: dict[str, Recipe] = {}
_ALIASES: dict[str, tuple[str, str]] = {}  # name -> (spec, description)
_ORDER: list[str] = []  # recipes and aliases in registration order: the default study's order


def register(recipe: Recipe) -> Recipe:
    """Adds a recipe to the registry; a name can be registered once."""
    if recipe.name in _REGISTRY or recipe.name in _ALIASES:
        raise RecipeError(f"Recipe {recipe.name!r} is already registered.")
    _REGISTRY[recipe.name] = recipe
    _ORDER.append(recipe.name)
    return recipe


def register_alias(name: str, spec: str, description: str) -> None:
    """Names a fixed pipeline spec, e.g. register_alias('prune_int8', 'prune>int8', ...)."""
    if name in _REGISTRY or name in _ALIASES:
        raise RecipeError(f"Recipe {name!r} is already registered.")
    _ALIASES[name] = (spec, description)
    _ORDER.append(name)


def names() -> list[str]:
    """Every registered recipe and alias, in registration order (the order of a default study)."""
    return list(_ORDER)


def default_names() -> list[str]:
    """The recipes and aliases a study with no --recipes runs, in registration order."""
    return [n for n in _ORDER if n in _ALIASES or _REGISTRY[n].in_default_study]


def describe() -> list[tuple[str, str]]:
    """(name, description) of every recipe and alias, for help texts."""
    return [
        (n, _REGISTRY[n].description if n in _REGISTRY else f"{_ALIASES[n][1]} (= {_ALIASES[n][0]})") for n in _ORDER
    ]


def get(name: str) -> Recipe:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise RecipeError(f"Unknown recipe {name!r}; choose one of: {', '.join(_ORDER)}.") from None


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


def _stage(text: str, defaults: Mapping[str, Any]) -> Stage:
    name, *args = text.split(":")
    recipe = get(name.strip())
    if recipe.params is None:
        if args:
            raise RecipeError(f"Recipe {recipe.name!r} takes no parameters, got {':'.join(args)!r}.")
        return Stage(recipe)
    fields = {f.name: f for f in dataclasses.fields(recipe.params)}
    values = {k: defaults[k] for k in fields if k in defaults and defaults[k] is not None}
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


def parse(spec: str, defaults: Mapping[str, Any] | None = None) -> Pipeline:
    """Parses a recipe spec (a name, an alias, or stages joined by '>') into a Pipeline.

    Raises:
      RecipeError: an unknown name or parameter, a bad value, or an export
        stage anywhere but last.
    """
    defaults = defaults or {}
    name = spec.strip()
    if not name:
        raise RecipeError("Empty recipe name; give a recipe such as 'int8' or 'prune:0.8>int8'.")
    text = _ALIASES[name][0] if name in _ALIASES else name
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


def parse_recipes(spec: str | list[str] | tuple[str, ...] | None, defaults: Mapping[str, Any] | None = None):
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


def run(pipeline: Pipeline, model: keras.Model, context: RecipeContext, cache: dict | None = None) -> Compressed:
    """Applies a pipeline's transforms in order, then its export.

    ``cache`` (a dict the caller keeps across pipelines) reuses the model of an
    identical prefix of transforms, so `prune`, `prune_int8` and `pqat` in one
    study fine-tune the pruned model once.

    Raises:
      NotApplicable: a stage cannot apply to this model.
    """
    extras: dict[str, Any] = {}
    finetune_s = 0.0
    current = model
    for i, stage in enumerate(pipeline.transforms):
        key = tuple(s.key() for s in pipeline.transforms[: i + 1])
        if cache is not None and key in cache:
            result = cache[key]
        else:
            result = stage.recipe.apply(current, context, stage.params)
            if cache is not None:
                cache[key] = result
        current = result.model
        finetune_s += result.extras.get("finetune_s", 0.0)
        extras.update(result.extras)
    export = pipeline.export
    tflite = export.recipe.apply(current, context, export.params)
    extras["stages"] = [s.to_dict() for s in pipeline.stages]
    if pipeline.transforms:
        extras["finetune_s"] = finetune_s
        if context.sparse_tflite and export.recipe.mode is not None:
            calibration = context.calibration_data if export.recipe.mode.needs_calibration else None
            extras["sparse_tflite_bytes"] = len(convert(current, export.recipe.mode, calibration, sparse=True))
    return Compressed(tflite, extras)


def _post_training(mode: Quantization) -> Callable[..., bytes]:
    def apply(model: keras.Model, context: RecipeContext, params: None = None) -> bytes:
        return convert(model, mode, context.calibration_data if mode.needs_calibration else None)

    return apply


BASELINE = "fp32"

for _mode, _description in [
    (Quantization.FP32, "plain conversion, float32 (the baseline)"),
    (Quantization.DYNAMIC_RANGE, "post-training dynamic range: int8 weights, float activations"),
    (Quantization.FLOAT16, "post-training float16 weights"),
    (Quantization.INT8, "post-training full integer: int8 weights, activations, input and output"),
    (Quantization.INT16X8, "post-training 16-bit activations with 8-bit weights"),
]:
    register(Recipe(_mode.value, _description, Kind.EXPORT, _post_training(_mode), mode=_mode))
