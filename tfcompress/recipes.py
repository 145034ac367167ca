"""What a compression recipe is, and the registry of recipes by name.

A recipe takes the baseline Keras model and a context (calibration data,
seed, ...) and returns the compressed model as .tflite bytes, plus any extra
columns it wants in its row. Adding a recipe is one function and one
``register`` call in the module that defines it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from tfcompress._keras import keras
from tfcompress.convert import Quantization, convert


class RecipeError(ValueError):
    """An unknown or malformed recipe name."""


@dataclasses.dataclass(frozen=True)
class RecipeContext:
    """What a recipe may use besides the model.

    Attributes:
      calibration_data: representative inputs drawn from the training split.
      seed: seeds anything random the recipe does.
    """

    calibration_data: np.ndarray
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class Compressed:
    """A recipe's output: the .tflite bytes and extra row fields (recipe-specific columns)."""

    tflite: bytes
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A named compression recipe.

    Attributes:
      name: the name used in --recipes and in output file names.
      description: one line for --help and the README.
      apply: (baseline model, context) -> Compressed. Must not change the model.
    """

    name: str
    description: str
    apply: Callable[[keras.Model, RecipeContext], Compressed]

    def __post_init__(self):
        if not self.name or not self.name.replace("_", "").isalnum():
            raise RecipeError(f"Recipe name {self.name!r} must be letters, digits and underscores.")


_REGISTRY: dict[str, Recipe] = {}


def register(recipe: Recipe) -> Recipe:
    """Adds a recipe to the registry; a name can be registered once."""
    if recipe.name in _REGISTRY:
        raise RecipeError(f"Recipe {recipe.name!r} is already registered.")
    _REGISTRY[recipe.name] = recipe
    return recipe


def names() -> list[str]:
    """Registered recipe names, in registration order (the order of a default study)."""
    return list(_REGISTRY)


def get(name: str) -> Recipe:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise RecipeError(f"Unknown recipe {name!r}; choose one of: {', '.join(_REGISTRY)}.") from None


def parse_recipes(spec: str | list[str] | None) -> list[str]:
    """Parses a comma list of recipe names ('' or None: every registered recipe).

    Duplicates are dropped, keeping the first. Raises RecipeError naming an
    unknown name and listing the valid ones.
    """
    if spec is None:
        return names()
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    items = [s.strip() for s in items if s.strip()]
    if not items:
        return names()
    for item in items:
        get(item)
    return list(dict.fromkeys(items))


def _post_training(mode: Quantization) -> Callable[[keras.Model, RecipeContext], Compressed]:
    def apply(model: keras.Model, context: RecipeContext) -> Compressed:
        calibration = context.calibration_data if mode.needs_calibration else None
        return Compressed(convert(model, mode, calibration))

    return apply


BASELINE = "fp32"

for _mode, _description in [
    (Quantization.FP32, "plain conversion, float32 (the baseline)"),
    (Quantization.DYNAMIC_RANGE, "post-training dynamic range: int8 weights, float activations"),
    (Quantization.FLOAT16, "post-training float16 weights"),
    (Quantization.INT8, "post-training full integer: int8 weights, activations, input and output"),
    (Quantization.INT16X8, "post-training 16-bit activations with 8-bit weights"),
]:
    register(Recipe(_mode.value, _description, _post_training(_mode)))
