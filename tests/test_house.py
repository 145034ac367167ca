"""The package's shape: parameters owned by recipes and tasks, per-row resume keys, content-keyed caches, plugins.

These check the promises of the restructured package (one definition per parameter, generic code that names
no recipe, resume and caching by what decides a result).
"""

import dataclasses
import json

import numpy as np
import pytest

import tfcompress as tfc
from tfcompress import recipes
from tfcompress.study import StudyConfig, from_flat, run
from tfcompress.study import job as job_lib


def _flags(*args):
    """Parses the study script's flags (generated from the registries) and returns the StudyConfig they give."""
    from absl import flags

    import experiments.study  # noqa: F401  (defines the flags)
    from tfcompress.study import cli

    flags.FLAGS.unparse_flags()
    flags.FLAGS(["study", *args])
    try:
        return cli.config_from_flags(flags.FLAGS)
    finally:
        flags.FLAGS.unparse_flags()


def _stage_params(config, name):
    pipeline = next(p for p in config.pipelines() if p.name == name)
    return dataclasses.asdict(pipeline.transforms[0].params)


def test_study_config_holds_what_decides_a_study_as_a_whole():
    assert len(dataclasses.fields(StudyConfig)) <= 15


def test_recipe_flags_reach_their_recipes(tmp_path):
    config = _flags("--sparsity=0.9", "--clusters=8", "--keep_fraction=0.25", "--temperature=2", "--lora_rank=4",
                    "--recipes=prune,cluster,channel_prune,distill,lora", f"--output_dir={tmp_path}")  # fmt: skip
    assert _stage_params(config, "prune")["sparsity"] == 0.9
    assert _stage_params(config, "cluster")["clusters"] == 8
    assert _stage_params(config, "channel_prune")["keep_fraction"] == 0.25
    distill = _stage_params(config, "distill")
    assert distill["keep_fraction"] == 0.25 and distill["temperature"] == 2.0
    assert _stage_params(config, "lora")["rank"] == 4
    # The flags keep the defaults the README documents.
    default = _flags(f"--output_dir={tmp_path}", "--recipes=prune,distill")
    assert _stage_params(default, "prune")["sparsity"] == 0.8 and _stage_params(default, "distill")["temperature"] == 4
    assert default.recipe_defaults == {}


def test_every_parameter_of_every_recipe_is_a_flag():
    from absl import flags

    import experiments.study  # noqa: F401

    for recipe in recipes.base.recipes():
        if recipe.params is None or not recipe.params.__module__.startswith("tfcompress."):
            continue  # a test plugin registered after the script declared its flags (same worker process)
        for field in dataclasses.fields(recipe.params):
            flag = flags.FLAGS[recipes.base.flag_name(field)]
            assert flag.default == field.default, (recipe.name, field.name)


def test_a_flag_out_of_its_declared_bounds_is_refused_before_any_work(capsys):
    from tests.conftest import study_cli

    code, _, err = study_cli(capsys, "--sparsity=1.5")
    assert code == 1 and "sparsity" in err


def test_a_row_key_changes_with_its_own_parameters_only(tmp_path):
    basis = {"task": "classification", "model": {"builtin": "cnn"}}
    one = from_flat(recipes=("prune", "distill"), output_dir=str(tmp_path))
    two = from_flat(recipes=("prune", "distill"), temperature=2.0, output_dir=str(tmp_path))
    keys = [{p.name: job_lib.row_key(basis, p) for p in c.pipelines()} for c in (one, two)]
    assert keys[0]["prune"] == keys[1]["prune"] and keys[0]["fp32"] == keys[1]["fp32"]
    assert keys[0]["distill"] != keys[1]["distill"]


def _small_npz(path, seed=0):
    digits = tfc.load_digits(seed=0)
    x_train = digits.x_train[:300].copy()
    if seed:
        x_train = np.random.default_rng(seed).permutation(x_train)  # same shapes, other content
    np.savez(path, x_train=x_train, y_train=digits.y_train[:300], x_test=digits.x_test[:100],
             y_test=digits.y_test[:100])  # fmt: skip
    return str(path)


def _quick(tmp_path, **kwargs):
    defaults = dict(model="cnn", epochs=1, recipes=("fp32", "dynamic_range"), num_runs=3, rounds=1,
                    min_time_s=0.0, warmup_runs=1, isolate=False, output_dir=str(tmp_path / "out"))  # fmt: skip
    return from_flat(**(defaults | kwargs))


def test_resume_after_changing_an_option_no_remaining_row_uses_keeps_the_rows(tmp_path):
    data = _small_npz(tmp_path / "data.npz")
    run(_quick(tmp_path, data=data))
    lines = []
    resumed = run(_quick(tmp_path, data=data, temperature=2.0, resume=True), progress=lines.append)
    assert [r.recipe for r in resumed.rows] == ["fp32", "dynamic_range"]
    assert sum("[kept from the earlier run]" in line for line in lines) == 2


