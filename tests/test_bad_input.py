"""Bad input gets one clear line naming the value and the way out, a non-zero exit, and no partial file.

The script's main runs in this process (see conftest.study_cli), as `python -m experiments.study` would.
"""

import os

import numpy as np
import pytest

from tests.conftest import study_cli


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_cnn, digits, calibration):
    """A user's model in every format, good and damaged, and data files."""
    from tfcompress._keras import keras
    from tfcompress.recipes.converter import Quantization, convert

    root = tmp_path_factory.mktemp("inputs")
    tiny_cnn.save(root / "model.keras")
    tiny_cnn.save(root / "model.h5")
    tiny_cnn.save(root / "saved_model")
    (root / "truncated.keras").write_bytes((root / "model.keras").read_bytes()[:2000])
    (root / "corrupt.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + os.urandom(3000))
    (root / "corrupt_saved_model").mkdir()
    (root / "corrupt_saved_model" / "saved_model.pb").write_bytes(os.urandom(500))
    (root / "model.tflite").write_bytes(b"TFL3" + os.urandom(100))
    (root / "fp32.tflite").write_bytes(convert(tiny_cnn))
    (root / "truncated.tflite").write_bytes((root / "fp32.tflite").read_bytes()[:1000])
    for mode in (Quantization.INT8, Quantization.DYNAMIC_RANGE, Quantization.FLOAT16):  # not fp32: refused
        (root / f"{mode.value}.tflite").write_bytes(convert(tiny_cnn, mode, calibration))
    (root / "folder.keras").mkdir()  # a path that exists but cannot be read as a file
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Lambda(lambda t: t * 2.0)(keras.layers.Flatten()(inputs))
    keras.Model(inputs, keras.layers.Dense(10)(x)).save(root / "lambda.keras")

    def npz(name, **overrides):
        arrays = dict(
            x_train=np.round(digits.x_train[..., 0] * 255).astype(np.uint8), y_train=digits.y_train,
            x_test=np.round(digits.x_test[..., 0] * 255).astype(np.uint8), y_test=digits.y_test,
        )  # fmt: skip
        np.savez(root / name, **(arrays | overrides))
        return str(root / name)

    paths = {
        "good_npz": npz("good.npz"),
        "wrong_shape": npz("wrong_shape.npz", x_train=np.zeros((20, 28, 28), np.uint8), y_train=np.arange(20) % 10,
                           x_test=np.zeros((10, 28, 28), np.uint8), y_test=np.arange(10)),
        "wrong_rank": npz("wrong_rank.npz", x_train=np.zeros((20, 64), np.uint8), y_train=np.arange(20) % 10),
        "wrong_dtype": npz("wrong_dtype.npz", x_train=np.zeros((20, 8, 8), bool), y_train=np.arange(20) % 10),
        "nan": npz("nan.npz", x_test=np.full((5, 8, 8), np.nan, np.float32), y_test=np.arange(5)),
        "inf": npz("inf.npz", x_test=np.full((5, 8, 8), np.inf, np.float32), y_test=np.arange(5)),
        "labels_out_of_range": npz("labels.npz", y_test=np.full(len(digits.y_test), 12)),
        "empty_split": npz("empty.npz", x_test=np.zeros((0, 8, 8), np.uint8), y_test=np.zeros(0, np.int64)),
    }  # fmt: skip
    objects = np.empty(2, dtype=object)
    objects[:] = [1, "x"]
    np.savez(root / "pickle.npz", x_train=objects, y_train=np.arange(2), x_test=objects, y_test=np.arange(2))
    paths["pickle"] = str(root / "pickle.npz")
    (root / "no_images" / "a").mkdir(parents=True)
    (root / "one_class" / "a").mkdir(parents=True)
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "one_class" / "a" / "x.png")
    paths.update(
        {name: str(root / name) for name in ("model.keras", "model.h5", "saved_model", "truncated.keras",
                                             "corrupt.h5", "corrupt_saved_model", "model.tflite", "truncated.tflite",
                                             "fp32.tflite", "int8.tflite", "dynamic_range.tflite", "float16.tflite",
                                             "lambda.keras", "folder.keras", "no_images", "one_class")}
    )  # fmt: skip
    return paths


