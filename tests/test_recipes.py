"""Recipe specs: names, parameters, pipelines and aliases parse into the stages they promise."""

import pytest

from tfcompress import recipes
from tfcompress import recipes as catalog  # noqa: F401  (catalog registers every recipe)
from tfcompress.recipes.base import RecipeError


def _stages(spec, defaults=None):
    return [s.to_dict() for s in recipes.parse(spec, recipes.spread(defaults or {})).stages]


def test_a_bare_value_sets_the_main_parameter_and_the_default_export_follows():
    stages = _stages("prune:0.9")
    assert [s["recipe"] for s in stages] == ["prune", "fp32"]
    assert stages[0]["params"]["sparsity"] == 0.9


def test_study_defaults_fill_what_the_spec_leaves_out_and_the_spec_wins():
    defaults = {"sparsity": 0.5, "finetune_epochs": 7, "clusters": 4}
    assert _stages("prune", defaults)[0]["params"] | {} == {
        "sparsity": 0.5, "pruning_schedule": "polynomial", "finetune_epochs": 7, "finetune_learning_rate": 5e-4,
        "allocation": "uniform",
    }  # fmt: skip
    assert _stages("prune:sparsity=0.75:pruning_schedule=constant", defaults)[0]["params"]["sparsity"] == 0.75


def test_pipelines_chain_stages_in_order():
    assert [s["recipe"] for s in _stages("prune:0.8>cluster:8>int8")] == ["prune", "cluster", "int8"]
    assert _stages("prune:0.8>cluster:8>int8")[1]["params"]["clusters"] == 8


def test_aliases_are_pipelines_of_the_same_mechanism():
    assert [s["recipe"] for s in _stages("prune_int8")] == ["prune", "int8"]
    assert [s["recipe"] for s in _stages("qat")] == ["qat", "int8"]  # qat's default export is int8
    pcqat = _stages("pcqat")
    assert [s["recipe"] for s in pcqat] == ["prune", "cluster", "qat", "int8"]
    assert pcqat[1]["params"]["preserve_sparsity"] is True and pcqat[2]["params"]["preserve"] == "all"
    assert recipes.parse("pcqat").name == "pcqat"


@pytest.mark.parametrize(
    "spec, message",
    [
        ("prune:1.5", r"prune:1.5: sparsity must be in \[0, 1\), got 1.5"),
        ("cluster:0", "clusters must be >= 2, got 0"),
        ("prune:finetune_epochs=0", "finetune_epochs must be >= 1, got 0"),
        ("prune:speed=3", "Recipe 'prune' has no parameter 'speed'; its parameters are: finetune_epochs"),
        ("prune:abc", "prune:sparsity: 'abc' is not a float"),
        ("int8:3", "Recipe 'int8' takes no parameters"),
        ("int8>prune", "the export 'int8' must be the last stage"),
        ("prun", "Unknown recipe 'prun'; choose one of: fp32"),
        ("qat:preserve=weights", "preserve must be one of none, sparsity, clusters, all"),
    ],
)
def test_malformed_specs_name_the_value_and_the_way_out(spec, message):
    with pytest.raises(RecipeError, match=message):
        recipes.parse(spec)


def test_default_list_is_every_recipe_in_catalogue_order():
    names = [p.name for p in recipes.parse_recipes("")]
    assert names[:5] == ["fp32", "dynamic_range", "float16", "int8", "int16x8"]
    for name in ("prune", "prune_2of4", "prune_xnnpack", "cluster", "qat", "prune_int8", "cluster_int8", "pqat",
                 "cqat", "pcqat"):  # fmt: skip
        assert name in names


def test_file_names_of_specs_stay_plain():
    assert recipes.parse("prune:0.8>int8").file_stem == "prune_0.8__int8"
    assert recipes.parse("prune:sparsity=0.5").file_stem == "prune_sparsity-0.5"
