"""Test-only recipes, loaded with StudyConfig(plugins=("tests.plugin_recipes",)).

They misbehave on purpose, so the tests can check that a study survives them.
"""

import os
import time

from tfcompress import recipes
from tfcompress.recipes import Kind, Recipe


def _abort(model, context, params=None):
    os.abort()  # a native crash, as the converter or interpreter sometimes has


def _hang(model, context, params=None):
    time.sleep(600)


def _raise(model, context, params=None):
    raise RuntimeError("this recipe always fails")


for _name, _apply in [("abort_for_test", _abort), ("hang_for_test", _hang), ("raise_for_test", _raise)]:
    if _name not in recipes.names():
        recipes.register(Recipe(_name, "test only: misbehaves on purpose", Kind.EXPORT, _apply))
