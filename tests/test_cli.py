"""The command line as a user runs it: python -m experiments.study / experiments.report."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT, run_module


@pytest.mark.slow
def test_study_end_to_end_on_a_tiny_configuration(tmp_path):
    out = tmp_path / "out dir"  # a space in the path on purpose
    proc = run_module(
        "experiments.study",
        "--dataset=digits",
        "--epochs=2",
        "--recipes=fp32,float16",
        "--num_runs=5",
        "--rounds=1",
        "--min_time_s=0",
        "--warmup_runs=1",
        f"--output_dir={out}",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| recipe" in proc.stdout and "| float16" in proc.stdout
    # A quiet console: none of TensorFlow's or LiteRT's start-up notices on a CPU machine.
    for notice in ("cuInit", "cuda drivers", "oneDNN", "absl::InitializeLog", "XNNPACK delegate", "fully_quantize"):
        assert notice not in proc.stderr + proc.stdout, notice
    saved = json.loads((out / "results.json").read_text())
    assert [r["recipe"] for r in saved["rows"]] == ["fp32", "float16"]
    assert all(r["status"] == "ok" for r in saved["rows"])
    assert (out / "cnn" / "float16.tflite").is_file()

    rendered = run_module("experiments.report", f"--results={out / 'results.json'}", "--format=latex")
    assert rendered.returncode == 0, rendered.stderr[-2000:]
    assert "\\begin{tabular}" in rendered.stdout and "float16" in rendered.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--recipes=fp32,int4"], "Unknown recipe 'int4'; choose one of: fp32, dynamic_range, float16, int8, int16x8"),
        (["--model=/no/such/model.keras"], "Model path '/no/such/model.keras' does not exist"),
        (["--threads=0"], "--threads must be a comma list of positive integers"),
    ],
)
def test_bad_input_is_a_one_line_error_with_no_results_file(tmp_path, args, message):
    proc = run_module("experiments.study", *args, "--dataset=digits", f"--output_dir={tmp_path / 'out'}")
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out" / "results.json").exists()


def test_flagfile_and_helpfull_work(tmp_path):
    flagfile = tmp_path / "flags.txt"
    flagfile.write_text("--recipes=fp32,int4\n--dataset=digits\n")
    proc = run_module("experiments.study", f"--flagfile={flagfile}", f"--output_dir={tmp_path / 'o'}")
    assert proc.returncode == 2 and "Unknown recipe 'int4'" in proc.stderr
    helpfull = run_module("experiments.study", "--helpfull")
    assert "--calibration_samples" in helpfull.stdout and "--warmup_runs" in helpfull.stdout


# What experiments.study defines, from a fresh process (no test's plugin recipe or task registered).
_DUMP_FLAGS = (
    "import json; from absl import flags; from tfcompress.study import cli; f = flags.FlagValues(); "
    + "cli.define_flags(f); print(json.dumps({n: [f[n].help, f[n].default] for n in f}))"
)


def _plain(cell: str) -> str:
    """A README table cell as plain text: no code marks, pipes unescaped, one space between words."""
    return " ".join(cell.replace("`", "").replace("\\|", "|").split())


def _readme_flags() -> dict[str, tuple[str, str]]:
    """README's flag table: flag name -> (default cell, meaning cell), as plain text."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        section = f.read().split("\n## Flags", 1)[1].split("\n## ", 1)[0]
    table = {}
    for line in section.splitlines():
        if line.startswith("| `--"):
            flag, default, meaning = (c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1])
            name = re.fullmatch(r"`--(\w+)`", flag).group(1)
            assert name not in table, f"--{name} has two rows"
            table[name] = (_plain(default), _plain(meaning))
    return table


def _default_agrees(value, cell: str) -> bool:
    """Whether README's default cell starts with the flag's default (a None or empty default is told in words)."""
    if isinstance(value, bool):
        return cell == ("on" if value else "off")
    if isinstance(value, (int, float)):
        return float(cell.split()[0]) == value
    if value and isinstance(value, list):
        return cell == ",".join(value)
    return not value or cell.split()[0] == value


