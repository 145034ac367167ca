"""What a compression recipe is, its parameters and columns, the registry, and export back ends.

There are two kinds of recipe:

- an *export* recipe turns a Keras model into .tflite bytes (the post-training
  modes: ``fp32``, ``dynamic_range``, ``float16``, ``int8``, ``int16x8``);
- a *transform* recipe turns a Keras model into another Keras model, usually
  by fine-tuning (``prune``, ``cluster``, ``qat``, ...), and names the export
  that follows it by default.

Recipes chain into pipelines (tfcompress.recipes.pipeline: the spec grammar, parsing, running).

Parameters not given in the spec take the study's values for that recipe
(``recipe_defaults``, which the script fills from its flags), then the
parameter class's defaults. Aliases (``prune_int8``, ``pqat``, ...) are names
for fixed specs.

A recipe's parameters are one frozen dataclass: each field declared with
``param(...)`` (tfcompress.fields) carries its flag help (and, where the field's name would be
ambiguous on a command line, its flag name), so that the script's flags,
their defaults and the resume key all derive from that one definition. A
recipe also declares the extra columns its rows carry (``Column``), and may
compute some of them from the exported .tflite (``Recipe.measure``).
"""

from __future__ import annotations

import abc
import dataclasses
import enum
import functools
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from tfcompress import fields as fields_lib
from tfcompress._keras import keras
from tfcompress.data import Dataset
from tfcompress.fields import Column, flag_name, param  # noqa: F401  (re-exported for recipe modules)


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
      sparse_tflite: also export transformed models with the export's sparse
        variant (Recipe.sparse) and report that file's size.
      verbose: Keras verbosity for fine-tuning (0 silent, 2 a line per epoch).
      loss: the task's training loss for (y_train, model output); None for a
        classifier's sparse cross-entropy.
      batch_size: fine-tuning batch size.
      finetune_callbacks: Keras callbacks every fine-tuning also runs (the advisor's early stop).
      scope: None, or a callable returning the context every transform is built and fine-tuned in
        (a tf.distribute strategy's scope: tfcompress.study.distribute); exports run outside it.
      learning_rate_scale: fine-tuning learning rates are multiplied by this (the workers of a
        multi_worker strategy: a batch ``workers`` times larger takes ``workers`` times fewer steps).
    """

    calibration_data: np.ndarray
    dataset: Dataset | None = None
    seed: int = 0
    sparse_tflite: bool = False
    verbose: int = 0
    loss: Any = None
    batch_size: int = 64
    finetune_callbacks: tuple = ()
    scope: Any = None
    learning_rate_scale: float = 1.0


@dataclasses.dataclass(frozen=True)
class Baseline:
    """The model a study compresses, in the two forms its recipes need.

    Attributes:
      model: what post-training exports convert as it is: a tf_keras or a
        Keras 3 model, or a SavedModel exported without layers
        (tfcompress.loading.ExportedModel).
      trainable: the tf_keras model training-time transforms start from: the
        model itself when it is tf_keras, its checked twin for Keras 3
        (tfcompress.twin); None when there is none.
      why_not_trainable: why ``trainable`` is None, naming the layer or format.
    """

    model: Any
    trainable: Any = None
    why_not_trainable: str = ""


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
        export, (model, context, params) -> bytes, or a Compressed when it has
        extra row fields. Must not change the model.
      params: a frozen dataclass of the recipe's parameters, every field with a
        default, validated in __post_init__; None if it takes none.
      primary: the parameter that a bare value sets ('prune:0.9').
      export: for a transform, the export recipe used when the spec names none.
      in_default_study: whether a study with no --recipes runs it (False for
        recipes that only make sense for some tasks, such as lora).
      columns: the extra columns its rows carry, filled from its extras (what
        ``apply`` returned, or what ``measure`` read from the .tflite).
      measure: for a transform, (tflite bytes) -> dict of column values read
        from the pipeline's exported file (e.g. the measured sparsity).
      sparse: for an export, the same export with sparse weight storage
        (--sparse_tflite); None if it has none.
    """

    name: str
    description: str
    kind: Kind
    apply: Callable[..., Any]
    params: type | None = None
    primary: str | None = None
    export: str = "fp32"
    in_default_study: bool = True
    columns: tuple[Column, ...] = ()
    measure: Callable[[bytes], dict[str, Any]] | None = None
    sparse: Callable[..., bytes] | None = None

    def __post_init__(self):
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.name):
            raise RecipeError(f"Recipe name {self.name!r} must be lower-case letters, digits and underscores.")


_REGISTRY: dict[str, Recipe] = {}
_ALIASES: dict[str, tuple[str, str]] = {}  # name -> (spec, description)
_ORDER: list[str] = []  # recipes and aliases in registration order: the default study's order
_NOT_DEFAULT: set[str] = set()  # aliases a study with no --recipes leaves out


def register(recipe: Recipe) -> Recipe:
    """Adds a recipe to the registry; a name can be registered once."""
    if recipe.name in _REGISTRY or recipe.name in _ALIASES:
        raise RecipeError(f"Recipe {recipe.name!r} is already registered.")
    _REGISTRY[recipe.name] = recipe
    _ORDER.append(recipe.name)
    return recipe


def register_alias(name: str, spec: str, description: str, in_default_study: bool = True) -> None:
    """Names a fixed pipeline spec, e.g. register_alias('prune_int8', 'prune>int8', ...)."""
    if name in _REGISTRY or name in _ALIASES:
        raise RecipeError(f"Recipe {name!r} is already registered.")
    _ALIASES[name] = (spec, description)
    _ORDER.append(name)
    if not in_default_study:
        _NOT_DEFAULT.add(name)


def names() -> list[str]:
    """Every registered recipe and alias, in registration order (the order of a default study)."""
    return list(_ORDER)


def default_names() -> list[str]:
    """The recipes and aliases a study with no --recipes runs, in registration order."""
    return [
        n
        for n in _ORDER
        if (n in _ALIASES and n not in _NOT_DEFAULT) or (n in _REGISTRY and _REGISTRY[n].in_default_study)
    ]


def describe() -> list[tuple[str, str]]:
    """(name, description) of every recipe and alias, for help texts."""
    return [
        (n, _REGISTRY[n].description if n in _REGISTRY else f"{_ALIASES[n][1]} (= {_ALIASES[n][0]})") for n in _ORDER
    ]


def recipes() -> list[Recipe]:
    """Every registered recipe (not aliases), in registration order."""
    return [_REGISTRY[n] for n in _ORDER if n in _REGISTRY]


def param_flags() -> dict[str, list[tuple[str, dataclasses.Field]]]:
    """Flag name -> [(recipe name, Params field)] for every parameter of every registered recipe."""
    return fields_lib.by_flag((recipe.name, recipe.params) for recipe in recipes())


def alias_spec(name: str) -> str | None:
    """The spec an alias stands for, or None if ``name`` is not an alias."""
    return _ALIASES[name][0] if name in _ALIASES else None


def spread(values: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Flag-named parameter values -> {recipe: {field: value}} for every recipe that declares each one.

    ``spread({"sparsity": 0.5, "finetune_epochs": 7})`` sets the sparsity of
    prune and prune_xnnpack and the epochs of every fine-tuning recipe. A
    value equal to a field's default (or None) is left out.

    Raises:
      RecipeError: a name no recipe declares.
    """
    flags = param_flags()
    unknown = sorted(set(values) - set(flags))
    if unknown:
        raise RecipeError(f"No recipe has a parameter flag {unknown[0]!r}; the flags are: {', '.join(sorted(flags))}.")
    return fields_lib.spread(flags, values)


def get(name: str) -> Recipe:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise RecipeError(f"Unknown recipe {name!r}; choose one of: {', '.join(_ORDER)}.") from None


class ExportBackend(abc.ABC):
    """A way to turn a Keras model into .tflite bytes, in named modes; each mode becomes an export recipe.

    Today's back end is the TFLite converter (tfcompress.recipes.converter);
    another (a quantizer that starts from the fp32 file, say) is one module
    that subclasses this and calls ``register_backend``.
    """

    name: str = ""

    @abc.abstractmethod
    def modes(self) -> list[tuple[str, str]]:
        """(recipe name, one-line description) of each mode, in the order to register them."""

    @abc.abstractmethod
    def export(self, model: keras.Model, mode: str, context: RecipeContext, params: Any = None) -> bytes | Compressed:
        """The .tflite bytes of ``model`` in ``mode`` (or a Compressed: the bytes and extra row fields)."""

    def export_sparse(self, model: keras.Model, mode: str, context: RecipeContext, params: Any = None) -> bytes:
        """The same export with sparse weight storage; back ends without one do not override it."""
        raise NotImplementedError

    def params(self, mode: str) -> type | None:
        """The Params dataclass of a mode (None: it takes none)."""
        return None

    def recipe_options(self, mode: str) -> dict[str, Any]:
        """Other Recipe fields of a mode's recipe (primary, in_default_study, columns)."""
        return {}

    @property
    def has_sparse(self) -> bool:
        return type(self).export_sparse is not ExportBackend.export_sparse


def register_backend(backend: ExportBackend) -> list[Recipe]:
    """Registers every mode of an export back end as an export recipe; returns them."""
    registered = []
    for mode, description in backend.modes():
        registered.append(
            register(
                Recipe(
                    mode,
                    description,
                    Kind.EXPORT,
                    functools.partial(_export, backend.export, mode),
                    params=backend.params(mode),
                    sparse=functools.partial(_export, backend.export_sparse, mode) if backend.has_sparse else None,
                    **backend.recipe_options(mode),
                )
            )
        )
    return registered


def _export(method: Callable[..., Any], mode: str, model, context: RecipeContext, params=None) -> bytes | Compressed:
    return method(model, mode, context, params)


BASELINE = "fp32"
