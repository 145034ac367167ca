"""The classification task: image classifiers on the built-in digits or the user's data; top-1 accuracy."""

from __future__ import annotations

import dataclasses
import math
import os
from fractions import Fraction

import numpy as np

from tfcompress import data as data_lib
from tfcompress import models
from tfcompress._keras import tf
from tfcompress.fields import param
from tfcompress.measure.evaluate import accuracy, top1
from tfcompress.tasks.base import Examples, Metric, Score, Task, register

# Built-in models made for one input shape: the classification data is resized to it (the digits to 48x48x3).
_CLASSIFICATION_INPUT_SHAPES = {"mobilenet_v2": (48, 48, 3)}


@dataclasses.dataclass(frozen=True)
class ClassificationOptions:
    """Options of the classification task.

    Attributes:
      input_scale: how integer pixels (8-bit images, uint8 arrays) become the
        model's input: 'auto' (none when the model starts with a Rescaling or
        Normalization layer, which scales its own input, else 1/255), 'none'
        (the stored values), or 'SCALE,OFFSET' (x * SCALE + OFFSET; fractions
        such as 1/127.5 allowed). Float pixels are always taken as they are.
    """

    input_scale: str = param(
        "auto",
        "How integer pixels become the model's input: auto (none if the model starts with a Rescaling or "
        + "Normalization layer, else 1/255), none, or SCALE,OFFSET (x*SCALE+OFFSET, e.g. 1/127.5,-1).",
    )

    def __post_init__(self):
        parse_input_scale(self.input_scale)


def parse_input_scale(text: str) -> data_lib.PixelScale | str:
    """'auto' -> 'auto', 'none' -> None, 'SCALE,OFFSET' -> (scale, offset).

    Raises:
      ValueError: naming the value and the forms it may take.
    """
    value = text.strip().lower()
    if value in ("auto", "none"):
        return None if value == "none" else "auto"
    try:
        scale, offset = (float(Fraction(part.strip())) for part in value.split(","))
    except (ValueError, ZeroDivisionError):
        raise ValueError(
            f"input_scale={text!r} is not auto, none or SCALE,OFFSET (e.g. 1/255,0 or 1/127.5,-1)."
        ) from None
    return scale, offset


def scales_its_input(model) -> bool | None:
    """Whether the model's first layer after its input is Rescaling or Normalization (None: no layers to read)."""
    layers = getattr(model, "layers", None)
    if layers is None:
        return None
    for layer in layers:
        kind = type(layer).__name__
        if kind != "InputLayer":
            return kind in ("Rescaling", "Normalization")
    return False


def _pixel_scale(setup, model) -> tuple[dict, str]:
    """The loader's pixel_scale keyword (empty: the data set's default) and why, for --input_scale."""
    choice = parse_input_scale(setup.options.input_scale if setup.options else "auto")
    if choice != "auto":
        return {"pixel_scale": choice}, f"--input_scale={setup.options.input_scale}"
    own = scales_its_input(model) if model is not None else False
    if own:
        return {"pixel_scale": None}, "auto: the model starts with its own Rescaling or Normalization layer"
    if own is None:
        return {}, ("auto: default scaling (a SavedModel's or .tflite's layers cannot be read; set --input_scale if "
                    + "it scales itself)")  # fmt: skip
    return {}, "auto: the model has no Rescaling or Normalization layer first"