def _assert_refused(code, err, out_dir, message):
    assert code != 0
    assert message in err, err
    assert "Traceback" not in err
    assert len([line for line in err.splitlines() if line.strip()]) == 1, err  # one line
    written = [os.path.join(d, f) for d, _, fs in os.walk(out_dir) for f in fs] if os.path.exists(out_dir) else []
    assert not [p for p in written if not p.endswith(".keras")], written  # no results, no .tflite, no temp file


MODEL_CASES = [
    ("missing", "/no/such/model.keras", "Model path '/no/such/model.keras' does not exist"),
    ("unreadable", "folder.keras", "Cannot load the Keras model"),
    ("truncated .keras", "truncated.keras", "Cannot load the Keras model"),
    ("corrupt .h5", "corrupt.h5", "Cannot load the Keras model"),
    ("corrupt SavedModel", "corrupt_saved_model", "Cannot load the Keras model"),
    ("garbage .tflite", "model.tflite", "Cannot load the .tflite file"),
    ("truncated .tflite", "truncated.tflite", "Cannot load the .tflite file"),
    ("int8 .tflite", "int8.tflite", "int8.tflite' has int8 input"),
    ("dynamic-range .tflite", "dynamic_range.tflite", "dynamic_range.tflite' holds quantized int8 tensors"),
    ("float16 .tflite", "float16.tflite", "float16.tflite' holds float16 weights"),
    ("Lambda layer", "lambda.keras", "holds a Lambda layer, whose Python code would run while loading; refused"),
]


