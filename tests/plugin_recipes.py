"""Test-only recipes, loaded with from_flat(plugins=("tests.plugin_recipes",)).

Most misbehave on purpose, so the tests can check that a study survives them; `tagged_for_test` is a
well-behaved plugin transform with a column of its own; `shifted_for_test` makes a classifier clearly worse.
"""

import dataclasses
import os
import time

import numpy as np

from tfcompress import recipes
from tfcompress.recipes.base import Column, Kind, Recipe, Transformed, param


def _abort(model, context, params=None):
    os.abort()  # a native crash, as the converter or interpreter sometimes has


def _hang(model, context, params=None):
    time.sleep(600)


def _raise(model, context, params=None):
    raise RuntimeError("this recipe always fails")


for _name, _apply in [("abort_for_test", _abort), ("hang_for_test", _hang), ("raise_for_test", _raise)]:
    if _name not in recipes.names():
        recipes.register(Recipe(_name, "test only: misbehaves on purpose", Kind.EXPORT, _apply))


@dataclasses.dataclass(frozen=True)
class TagParams:
    """A plugin recipe's own parameter, with its flag declared the same way as a built-in recipe's."""

    tag_scale: float = param(2.0, "tagged_for_test: the factor its column reports.")


def _tag(model, context, params: TagParams):
    """A transform that leaves the model as it is and reports a column of its own."""
    return Transformed(model, {"tag_value": 0.25 * params.tag_scale})


if "tagged_for_test" not in recipes.names():
    recipes.register(
        Recipe(
            "tagged_for_test",
            "test only: a plugin transform with its own column",
            Kind.TRANSFORM,
            _tag,
            TagParams,
            "tag_scale",
            in_default_study=False,
            columns=(Column("tag_value", "plugin tag", ".3f", note="plugin tag: what the plugin recipe reported."),),
        )
    )


def _shift(model, context, params=None):
    """The model with its last layer's outputs moved one class on: it names every digit it knew as the next one."""
    from tfcompress._keras import keras

    shifted = keras.models.clone_model(model)
    shifted.set_weights(model.get_weights())
    kernel, bias = shifted.layers[-1].get_weights()
    shifted.layers[-1].set_weights([np.roll(kernel, 1, axis=-1), np.roll(bias, 1)])
    return Transformed(shifted, {})


if "shifted_for_test" not in recipes.names():
    recipes.register(
        Recipe(
            "shifted_for_test", "test only: a clearly worse classifier", Kind.TRANSFORM, _shift, in_default_study=False
        )
    )
