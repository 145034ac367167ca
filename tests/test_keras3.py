"""Keras 3 models as users save them: .keras, .h5 and exported SavedModels through the study.

The models are written by tfcompress/study/make_keras3.py in a child process without TF_USE_LEGACY_KERAS
(this process has it set), exactly as a user's notebook would write them.
"""

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tfcompress import loading
from tfcompress.study import from_flat, run
from tfcompress.study.bench_keras3 import make_keras3
from tfcompress.study.results import Status


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    out = tmp_path_factory.mktemp("keras3")
    return out, make_keras3(str(out), "small")


def _study(tmp_path, model, recipes, **kwargs):
    lines = []
    config = from_flat(model=str(model), dataset="digits", recipes=recipes, num_runs=3, rounds=1,
                       min_time_s=0.0, warmup_runs=1, finetune_epochs=1, isolate=False,
                       output_dir=str(tmp_path / "out"), **kwargs)  # fmt: skip
    return run(config, progress=lines.append), lines


def test_the_saved_files_are_told_apart_by_what_wrote_them(saved, tiny_cnn, tmp_path):
    out, _ = saved
    for name in ("functional.keras", "functional.h5", "sequential.keras", "sequential.h5"):
        assert loading.flavour(loading.load_model(str(out / name))) == "keras3", name
    exported = loading.load_model(str(out / "functional_export"))
    assert loading.flavour(exported) == "saved_model"
    assert exported.inputs[0].shape[1:] == (8, 8, 1) and exported.outputs[0].shape[-1] == 10
    tiny_cnn.save(tmp_path / "legacy.keras")
    assert loading.flavour(loading.load_model(str(tmp_path / "legacy.keras"))) == "tf_keras"


@pytest.mark.parametrize("name", ["functional.keras", "sequential.h5"])
def test_keras3_files_go_through_post_training_and_training_time_recipes(saved, tmp_path, name):
    out, _ = saved
    results, lines = _study(tmp_path, out / name, ("fp32", "int8", "prune", "qat"))
    rows = {r.recipe: r for r in results.rows}
    assert any("tf_keras twin" in line and "matches" in line for line in lines)
    for recipe in ("fp32", "int8", "prune"):
        assert rows[recipe].status is Status.OK, (recipe, rows[recipe].error)
    assert rows["int8"].size_bytes < 0.7 * rows["fp32"].size_bytes  # small models: the graph is much of the file
    assert rows["prune"].extras["sparsity"] > 0.5  # TFMOT pruned the twin; the .tflite holds the zeros
    if name == "functional.keras":  # BatchNormalization follows a bias-free Conv2D: TFMOT folds it
        assert rows["qat"].status is Status.OK, rows["qat"].error
    else:  # the Sequential model's BatchNormalization follows a ReLU conv: TFMOT refuses it, by name
        assert rows["qat"].status is Status.NOT_APPLICABLE and "bn1" in rows["qat"].error


def test_an_exported_savedmodel_runs_post_training_recipes_only(saved, tmp_path):
    out, _ = saved
    results, lines = _study(tmp_path, out / "functional_export", ("fp32", "dynamic_range", "prune"))
    rows = {r.recipe: r for r in results.rows}
    assert rows["fp32"].ok and rows["dynamic_range"].ok
    assert rows["prune"].status is Status.NOT_APPLICABLE and "without its layers" in rows["prune"].error
    # The same model from its .keras file gives the same fp32 outputs, hence the same accuracy.
    again, _ = _study(tmp_path / "k", out / "functional.keras", ("fp32",))
    assert again.rows[0].metric == rows["fp32"].metric


