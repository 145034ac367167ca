"""The study's task families: what data, built-in model, loss and metric each one uses.

A study runs the same path for every task (recipe -> .tflite -> metric on the
.tflite -> latency -> report); a ``Task`` supplies the parts that differ:

- ``load_data(config, model=None)``: the task's Dataset (x = the model's input, y = the
  training target of fine-tuning recipes);
- ``build(config, dataset, verbose)``: a trained built-in model (the study caches it),
  or, for a task whose model lives in another cache entry (``caches_own_model``),
  ``(model, loaded_from_cache)``;
- ``score(outputs, dataset)``: the metric and its companions from the
  .tflite's outputs on the test split;
- ``loss`` and ``batch_size`` for fine-tuning recipes.

Tasks are registered in this module, as recipes are in theirs. TensorFlow is
imported only when a task's functions run, so reading the registry (for flag
help or the report) is cheap.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from tfcompress import data as data_lib


@dataclasses.dataclass(frozen=True)
class Metric:
    """A task's headline metric.

    Attributes:
      name: the row's metric_name.
      higher_is_better: False for losses such as bits per character.
      fraction: a fraction in [0, 1] (changes are shown in percentage points).
      description: one line for the report.
    """

    name: str
    higher_is_better: bool
    fraction: bool
    description: str

    def within(self, value: float, reference: float, points: float = 1.0, percent: float = 1.0) -> bool:
        """Whether ``value`` is no worse than ``reference`` by more than 1 point (fractions) or 1% (others)."""
        tolerance = points / 100 if self.fraction else abs(reference) * percent / 100
        worse = reference - value if self.higher_is_better else value - reference
        return worse <= tolerance + 1e-12


@dataclasses.dataclass(frozen=True)
class Score:
    """What a task reads off a .tflite's outputs on the test split.

    Attributes:
      metric: the headline value.
      extras: more values for the row (e.g. perplexity, mAP@[.5:.95]).
      predictions: per-example discrete predictions that agreement with fp32
        is computed on; None where agreement has no meaning (boxes, images).
    """

    metric: float
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)
    predictions: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class Task:
    """One task family. See the module docstring for the roles of the callables."""

    name: str
    description: str
    metric: Metric
    default_model: str
    builtin_models: tuple[str, ...]
    load_data: Callable[..., data_lib.Dataset]
    build: Callable[[Any, data_lib.Dataset, int], Any]
    score: Callable[[np.ndarray, data_lib.Dataset], Score]
    default_recipes: tuple[str, ...] = ()  # empty: every recipe of the default study
    loss: Callable[[], Any] | None = None  # None: sparse categorical cross-entropy
    batch_size: int = 64
    user_models: bool = True  # whether --model may be the user's own file
    caches_own_model: bool = False  # build caches its model itself and returns (model, loaded_from_cache)

    def cache_name(self, model: str, dataset: data_lib.Dataset, config) -> str:
        """The cache file stem of a trained built-in model: everything that changes its weights."""
        shape = "x".join(str(d) for d in dataset.input_shape)
        data_name = re.sub(r"[^\w.-]+", "_", dataset.name)
        return f"{model}-{data_name}-{shape}-c{dataset.num_classes}-e{config.epochs}-s{config.seed}"


_TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    if task.name in _TASKS:
        raise ValueError(f"Task {task.name!r} is already registered.")
    _TASKS[task.name] = task
    return task


def names() -> tuple[str, ...]:
    return tuple(_TASKS)


def get(name: str) -> Task:
    try:
        return _TASKS[name]
    except KeyError:
        raise ValueError(f"Unknown task {name!r}; choose one of: {', '.join(_TASKS)}.") from None


def metric(name: str | None) -> Metric | None:
    """The Metric of a row's metric_name, or None for a name no task uses."""
    return next((t.metric for t in _TASKS.values() if t.metric.name == name), None)


# --- classification ------------------------------------------------------------------------------------------


# Built-in models made for one input shape: the classification data is resized to it (the digits to 48x48x3).
_CLASSIFICATION_INPUT_SHAPES = {"mobilenet_v2": (48, 48, 3)}


def _classification_data(config, model=None) -> data_lib.Dataset:
    """The built-in set or the user's; an image folder is read at the size and channels ``model`` takes.

    A built-in model made for a fixed input shape (``model`` None, ``config.model``
    in _CLASSIFICATION_INPUT_SHAPES) gets its data at that shape: an image folder is
    read at it, other data is resized (see _resize_images).
    """
    source = config.data or config.dataset
    fixed = _CLASSIFICATION_INPUT_SHAPES.get(config.model) if model is None else None
    kwargs = {}
    if os.path.isdir(source) and (model is not None or fixed is not None):
        height, width, channels = tuple(model.inputs[0].shape[1:]) if model is not None else fixed
        kwargs = {"image_size": (height, width), "channels": channels}
    dataset = data_lib.load_dataset(source, seed=config.seed, **kwargs)
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
    from tfcompress._keras import tf

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