def test_readme_flag_table_has_every_flag_with_its_help_and_default():
    proc = subprocess.run([sys.executable, "-c", _DUMP_FLAGS], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    code = json.loads(proc.stdout.strip().splitlines()[-1])
    readme = _readme_flags()
    assert not set(code) - set(readme), f"flags missing from README's table: {sorted(set(code) - set(readme))}"
    assert not set(readme) - set(code), f"README's table has flags the code lacks: {sorted(set(readme) - set(code))}"
    for name, (help_text, value) in code.items():
        default, meaning = readme[name]
        assert meaning == _plain(help_text), f"--{name}"
        assert _default_agrees(value, default), (f"--{name}", value, default)


def test_report_of_a_missing_results_file_is_a_clear_error(tmp_path):
    proc = run_module("experiments.report", f"--results={tmp_path / 'none.json'}")
    assert proc.returncode == 2 and "does not exist" in proc.stderr


def test_users_functional_keras_model_and_npz_go_through_all_five_recipes(tmp_path, digits):
    """Acceptance: a standard Functional architecture saved as .keras plus a keras-layout .npz."""
    from tfcompress._keras import keras
    from tfcompress.models import train

    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(10)(keras.layers.Dropout(0.1)(x))
    model = keras.Model(inputs, outputs)
    train(model, digits, epochs=1, verbose=0)  # saved with its compile state, as users' models usually are
    model.save(tmp_path / "users model.keras")
    np.savez(
        tmp_path / "data.npz",  # the keras.datasets layout: uint8 pixels, (N, H, W)
        x_train=np.round(digits.x_train[..., 0] * 255).astype(np.uint8),
        y_train=digits.y_train.astype(np.uint8),
        x_test=np.round(digits.x_test[..., 0] * 255).astype(np.uint8),
        y_test=digits.y_test.astype(np.uint8),
    )
    out = tmp_path / "out"
    proc = run_module(
        "experiments.study",
        f"--model={tmp_path / 'users model.keras'}",
        f"--data={tmp_path / 'data.npz'}",
        "--recipes=fp32,dynamic_range,float16,int8,int16x8",
        "--num_runs=3",
        "--rounds=1",
        "--min_time_s=0",
        "--warmup_runs=0",
        "--noisolate",  # tests/test_isolation.py covers recipe processes
        f"--output_dir={out}",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["recipe"] for r in rows] == ["fp32", "dynamic_range", "float16", "int8", "int16x8"]
    assert all(r["status"] == "ok" and r["model"] == "users_model" for r in rows), [r["error"] for r in rows]
    assert all((out / r["tflite_path"]).is_file() for r in rows)
    # The conversion kept the model: the fp32 .tflite scores what the Keras model itself scores (one example's slack).
    fp32 = rows[0]
    assert fp32["metric"] == pytest.approx(fp32["keras_metric"], abs=1 / len(digits.y_test) + 1e-9)


def test_sparsity_sweep_end_to_end(tmp_path):
    out = tmp_path / "sweep"
    proc = run_module(
        "experiments.sparsity_sweep",
        "--sparsities=0.5,0.8",
        "--recipes=prune,prune_int8",
        "--dataset=digits",
        "--epochs=2",
        "--finetune_epochs=1",
        "--num_runs=3",
        "--rounds=1",
        "--min_time_s=0",
        "--noisolate",
        f"--output_dir={out}",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    points = json.loads((out / "sweep.json").read_text())["points"]
    assert [(p["target"], p["recipe"]) for p in points] == [
        (0.5, "prune"), (0.5, "prune_int8"), (0.8, "prune"), (0.8, "prune_int8")
    ]  # fmt: skip
    for p in points:
        assert p["status"] == "ok" and abs(p["sparsity"] - p["target"]) <= 0.01
    by_target = {p["target"]: p for p in points if p["recipe"] == "prune"}
    assert by_target[0.8]["gzip_bytes"] < by_target[0.5]["gzip_bytes"]  # more zeros compress better
    assert (out / "sweep.png").stat().st_size > 0 and "| 0.8" in (out / "sweep.md").read_text()
    assert len(list((out / "models").glob("*.keras"))) == 1  # the model was trained once for the whole sweep


def test_sweep_rejects_a_bad_sparsity(tmp_path):
    proc = run_module("experiments.sparsity_sweep", "--sparsities=0.5,1.5", f"--output_dir={tmp_path}")
    assert proc.returncode != 0 and "--sparsities must be numbers in [0, 1)" in proc.stderr
