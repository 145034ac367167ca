"""The latency zoo: rows that explain each latency, failures as rows, and the command line end to end."""

import ast
import importlib
import json
import os

import pytest

from tests.conftest import ROOT, run_module
from tfcompress.recipes.converter import Quantization
from tfcompress.study import zoo

# A made-up environment: the peak microbenchmark has its own test.
ENV = {"cpu_features": {"model_name": "test", "note": "no VNNI"}, "peak": {"1": {"peak_gflops": 50.0, "method": "x"}}}


def _tiny_application(name, resolution, classes=1000, seed=0):
    from tfcompress._keras import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((resolution, resolution, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(classes)(x), name=name)


@pytest.fixture(scope="module")
def zoo_rows(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo")
    config = zoo.ZooConfig(zoo_models=("MobileNetV2",), resolution=32, recipes=("fp32", "int8"), num_runs=3,
                           warmup_runs=1, output_dir=str(out), classes=10)  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(zoo, "build_model", _tiny_application)
        lines = []
        rows = zoo.run_zoo(config, progress=lines.append, env=ENV)
    return config, rows, lines


def test_every_row_explains_its_latency(zoo_rows):
    config, rows, lines = zoo_rows
    assert [(r["model"], r["recipe"]) for r in rows] == [("MobileNetV2", "fp32"), ("MobileNetV2", "int8")]
    fp32, int8 = rows
    assert fp32["macs"] == int8["macs"] == fp32["keras_macs"] > 0  # quantization changes no shape
    for r in rows:
        assert r["error"] is None and r["accuracy"] is None
        assert 0 < r["median_ms"] <= r["p90_ms"]
        assert r["gflops"] == pytest.approx(2 * r["macs"] / (r["median_ms"] * 1e-3) / 1e9)
        assert r["roofline_fraction"] == pytest.approx(r["gflops"] / 50.0)
        assert r["latency"]["delegated_ops"] == r["latency"]["total_ops"]  # conv, depthwise, mean, dense
        assert r["size_bytes"] == os.path.getsize(os.path.join(config.output_dir, r["tflite_path"]))
    assert int8["size_bytes"] < fp32["size_bytes"] and int8["quant_params_bytes"] > 0 == fp32["quant_params_bytes"]
    assert any("MobileNetV2 int8" in line for line in lines)


def test_zoo_files_and_table(zoo_rows):
    config, rows, _ = zoo_rows
    paths = zoo.write_zoo(rows, config, ENV, wall_s=1.0)
    assert sorted(os.listdir(config.output_dir)) == ["MobileNetV2", "zoo.csv", "zoo.json", "zoo.md"]
    saved = json.load(open(paths["json"]))
    assert saved["config"]["recipes"] == ["fp32", "int8"] and saved["environment"]["peak"]["1"]["peak_gflops"] == 50
    assert saved["rows"] == json.loads(json.dumps(rows))
    table = zoo.zoo_table(rows)
    assert "not applicable (random weights, no data)" in table and "4/4" in table
    assert open(paths["md"]).read().count("| MobileNetV2 |") == 2


def test_a_failed_conversion_is_a_row_not_a_crash(tmp_path, monkeypatch):
    def refuse(model, mode, calibration=None):
        if Quantization(mode) is Quantization.INT8:
            raise RuntimeError("converter said no")
        return real(model, mode, calibration)

    convert_module = importlib.import_module(
        "tfcompress.recipes.converter"
    )  # the package re-exports convert() by that name
    real = convert_module.convert
    monkeypatch.setattr(zoo, "build_model", _tiny_application)
    monkeypatch.setattr(convert_module, "convert", refuse)
    config = zoo.ZooConfig(zoo_models=("ResNet50",), resolution=32, recipes=("int8", "fp32"), num_runs=1,
                           warmup_runs=0, output_dir=str(tmp_path), classes=4)  # fmt: skip
    int8, fp32 = zoo.run_zoo(config, env=ENV)
    assert "converter said no" in int8["error"] and int8["median_ms"] is None
    assert fp32["error"] is None and fp32["median_ms"] > 0
    assert "converter said no" in zoo.zoo_table([int8, fp32])


def test_int8_size_check_explains_bytes_per_parameter():
    row = {"model": "M", "recipe": "int8", "params": 2_000_000, "size_bytes": 2_200_000, "bytes_per_param": 1.1,
           "buffer_bytes": 2_000_000, "quant_params_bytes": 150_000}  # fmt: skip
    (line,) = zoo.int8_size_check([row, {**row, "recipe": "fp32"}, {**row, "model": "Small", "params": 1000}])
    assert "ABOVE the limit" in line and "scales and zero points 0.075" in line


@pytest.mark.parametrize(
    "kwargs, message",
    [({"zoo_models": ("AlexNet",)}, "Unknown zoo model 'AlexNet'"), ({"recipes": ("int4",)}, "Unknown recipe"),
     ({"resolution": 16}, "resolution must be >= 32"), ({"threads": (0,)}, "threads")],
)  # fmt: skip
def test_bad_config_names_the_bad_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        zoo.ZooConfig(**kwargs)


def test_script_flag_choices_match_the_library():
    # The script spells them out so that a bad flag fails before TensorFlow loads; it cannot be imported
    # here (its flags share names with experiments.study's).
    tree = ast.parse(open(os.path.join(ROOT, "experiments", "latency_zoo.py")).read())
    constants = {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and node.targets[0].id in ("KNOWN_MODELS", "RECIPES")
    }
    assert constants["KNOWN_MODELS"] == list(zoo.KNOWN_MODELS)
    assert constants["RECIPES"] == [q.value for q in Quantization]


@pytest.mark.parametrize("flag", ["--zoo_models=AlexNet", "--recipes=int4", "--resolution=8", "--threads=0"])
def test_bad_flag_is_refused_before_any_work(tmp_path, flag):
    proc = run_module("experiments.latency_zoo", flag, f"--output_dir={tmp_path / 'out'}", timeout=60)
    assert proc.returncode != 0 and "Flags parsing error" in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_command_line_end_to_end_on_a_real_application(tmp_path):
    out = tmp_path / "zoo"
    # One recipe keeps it short (a conversion of MobileNetV3Small takes about 15 s); the in-process tests
    # above cover several recipes.
    args = ["--zoo_models=MobileNetV3Small", "--resolution=32", "--recipes=int8", "--num_runs=2",
            "--warmup_runs=0", "--peak_seconds=0.1", f"--output_dir={out}"]  # fmt: skip
    proc = run_module("experiments.latency_zoo", *args, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "not applicable (random weights, no data)" in proc.stdout and "MobileNetV3Small int8:" in proc.stdout
    saved = json.load(open(out / "zoo.json"))
    (int8,) = saved["rows"]
    assert saved["environment"]["peak"]["1"]["peak_gflops"] > 0 and "cpu_features" in saved["environment"]
    assert int8["macs"] == int8["keras_macs"] > 0 and int8["roofline_fraction"] > 0
    assert int8["bytes_per_param"] < 1.2 and int8["latency"]["init_ms"] > 0
    # XNNPACK has no int8 HARD_SWISH: MobileNetV3's int8 graph is split around every one of them.
    assert int8["latency"]["undelegated"].get("HARD_SWISH", 0) > 0
    assert sorted(os.listdir(out)) == ["MobileNetV3Small", "zoo.csv", "zoo.json", "zoo.md"]