def _classification_build(config, dataset, verbose):
    from tfcompress import models

    # Each model's builder and Adam learning rate. MobileNetV2 from scratch needs a higher rate to learn in
    # 10 epochs on mnist5k: test accuracy 0.895 at 1e-3, 0.947 at 3e-3, 0.960 at 5e-3, 0.965 at 1e-2.
    builder, learning_rate = {
        "cnn": (models.build_cnn, 1e-3),
        "resnet_small": (models.build_resnet_small, 1e-3),
        "mobilenet_v2": (models.build_mobilenet_v2, 5e-3),
    }[config.model]
    model = builder(dataset.input_shape, dataset.num_classes, seed=config.seed)
    models.train(model, dataset, epochs=config.epochs, seed=config.seed, verbose=verbose, learning_rate=learning_rate)
    return model


def _classification_score(outputs, dataset) -> Score:
    from tfcompress.evaluate import accuracy, top1

    predictions = top1(outputs)
    return Score(accuracy(predictions, dataset.y_test), predictions=predictions)


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
    )
)

# --- language ------------------------------------------------------------------------------------------------


def _language_data(config, model=None) -> data_lib.Dataset:
    from tfcompress import language

    try:
        return language.as_dataset(language.load_text(config.text_file), config.context)
    except language.TextError as e:
        raise data_lib.DataError(str(e)) from None


def _language_build(config, dataset, verbose):
    from tfcompress import language, models

    model = language.build_transformer(dataset.num_classes, context=dataset.input_shape[0], seed=config.seed)
    models.train(model, dataset, epochs=config.epochs, seed=config.seed, verbose=verbose, batch_size=32,
                 learning_rate=3e-3)  # fmt: skip
    return model


def _language_score(outputs, dataset) -> Score:
    from tfcompress import language

    bits = language.bits_per_char(outputs, dataset.y_test)
    # Next-character guesses, for agreement with fp32.
    return Score(bits, {"perplexity": float(2.0**bits)}, np.argmax(outputs, axis=-1))


_BITS_PER_CHAR = Metric(
    "bits_per_char", False, False, "validation cross-entropy of the next character in bits (lower is better)"
)
register(
    Task(
        "language",
        "character-level language model (validation bits per character; lower is better)",
        _BITS_PER_CHAR,
        "transformer",
        ("transformer",),
        _language_data,
        _language_build,
        _language_score,
        default_recipes=("fp32", "dynamic_range", "float16", "int8", "int16x8", "prune", "lowrank"),
        batch_size=32,
    )
)
# --- detection -----------------------------------------------------------------------------------------------


def _detection_data(config, model=None) -> data_lib.Dataset:
    """Canvases composed from the real MNIST digits; the test DetectionSet rides along for COCO scoring."""
    from tfcompress import detection

    train, test = detection.load_mnist_detection(num_train=3000, num_test=500, canvas=64, seed=config.seed)
    return dataclasses.replace(detection.as_dataset(train, test), meta=test)


def _detection_build(config, dataset, verbose):
    from tfcompress import detection

    model = detection.build_detector(dataset.input_shape[0], dataset.num_classes, seed=config.seed)
    detection.train_detector(model, dataset, epochs=config.epochs, seed=config.seed, verbose=verbose)
    return model


def _detection_score(outputs, dataset) -> Score:
    from tfcompress import detection

    scores = detection.coco_map(dataset.meta, detection.decode(outputs))
    return Score(scores["map50"], {"map": scores["map"]})


def _detection_loss():
    from tfcompress import detection

    return detection.DetectionLoss()


register(
    Task(
        "detection",
        "object detection on canvases of real MNIST digits (COCO mAP@.5 by pycocotools)",
        Metric("map50", True, True, "COCO mAP at IoU 0.5 on the test canvases (mAP@[.5:.95] in `map`)"),
        "detector",
        ("detector",),
        _detection_data,
        _detection_build,
        _detection_score,
        loss=_detection_loss,
        user_models=False,
    )
)

# --- generative ----------------------------------------------------------------------------------------------


def _classifier(config):
    """The classification task's CNN trained on mnist5k (shared cache): the judge of decoded digits."""
    from tfcompress import study

    judge = dataclasses.replace(config, task="classification", model="cnn", dataset="mnist5k", data=None, recipes=())
    return study.builtin_model(judge)[0]