def test_a_twin_that_does_not_match_makes_training_rows_not_applicable_naming_the_layer(saved, tmp_path, monkeypatch):
    from tfcompress import twin as twin_lib

    build = twin_lib.build_twin

    def broken(model):
        copy = build(model)
        layer = copy.get_layer("pw_conv")
        layer.set_weights([w + 1.0 for w in layer.get_weights()])
        return copy

    monkeypatch.setattr(twin_lib, "build_twin", broken)
    out, _ = saved
    results, lines = _study(tmp_path, out / "functional.keras", ("fp32", "prune"))
    fp32, prune = results.rows
    assert fp32.ok  # post-training rows do not need the twin
    assert prune.status is Status.NOT_APPLICABLE and "pw_conv" in prune.error
    assert any("no tf_keras twin" in line and "pw_conv" in line for line in lines)


def test_a_rescaling_model_on_uint8_data_scores_what_keras_scores(saved, tmp_path):
    out, made = saved
    info = made["rescaling"]
    results, lines = _study(tmp_path, out / info["model"], ("fp32",), data=str(out / info["data"]))
    fp32 = results.rows[0]
    assert fp32.metric == pytest.approx(info["keras_accuracy"], abs=1e-6)  # evaluate() in the child, unscaled pixels
    assert fp32.extras["keras_metric"] == pytest.approx(info["keras_accuracy"], abs=1e-6)
    assert "as stored" in results.config["preprocessing"] and "Rescaling" in results.config["preprocessing"]
    assert not any("chance level" in line for line in lines)
    # Scaled by 1/255 anyway, the model sees near-black images: the study says so and names the way out.
    results, lines = _study(tmp_path / "scaled", out / info["model"], ("fp32",), data=str(out / info["data"]),
                            input_scale="1/255,0")  # fmt: skip
    assert results.rows[0].metric < 0.3
    assert any("chance level" in line and "--input_scale" in line for line in lines)


def test_input_scale_is_checked_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="input_scale='half'"):
        from_flat(input_scale="half", output_dir=str(tmp_path / "o")).setup(None)


def test_an_in_memory_keras3_model_goes_through_run_study_in_child_processes(saved, tmp_path):
    import keras  # Keras 3, although this process runs TensorFlow with tf_keras

    out, _ = saved
    model = keras.saving.load_model(str(out / "functional.keras"))
    config = from_flat(dataset="digits", recipes=("fp32", "prune"), num_runs=3, rounds=1, min_time_s=0.0, warmup_runs=1,
                       finetune_epochs=1, output_dir=str(tmp_path / "out"))  # fmt: skip
    results = run(config, model=model)
    fp32, prune = results.rows
    assert [fp32.status, prune.status] == [Status.OK, Status.OK], [r.error for r in results.rows]
    assert fp32.model == "functional_cnn"  # the object's own name, kept through the children's copy
    assert fp32.extras["keras_metric"] == pytest.approx(fp32.metric, abs=0.01)  # conversion kept the model
    assert prune.extras["sparsity"] > 0.5  # the child pruned the twin of the model it was given


def test_a_lambda_layer_in_a_keras3_file_is_refused_in_safe_mode(tmp_path):
    code = (
        "import keras\n"
        + "m = keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda x: x * 2), keras.layers.Dense(2)])\n"
        + f"m.save({str(tmp_path / 'lambda.keras')!r})\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, timeout=120)
    with pytest.raises(loading.ModelError, match="Lambda layer.*--allow_unsafe_deserialization"):
        loading.load_model(str(tmp_path / "lambda.keras"))


def test_a_custom_layer_from_a_plugin_loads_and_with_its_twin_trains(tmp_path):
    made = make_keras3(str(tmp_path), "custom", os.path.join(ROOT, "tests", "plugin_layers.py"))
    model = tmp_path / made["model"]
    with pytest.raises(loading.ModelError, match="custom class .Gain.*--plugins"):  # not registered: a clear refusal
        loading.load_model(str(model))
    results, lines = _study(tmp_path, model, ("fp32", "prune"), plugins=("tests.plugin_layers",))
    assert [r.status for r in results.rows] == [Status.OK, Status.OK], [r.error for r in results.rows]
    assert any("tf_keras twin" in line and "matches" in line for line in lines)