def test_editing_the_data_file_in_place_retrains_the_cached_model(tmp_path):
    data = _small_npz(tmp_path / "data.npz")
    lines = []
    run(_quick(tmp_path, data=data, recipes=("fp32",)), progress=lines.append)
    assert any("Model cnn: trained" in line for line in lines)
    lines.clear()
    run(_quick(tmp_path, data=data, recipes=("fp32",)), progress=lines.append)
    assert any("Model cnn: loaded from the cache" in line for line in lines)
    _small_npz(tmp_path / "data.npz", seed=1)  # the same name, other bytes
    lines.clear()
    run(_quick(tmp_path, data=data, recipes=("fp32",)), progress=lines.append)
    assert any("Model cnn: trained" in line for line in lines), lines
    assert len(list((tmp_path / "out" / "models").glob("cnn-*.keras"))) == 2


def test_resume_refuses_results_whose_data_file_changed(tmp_path):
    data = _small_npz(tmp_path / "data.npz")
    run(_quick(tmp_path, data=data, recipes=("fp32",)))
    _small_npz(tmp_path / "data.npz", seed=1)
    with pytest.raises(tfc.StudyError, match="another configuration"):
        run(_quick(tmp_path, data=data, recipes=("fp32",), resume=True))


def test_a_plugin_recipe_gets_its_column_in_every_output(tmp_path):
    config = _quick(tmp_path, dataset="digits", recipes=("fp32", "tagged_for_test:4"),
                    plugins=("tests.plugin_recipes",), finetune_epochs=1)  # fmt: skip
    results = run(config)
    tagged = results.rows[1]
    assert tagged.ok, tagged.error
    assert tagged.extras["tag_value"] == pytest.approx(1.0)
    out = tmp_path / "out"
    report = (out / "report.md").read_text()
    assert "plugin tag" in report and "1.000" in report and "plugin tag: what the plugin recipe reported." in report
    csv_header = (out / "results.csv").read_text().splitlines()[0].split(",")
    assert "tag_value" in csv_header
    saved = json.loads((out / "results.json").read_text())
    assert saved["rows"][1]["tag_value"] == pytest.approx(1.0)
    assert {"key": "tag_value", "header": "plugin tag"}.items() <= next(
        c for c in saved["columns"] if c["key"] == "tag_value"
    ).items()
    # The report renders from the file alone, the plugin's column included.
    assert "plugin tag" in tfc.format_table(tfc.load_results(str(out / "results.json")))


def test_the_python_api_takes_a_model_and_a_dataset_as_objects_even_in_child_processes(tmp_path, tiny_cnn, digits):
    config = from_flat(recipes=("fp32", "int8"), num_runs=3, rounds=1, min_time_s=0.0, warmup_runs=1, isolate=True,
                       output_dir=str(tmp_path / "out"))  # fmt: skip
    results = tfc.run_study(config, model=tiny_cnn, dataset=digits)
    fp32, int8 = results.rows
    assert fp32.ok and int8.ok, (fp32.error, int8.error)
    assert fp32.model == tiny_cnn.name and fp32.metric > 0.8
    assert abs(int8.metric - fp32.metric) < 0.05 and int8.size_bytes < 0.55 * fp32.size_bytes


def test_a_plugin_recipes_parameter_gets_a_flag_like_a_built_in_one():
    from absl import flags

    from tfcompress.study import cli

    cli.import_plugins_from_argv(["study", "--plugins=tests.plugin_recipes"])  # what experiments/study.py does first
    flag_values = flags.FlagValues()
    cli.define_flags(flag_values)
    flag_values(["study", "--tag_scale=3"])
    assert flag_values["tag_scale"].help == "tagged_for_test: the factor its column reports."
    config = cli.config_from_flags(flag_values, recipes=("tagged_for_test",), plugins=("tests.plugin_recipes",))
    assert config.recipe_defaults == {"tagged_for_test": {"tag_scale": 3.0}}


class _Reversed(tfc.Executor):
    """An executor that finishes jobs in reverse order, as a concurrent one may; it never writes results."""

    def __init__(self, inner):
        self.inner = inner
        self.seen = []

    def run(self, jobs, reference, started=None):
        outcomes = list(self.inner.run(jobs, reference, started))
        self.seen += [o.job.pipeline.name for o in outcomes]
        yield from reversed(outcomes)


def test_a_custom_executor_plugs_into_the_loop_which_keeps_study_order_and_writes_results(tmp_path, tiny_cnn, digits):
    from tfcompress.study import InProcessExecutor

    config = from_flat(recipes=("fp32", "dynamic_range", "float16", "int8"), num_runs=3, rounds=1, min_time_s=0.0,
                       warmup_runs=1, isolate=False, output_dir=str(tmp_path / "out"))  # fmt: skip
    prepared = job_lib.prepare(config, lambda _: None, 0, tiny_cnn, digits)
    executor = _Reversed(InProcessExecutor(config, prepared))
    results = tfc.run_study(config, model=tiny_cnn, dataset=digits, executor=executor)
    assert executor.seen == ["fp32", "dynamic_range", "float16", "int8"]  # fp32 first, then the rest
    assert [r.recipe for r in results.rows] == ["fp32", "dynamic_range", "float16", "int8"]
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [r["recipe"] for r in saved["rows"]] == ["fp32", "dynamic_range", "float16", "int8"]
    assert all(r.agreement is not None for r in results.rows)
