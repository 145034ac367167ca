"""Built-in and user datasets load offline, in the expected layout, and bad data is refused clearly."""

import numpy as np
import pytest

from tfcompress import data
from tfcompress.data import DataError


def test_mnist5k_is_the_real_digits_split_stratified_and_seeded():
    ds = data.load_mnist5k(seed=0)
    assert ds.x_train.shape == (4000, 28, 28, 1) and ds.x_test.shape == (1000, 28, 28, 1)
    assert ds.x_train.dtype == np.float32 and 0 <= ds.x_train.min() and ds.x_train.max() <= 1
    assert np.bincount(ds.y_test).tolist() == [100] * 10  # stratified: 500 per class, 20% held out
    again = data.load_mnist5k(seed=0)
    np.testing.assert_array_equal(ds.y_test, again.y_test)
    assert not np.array_equal(ds.y_test, data.load_mnist5k(seed=1).y_test)


def test_digits_is_8x8_in_unit_range(digits):
    assert digits.input_shape == (8, 8, 1) and digits.num_classes == 10
    assert digits.x_train.max() == pytest.approx(1.0)


def _save_npz(path, **overrides):
    rng = np.random.default_rng(0)
    arrays = dict(
        x_train=rng.integers(0, 256, (30, 8, 8), dtype=np.uint8),
        y_train=np.arange(30) % 10,
        x_test=rng.integers(0, 256, (10, 8, 8), dtype=np.uint8),
        y_test=np.arange(10),
    )
    np.savez(path, **(arrays | overrides))
    return str(path)


def test_npz_in_keras_layout_is_scaled_and_given_a_channel(tmp_path):
    ds = data.load_npz(_save_npz(tmp_path / "d.npz"))
    assert ds.input_shape == (8, 8, 1) and ds.num_classes == 10
    assert ds.x_train.dtype == np.float32 and ds.x_train.max() <= 1.0


def test_npz_that_needs_pickle_is_refused(tmp_path):
    path = tmp_path / "pickled.npz"
    objects = np.empty(3, dtype=object)
    objects[:] = [1, "a", None]
    np.savez(path, x_train=objects, y_train=np.arange(3), x_test=objects, y_test=np.arange(3))
    with pytest.raises(DataError, match="without pickle"):
        data.load_npz(str(path))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(y_test=np.arange(9)), "x_test has 10 examples but y_test has 9"),
        (dict(x_test=np.zeros((10, 4, 4), np.uint8)), r"train images are \(8, 8, 1\) but test images are \(4, 4, 1\)"),
        (dict(x_train=np.zeros((30, 64), np.uint8)), r"x_train has shape \(30, 64\)"),
        (dict(x_train=np.full((30, 8, 8), np.nan, np.float32)), "NaN or inf"),
        (dict(y_train=-(np.arange(30) % 10)), "negative label"),
        (dict(x_test=np.zeros((0, 8, 8), np.uint8), y_test=np.zeros(0, np.int64)), "empty test split"),
    ],
)
def test_bad_npz_arrays_get_a_clear_error(tmp_path, overrides, message):
    with pytest.raises(DataError, match=message):
        data.load_npz(_save_npz(tmp_path / "bad.npz", **overrides))


def test_npz_missing_arrays_names_them(tmp_path):
    path = tmp_path / "partial.npz"
    np.savez(path, x_train=np.zeros((2, 8, 8)))
    with pytest.raises(DataError, match="missing arrays y_train, x_test, y_test"):
        data.load_npz(str(path))


def test_image_folder_loads_one_class_per_subfolder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for i in range(10):
            Image.fromarray(rng.integers(0, 256, (12, 10), dtype=np.uint8)).save(tmp_path / label / f"{i}.png")
    ds = data.load_image_folder(str(tmp_path), image_size=(6, 5), channels=3)
    assert ds.input_shape == (6, 5, 3) and ds.num_classes == 2
    assert len(ds.x_train) + len(ds.x_test) == 20 and set(ds.y_test) == {0, 1}


def test_image_folder_with_one_class_or_none_is_refused(tmp_path):
    (tmp_path / "only").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        data.load_image_folder(str(tmp_path))
    from PIL import Image

    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "only" / "a.png")
    with pytest.raises(DataError, match="only one class"):
        data.load_image_folder(str(tmp_path))


def test_unknown_dataset_lists_the_choices():
    with pytest.raises(DataError, match="Unknown dataset 'cifar10'; choose one of mnist5k, digits"):
        data.load_dataset("cifar10")