def _classification_data(setup, model=None) -> data_lib.Dataset:
    """The built-in set or the user's; an image folder is read at the size and channels ``model`` takes.

    A built-in model made for a fixed input shape (``model`` None, ``setup.model``
    in _CLASSIFICATION_INPUT_SHAPES) gets its data at that shape: an image folder is
    read at it, other data is resized (see _resize_images). Integer pixels are
    scaled as ``setup.options.input_scale`` says.
    """
    source = setup.data or setup.dataset
    fixed = _CLASSIFICATION_INPUT_SHAPES.get(setup.model) if model is None else None
    kwargs, why = _pixel_scale(setup, model)
    if os.path.isdir(source) and (model is not None or fixed is not None):
        height, width, channels = tuple(model.inputs[0].shape[1:]) if model is not None else fixed
        kwargs |= {"image_size": (height, width), "channels": channels}
    dataset = data_lib.load_dataset(source, seed=setup.seed, **kwargs)
    dataset = dataclasses.replace(dataset, preprocessing=f"{dataset.preprocessing} ({why})")
    if fixed is not None and dataset.input_shape != fixed:
        dataset = _resize_images(dataset, fixed)
    return dataset


def _resize_images(dataset: data_lib.Dataset, shape: tuple[int, int, int]) -> data_lib.Dataset:
    """The dataset's images resized (bilinear) to ``shape``; one channel is repeated to three.

    Pixel values keep their range (bilinear weights mix neighbours) and labels are
    unchanged; the name says the new shape (``mnist5k@48x48x3``), as does the model
    cache's file name.

    Raises:
      DataError: the channels can be neither kept nor repeated to the target's.
    """
    height, width, channels = shape
    have = dataset.input_shape[-1]
    if have not in (1, channels):
        raise data_lib.DataError(
            f"Data {dataset.name!r} has {have} channels; the model takes {channels} (1 is repeated to {channels})."
        )

    def resize(x):
        x = tf.image.resize(x, (height, width), method="bilinear").numpy()
        return np.repeat(x, channels // have, axis=-1)

    return dataclasses.replace(
        dataset,
        name=f"{dataset.name}@{height}x{width}x{channels}",
        x_train=resize(dataset.x_train),
        x_test=resize(dataset.x_test),
    )


def _classification_build(setup, dataset, verbose):
    # Each model's builder and Adam learning rate. MobileNetV2 from scratch needs a higher rate to learn in
    # 10 epochs on mnist5k: test accuracy 0.895 at 1e-3, 0.947 at 3e-3, 0.960 at 5e-3, 0.965 at 1e-2.
    builder, learning_rate = {
        "cnn": (models.build_cnn, 1e-3),
        "resnet_small": (models.build_resnet_small, 1e-3),
        "mobilenet_v2": (models.build_mobilenet_v2, 5e-3),
    }[setup.model]
    model = builder(dataset.input_shape, dataset.num_classes, seed=setup.seed)
    models.train(model, dataset, epochs=setup.epochs, seed=setup.seed, verbose=verbose, learning_rate=learning_rate)
    return model


def _check_baseline(metric: float, dataset: data_lib.Dataset) -> str | None:
    """A warning when the fp32 accuracy is within 3 standard errors of guessing (1 / classes)."""
    chance = 1 / max(dataset.num_classes, 1)
    n = len(dataset.y_test)
    if metric > chance + 3 * math.sqrt(chance * (1 - chance) / n):
        return None
    return (
        f"the fp32 accuracy {metric:.3f} is at chance level (1/{dataset.num_classes} = {chance:.3f} on {n} test "
        + f"examples). The data got {dataset.preprocessing or 'no preprocessing'}; if the model expects another "
        + "input range, set --input_scale (none, or SCALE,OFFSET such as 1/127.5,-1)."
    )


def _classification_score(outputs, dataset) -> Score:
    predictions = top1(outputs)
    correct = predictions == np.asarray(dataset.y_test)  # accuracy is their mean
    return Score(accuracy(predictions, dataset.y_test), predictions=predictions, examples=Examples.of_mean(correct))


register(
    Task(
        "classification",
        "image classification (accuracy on the test split)",
        Metric("accuracy", True, True, "top-1 accuracy on the test split"),
        "cnn",
        ("cnn", "resnet_small", "mobilenet_v2"),
        _classification_data,
        _classification_build,
        _classification_score,
        labels_are_classes=True,
        options=ClassificationOptions,
        check_baseline=_check_baseline,
    )
)
