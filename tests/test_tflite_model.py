"""An fp32 .tflite file as the model: the fp32 row is the file itself; converter and training rows not_applicable."""

import hashlib
import json

import numpy as np
import pytest

from tests.conftest import study_cli
from tfcompress import loading
from tfcompress.measure.evaluate import accuracy, run_tflite, top1
from tfcompress.recipes.base import NotApplicable
from tfcompress.recipes.converter import Quantization, convert
from tfcompress.study import from_flat, run
from tfcompress.study.results import Status

QUANTIZE = ("q_int8", "q_dynamic_int8", "q_int4_block32")  # the LiteRT Quantizer starts from the file itself
RECIPES = ("fp32", "dynamic_range", "int8", "prune", *QUANTIZE)


@pytest.fixture(scope="module")
def user_tflite(tmp_path_factory, tiny_cnn):
    """The trained tiny CNN as a user's fp32 .tflite file (its own converter run, not the study's)."""
    path = tmp_path_factory.mktemp("user") / "digits_cnn.tflite"
    path.write_bytes(convert(tiny_cnn, Quantization.FP32))
    return path


def _study(tmp_path, recipes, obj=None, **kwargs):
    lines = []
    config = from_flat(dataset="digits", recipes=recipes, num_runs=3, rounds=1, min_time_s=0.0, warmup_runs=1,
                       output_dir=str(tmp_path / "out"), **kwargs)  # fmt: skip
    return run(config, progress=lines.append, model=obj), lines


def _check_rows(results, user_tflite, tmp_path, digits, tiny_cnn):
    """What every study of the user's file shows, in-process or isolated."""
    rows = {r.recipe: r for r in results.rows}
    fp32 = rows["fp32"]
    assert fp32.status is Status.OK, fp32.error
    assert fp32.model == "digits_cnn"  # named after the file, without .tflite
    assert (tmp_path / "out" / fp32.tflite_path).read_bytes() == user_tflite.read_bytes()  # the file itself
    assert fp32.metric == accuracy(top1(run_tflite(str(user_tflite), digits.x_test)), digits.y_test)
    assert fp32.agreement == 1.0
    assert fp32.params == tiny_cnn.count_params()  # trained biases are non-zero and distinct: none folded away
    assert "keras_metric" not in fp32.extras  # no Keras model to run beside the file
    for recipe in {"dynamic_range", "int8"} & set(rows):
        assert rows[recipe].status is Status.NOT_APPLICABLE
        assert "converts a Keras model" in rows[recipe].error and ".tflite file (digits_cnn)" in rows[recipe].error
    if "int8" in rows:
        assert "use quantize:weights=8:activations=8 (the LiteRT Quantizer) instead" in rows["int8"].error
    for recipe in set(QUANTIZE) & set(rows):
        row = rows[recipe]
        assert row.status is Status.OK, (recipe, row.error)
        assert row.size_bytes < 0.5 * fp32.size_bytes and row.metric > fp32.metric - 0.03, recipe
        assert row.extras["layer_errors"] and row.extras["quantized_ops"], recipe
    prune = rows["prune"]
    assert prune.status is Status.NOT_APPLICABLE
    assert "prune trains the model" in prune.error and "give the Keras model it came from" in prune.error


def test_the_file_is_an_fp32_model_with_keras_like_specs(user_tflite, tiny_cnn, digits):
    model = loading.load_model(str(user_tflite))
    assert isinstance(model, loading.TFLiteModel) and loading.flavour(model) == "tflite"
    assert model.name == "digits_cnn" and model.content == user_tflite.read_bytes()
    # The file's shape signature: a free batch axis is None, as in the Keras model.
    assert [s.shape for s in model.inputs] == [tuple(tiny_cnn.inputs[0].shape)] == [(None, 8, 8, 1)]
    assert [s.shape for s in model.outputs] == [(None, 10)]
    assert model.inputs[0].dtype.name == "float32"
    assert model.count_params() == tiny_cnn.count_params() == 4218
    np.testing.assert_array_equal(model(digits.x_test[:7]).numpy(), run_tflite(model.content, digits.x_test[:7]))
    assert convert(model, Quantization.FP32) == model.content
    with pytest.raises(NotApplicable, match="float16 converts a Keras model"):
        convert(model, Quantization.FLOAT16)
    with pytest.raises(NotApplicable, match="sparse export converts a Keras model"):
        convert(model, Quantization.FP32, sparse=True)