@pytest.mark.parametrize("case, model, message", MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_bad_model_files_are_refused(capsys, tmp_path, files, case, model, message):
    code, _, err = study_cli(capsys, f"--model={files.get(model, model)}", f"--data={files['good_npz']}",
                             f"--output_dir={tmp_path}/out")  # fmt: skip
    _assert_refused(code, err, f"{tmp_path}/out", message)


@pytest.mark.parametrize("model", ["model.keras", "model.h5", "saved_model", "fp32.tflite"])
def test_good_model_in_every_format_loads(files, model):
    from tfcompress.loading import load_model

    assert load_model(files[model]).count_params() > 0


def test_lambda_model_loads_with_allow_unsafe_deserialization_and_a_warning(capsys, tmp_path, files):
    code, out, err = study_cli(capsys, f"--model={files['lambda.keras']}", f"--data={files['good_npz']}",
                               "--allow_unsafe_deserialization", "--recipes=fp32", "--num_runs=2", "--rounds=1",
                               "--min_time_s=0", "--noisolate", f"--output_dir={tmp_path}/out")  # fmt: skip
    assert code == 0, err
    assert "WARNING: --allow_unsafe_deserialization is on" in out


DATA_CASES = [
    ("shape", "wrong_shape", "has images of shape (28, 28, 1) but the model takes (8, 8, 1)"),
    ("rank", "wrong_rank", "x_train has shape (20, 64); expected (N, H, W) or (N, H, W, C) images"),
    ("dtype", "wrong_dtype", "x_train has dtype bool; give numeric image arrays"),
    ("NaN", "nan", "x_test holds NaN or inf values"),
    ("inf", "inf", "x_test holds NaN or inf values"),
    ("labels", "labels_out_of_range", "has labels up to 12 but the model outputs 10 classes"),
    ("empty split", "empty_split", "has an empty test split"),
    ("pickle", "pickle", "cannot be read without pickle"),
    ("no images", "no_images", "holds no images; put images in one sub-folder per class"),
    ("one class", "one_class", "has images of only one class"),
    ("missing", "/no/such/data.npz", "Data file '/no/such/data.npz' does not exist"),
]


@pytest.mark.parametrize("case, data, message", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_bad_data_is_refused(capsys, tmp_path, files, case, data, message):
    code, _, err = study_cli(capsys, f"--model={files['model.keras']}", f"--data={files.get(data, data)}",
                             f"--output_dir={tmp_path}/out")  # fmt: skip
    _assert_refused(code, err, f"{tmp_path}/out", message)


SETTING_CASES = [
    ("unknown recipe", ["--recipes=fp32,int4"], "Unknown recipe 'int4'; choose one of: fp32"),
    ("sparsity 1.5", ["--recipes=prune:1.5"], "sparsity must be in [0, 1), got 1.5"),
    ("clusters 0", ["--recipes=cluster:0"], "clusters must be >= 2, got 0"),
    ("bad parameter", ["--recipes=prune:speed=2"], "Recipe 'prune' has no parameter 'speed'"),
    ("threads 0", ["--threads=0"], "--threads must be a comma list of positive integers"),
    ("flag sparsity 1.5", ["--sparsity=1.5"], "--sparsity=1.5"),
    ("plugin", ["--plugins=no_such_module_xyz"], "Cannot import plugin module 'no_such_module_xyz'"),
]


@pytest.mark.parametrize("case, args, message", SETTING_CASES, ids=[c[0] for c in SETTING_CASES])
def test_bad_settings_are_refused_before_any_work(capsys, tmp_path, case, args, message):
    code, _, err = study_cli(capsys, *args, "--dataset=digits", f"--output_dir={tmp_path}/out")
    _assert_refused(code, err, f"{tmp_path}/out", message)


def test_output_dir_that_is_a_file_is_refused(capsys, tmp_path):
    (tmp_path / "taken").write_text("x")
    code, _, err = study_cli(capsys, "--dataset=digits", f"--output_dir={tmp_path}/taken")
    assert code == 2 and "is a file; choose a folder with --output_dir" in err
    assert (tmp_path / "taken").read_text() == "x"


def test_output_dir_that_cannot_be_created_is_refused(capsys):
    code, _, err = study_cli(capsys, "--dataset=digits", "--output_dir=/proc/tfcompress-out")
    assert code == 2 and "Cannot create output directory '/proc/tfcompress-out'" in err


def test_output_dir_that_is_not_writable_is_refused(capsys):
    # /proc/self exists and is a folder, but no file can be created in it (even by root).
    code, _, err = study_cli(capsys, "--dataset=digits", "--output_dir=/proc/self")
    assert code == 2 and "Output directory '/proc/self' is not writable" in err


def test_paths_with_spaces_and_non_ascii_characters_work(capsys, tmp_path, files):
    folder = tmp_path / "données d'essai ü"
    folder.mkdir()
    model, data = folder / "mödel v1.keras", folder / "chiffres 8x8.npz"
    model.write_bytes(open(files["model.keras"], "rb").read())
    data.write_bytes(open(files["good_npz"], "rb").read())
    code, out, err = study_cli(capsys, f"--model={model}", f"--data={data}", "--recipes=int8", "--num_runs=2",
                               "--rounds=1", "--min_time_s=0", "--noisolate",
                               f"--output_dir={folder / 'sortie é'}")  # fmt: skip
    assert code == 0, err
    assert (folder / "sortie é" / "mödel_v1" / "int8.tflite").is_file()


def test_names_cannot_lead_outside_the_output_dir(tmp_path):
    from tfcompress.loading import model_name
    from tfcompress.recipes import RecipeError, parse
    from tfcompress.study import StudyError
    from tfcompress.study.cache import inside

    assert model_name("../../etc/passwd.keras") == "passwd"
    assert model_name("..keras") == "model"
    with pytest.raises(RecipeError):
        parse("../int8")
    with pytest.raises(StudyError, match="outside the output directory"):
        inside(str(tmp_path), "..", "x.tflite")


def test_a_converter_message_repeated_once_per_op_is_said_once():
    from tfcompress.study.job import one_line

    repeated = RuntimeError("Quantization to 16x8-bit not yet supported for op: 'HARD_SWISH'. " * 19)
    assert one_line(repeated) == "RuntimeError: Quantization to 16x8-bit not yet supported for op: 'HARD_SWISH'."
    assert one_line(ValueError("a. b. a.")) == "ValueError: a. b. a."  # only back-to-back repeats go