def _vae(config, verbose: int = 0):
    """The VAE's (encoder, decoder, loaded_from_cache), trained on mnist5k or loaded from the model cache."""
    from tfcompress import generative, study
    from tfcompress._keras import keras

    stem = os.path.join(study.cache_dir(config), f"vae-mnist5k-e{config.epochs}-s{config.seed}")
    if os.path.exists(stem + "-decoder.keras"):
        encoder, decoder = (keras.models.load_model(f"{stem}-{part}.keras", compile=False, safe_mode=True)
                            for part in ("encoder", "decoder"))  # fmt: skip
        return encoder, decoder, True
    encoder, decoder = generative.build_vae(seed=config.seed)
    generative.train_vae(encoder, decoder, data_lib.load_mnist5k(config.seed), config.epochs, config.seed, verbose)
    os.makedirs(os.path.dirname(stem), exist_ok=True)
    for part, model in (("encoder", encoder), ("decoder", decoder)):  # the decoder last: it marks a full cache
        model.save(f"{stem}-{part}.tmp.keras")
        os.replace(f"{stem}-{part}.tmp.keras", f"{stem}-{part}.keras")
    return encoder, decoder, False


def _generative_data(config, model=None) -> data_lib.Dataset:
    """(latent mean, image) pairs of mnist5k; the test labels and the judging classifier ride along."""
    from tfcompress import generative

    digits = data_lib.load_mnist5k(config.seed)
    encoder, _, _ = _vae(config, verbose=2)
    return dataclasses.replace(
        generative.as_dataset(encoder, digits), meta={"labels": digits.y_test, "classifier": _classifier(config)}
    )


def _generative_build(config, dataset, verbose):
    _, decoder, cached = _vae(config, verbose)
    return decoder, cached


def _generative_score(outputs, dataset) -> Score:
    from tfcompress import generative
    from tfcompress.evaluate import accuracy, top1
    from tfcompress.models import predict_logits

    outputs = np.clip(outputs, 0.0, 1.0)
    judged = top1(predict_logits(dataset.meta["classifier"], outputs))
    return Score(
        generative.psnr(outputs, dataset.y_test), {"sample_accuracy": accuracy(judged, dataset.meta["labels"])}
    )


def _generative_loss():
    from tfcompress._keras import keras

    return keras.losses.BinaryCrossentropy()


register(
    Task(
        "generative",
        "the decoder of a convolutional VAE on the real MNIST digits (reconstruction PSNR)",
        Metric("psnr_db", True, False, "reconstruction PSNR in dB on the test digits (Keras encoder, .tflite decoder)"),
        "vae_decoder",
        ("vae_decoder",),
        _generative_data,
        _generative_build,
        _generative_score,
        loss=_generative_loss,
        user_models=False,
        caches_own_model=True,
    )
)

# --- lora: LLM-style adaptation ------------------------------------------------------------------------------


def _lora_data(config, model=None) -> data_lib.Dataset:
    """The adaptation corpus in the language model's vocabulary (default: Python standard-library source)."""
    from tfcompress import language, lora

    try:
        source = language.load_text(config.text_file)
        text = language.read_text(config.adapt_text_file) if config.adapt_text_file else None
        target = lora.adapt_data(source.vocab, text)
        return language.as_dataset(target, config.context)
    except (language.TextError, ValueError) as e:
        raise data_lib.DataError(str(e)) from None


def _lora_build(config, dataset, verbose):
    """The language task's model, pretrained on the source corpus (shared cache)."""
    from tfcompress import study

    pretrained = dataclasses.replace(config, task="language", model="transformer", recipes=())
    return study.builtin_model(pretrained, verbose=verbose)


register(
    Task(
        "lora",
        "LLM-style adaptation: the language model, pretrained on --text_file, adapted to --adapt_text_file; "
        + "fp32 is the frozen base",
        dataclasses.replace(_BITS_PER_CHAR, description=_BITS_PER_CHAR.description + " on the adaptation corpus"),
        "transformer",
        ("transformer",),
        _lora_data,
        _lora_build,
        _language_score,
        # Rank 8 on query and value (--lora_rank), and rank 2 spread over every projection: both under 5%.
        default_recipes=(
            "fp32",
            "lora",
            "lora>dynamic_range",
            "lora>float16",
            "lora:rank=2:alpha=4:targets=all",
            "finetune",
        ),
        batch_size=32,
        user_models=False,
        caches_own_model=True,
    )
)