def test_integer_token_inputs_are_float_models(tmp_path):
    """An int32 input (token ids, as a language model takes) is not a quantized one."""
    from tfcompress._keras import keras

    tokens = keras.Input((6,), dtype="int32")
    x = keras.layers.Flatten()(keras.layers.Embedding(12, 4)(tokens))
    path = tmp_path / "tokens.tflite"
    path.write_bytes(convert(keras.Model(tokens, keras.layers.Dense(12)(x)), Quantization.FP32))
    model = loading.load_model(str(path))
    assert model.inputs[0].dtype.name == "int32" and model.inputs[0].shape[1] == 6
    assert model.count_params() == 12 * 4 + 24 * 12  # the untrained Dense's all-zero bias is left out of the file


def test_a_study_of_the_file_runs_fp32_only(tmp_path, user_tflite, digits, tiny_cnn):
    results, lines = _study(tmp_path, RECIPES, model=str(user_tflite), isolate=False)
    _check_rows(results, user_tflite, tmp_path, digits, tiny_cnn)
    assert any("loaded from" in line and "(an fp32 .tflite file)" in line for line in lines), lines
    assert any("a .tflite file: fp32 and quantize recipes run" in line for line in lines), lines
    assert not any("could not be computed" in line for line in lines), lines
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Worst tensors of the LiteRT Quantizer's rows" in report and "`q_int4_block32`:" in report
    with open(tmp_path / "out" / "results.json") as f:
        saved = {r["recipe"]: r for r in json.load(f)["rows"]}
    worst = saved["q_int4_block32"]["layer_errors"][0]
    assert worst["snr_db"] == min(e["snr_db"] for e in saved["q_int4_block32"]["layer_errors"] if e["snr_db"])
    assert saved["q_int4_block32"]["quantized_ops"]["FULLY_CONNECTED"] == "int4 block32"
    assert "layer_errors" not in (tmp_path / "out" / "results.csv").read_text().splitlines()[0]


def test_isolated_children_load_the_file_given_as_an_object(tmp_path, user_tflite, digits, tiny_cnn):
    model = loading.TFLiteModel(str(user_tflite))
    results, _ = _study(tmp_path, ("fp32", "prune"), isolate=True, obj=model)  # a process per row
    _check_rows(results, user_tflite, tmp_path, digits, tiny_cnn)
    assert results.config["basis_key"]  # the object is digested by its bytes
    from tfcompress.study.job import model_digest

    assert model_digest(model) == hashlib.sha256(user_tflite.read_bytes()).hexdigest()


def test_the_script_takes_the_file_with_the_users_npz(capsys, tmp_path, user_tflite, digits):
    data = tmp_path / "mine.npz"
    np.savez(data, x_train=np.round(digits.x_train[..., 0] * 255).astype(np.uint8), y_train=digits.y_train,
             x_test=np.round(digits.x_test[..., 0] * 255).astype(np.uint8), y_test=digits.y_test)  # fmt: skip
    code, out, err = study_cli(capsys, f"--model={user_tflite}", f"--data={data}", "--recipes=fp32,int8",
                               "--num_runs=2", "--rounds=1", "--min_time_s=0", "--noisolate",
                               f"--output_dir={tmp_path}/out")  # fmt: skip
    assert code == 0, err
    with open(tmp_path / "out" / "results.json") as f:
        rows = {r["recipe"]: r for r in json.load(f)["rows"]}
    assert rows["fp32"]["status"] == "ok" and rows["fp32"]["metric"] > 0.9  # uint8 pixels scaled by 1/255
    assert rows["int8"]["status"] == "not_applicable"
    assert "Model digits_cnn: loaded from" in out
