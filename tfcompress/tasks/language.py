"""A character-level language model: offline text, a small decoder-only transformer, bits per character.

The default corpus is the English documentation text that ships with CPython
(``pydoc_data.topics``, about 465k characters); any UTF-8 file works too. The
vocabulary is the training text's characters (plus one id for characters
unseen in training), and the validation text is the last part of the corpus
(split by position, not shuffled). Quality is the cross-entropy of the next
character in bits (lower is better); perplexity is 2 to that power.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from tfcompress import models
from tfcompress._keras import keras, tf
from tfcompress.data import DataError, Dataset
from tfcompress.fields import param
from tfcompress.tasks.base import Examples, Metric, Score, Task, TaskSetup, register


class TextError(ValueError):
    """A text that cannot be used, with a message that says why and what to do."""


@dataclasses.dataclass(frozen=True)
class TextData:
    """Character ids of a corpus split by position. Id 0 stands for characters unseen in training."""

    name: str
    vocab: str  # vocab[i - 1] is the character of id i
    train: np.ndarray
    valid: np.ndarray

    @property
    def vocab_size(self) -> int:
        return len(self.vocab) + 1


def default_text() -> str:
    """CPython's bundled documentation topics, in a fixed order."""
    from pydoc_data import topics

    return "\n\n".join(topics.topics[key] for key in sorted(topics.topics))


def read_text(path: str) -> str:
    """A UTF-8 text file's content, or a TextError saying why it cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise TextError(f"Text file {path!r} does not exist; give a UTF-8 text file.") from None
    except IsADirectoryError:
        raise TextError(f"Text file {path!r} is a folder; give a UTF-8 text file.") from None
    except UnicodeDecodeError as e:
        raise TextError(f"Text file {path!r} is not UTF-8 ({e.reason} at byte {e.start}).") from None


def load_text(path: str | None = None, valid_fraction: float = 0.1, max_chars: int | None = None) -> TextData:
    """Loads a corpus (default: CPython's documentation) and encodes it as character ids.

    Args:
      path: a UTF-8 text file; None for the bundled default.
      valid_fraction: the share at the end of the text held out for validation.
      max_chars: use only the first this many characters (for quick runs).
    """
    if not 0 < valid_fraction < 1:
        raise TextError(f"valid_fraction must be in (0, 1), got {valid_fraction}.")
    if path is None:
        text, name = default_text(), "pydoc_topics"
    else:
        text, name = read_text(path), os.path.splitext(os.path.basename(path))[0]
    if max_chars is not None:
        text = text[:max_chars]
    split = int(len(text) * (1 - valid_fraction))
    if split < 2 or len(text) - split < 2:
        raise TextError(f"Text {name!r} has {len(text)} characters; give at least a few hundred.")
    vocab = "".join(sorted(set(text[:split])))
    index = {c: i + 1 for i, c in enumerate(vocab)}
    ids = np.array([index.get(c, 0) for c in text], dtype=np.int32)
    return TextData(name, vocab, ids[:split], ids[split:])


def windows(ids: np.ndarray, context: int, stride: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Input windows (N, context) and their next-character targets (N, context)."""
    stride = stride or context
    starts = np.arange(0, len(ids) - context - 1 + 1, stride)
    if len(starts) == 0:
        raise TextError(f"{len(ids)} characters are too few for windows of {context}.")
    x = np.stack([ids[s : s + context] for s in starts])
    y = np.stack([ids[s + 1 : s + context + 1] for s in starts])
    return x, y


@keras.utils.register_keras_serializable(package="tfcompress")
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned embedding of each position to the token embeddings."""

    def __init__(self, length: int, **kwargs):
        super().__init__(**kwargs)
        self.length = length

    def build(self, input_shape):
        self.positions = self.add_weight(name="positions", shape=(self.length, int(input_shape[-1])),
                                         initializer=keras.initializers.RandomNormal(stddev=0.02))  # fmt: skip
        super().build(input_shape)

    def call(self, inputs):
        return inputs + self.positions[tf.newaxis, : tf.shape(inputs)[1]]

    def get_config(self):
        return super().get_config() | {"length": self.length}


def build_transformer(
    vocab_size: int, context: int = 64, dim: int = 64, heads: int = 4, layers: int = 2, seed: int = 0
) -> keras.Model:
    """A small decoder-only transformer: causal self-attention, LayerNorm and MLP blocks; logits per position."""
    keras.utils.set_random_seed(seed)
    tokens = keras.Input((context,), dtype="int32", name="tokens")
    x = PositionEmbedding(context)(keras.layers.Embedding(vocab_size, dim)(tokens))
    for i in range(layers):
        h = keras.layers.LayerNormalization(epsilon=1e-5, name=f"ln_attn_{i}")(x)
        h = keras.layers.MultiHeadAttention(heads, dim // heads, name=f"attention_{i}")(h, h, use_causal_mask=True)
        x = keras.layers.Add()([x, h])
        h = keras.layers.LayerNormalization(epsilon=1e-5, name=f"ln_mlp_{i}")(x)
        h = keras.layers.Dense(4 * dim, activation="gelu", name=f"mlp_up_{i}")(h)
        x = keras.layers.Add()([x, keras.layers.Dense(dim, name=f"mlp_down_{i}")(h)])
    x = keras.layers.LayerNormalization(epsilon=1e-5, name="ln_final")(x)
    return keras.Model(tokens, keras.layers.Dense(vocab_size, name="logits")(x), name="char_transformer")


def bits(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Each next character's cross-entropy in bits, from logits (..., vocab) and target ids (...): shape (...)."""
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    picked = np.take_along_axis(log_probs, targets[..., np.newaxis].astype(np.int64), axis=-1)[..., 0]
    return -picked / np.log(2)


def bits_per_char(logits: np.ndarray, targets: np.ndarray) -> float:
    """Mean next-character cross-entropy in bits, from logits (..., vocab) and target ids (...)."""
    return float(bits(logits, targets).mean())


def as_dataset(data: TextData, context: int) -> Dataset:
    """Token windows as a Dataset: x (N, context) ids, y (N, context) next ids; train windows overlap by half."""
    x_train, y_train = windows(data.train, context, stride=max(1, context // 2))
    x_test, y_test = windows(data.valid, context)
    return Dataset(data.name, x_train, y_train, x_test, y_test, data.vocab_size)


def evaluate_keras(model: keras.Model, data: TextData) -> float:
    """Validation bits per character of the Keras model (non-overlapping windows)."""
    x, y = windows(data.valid, model.inputs[0].shape[1])
    return bits_per_char(model.predict(x, batch_size=64, verbose=0), y)


def evaluate_tflite(tflite: bytes | str, data: TextData, context: int) -> float:
    """Validation bits per character computed by running the .tflite in the LiteRT interpreter."""
    from tfcompress.measure.evaluate import run_tflite

    x, y = windows(data.valid, context)
    return bits_per_char(run_tflite(tflite, x, batch_size=32), y)


# --- the task ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LanguageOptions:
    """Options of the language task.

    Attributes:
      text_file: a UTF-8 corpus; None for CPython's bundled documentation text.
      context: the model's context length in characters, at least 2.
    """

    # The lora task's Options inherit both (its model is this one, pretrained on text_file).
    text_file: str | None = param(
        None,
        "--task=language and --task=lora: the UTF-8 corpus the language model is trained on (default: CPython's "
        + "bundled documentation text).",
        path=True,
    )
    context: int = param(
        64, "--task=language and --task=lora: the language model's context length in characters.", bounds=(2, None)
    )

    def __post_init__(self):
        if self.context < 2:
            raise ValueError(f"context must be >= 2, got {self.context}.")


def _language_data(setup: TaskSetup, model=None) -> Dataset:
    try:
        return as_dataset(load_text(setup.options.text_file), setup.options.context)
    except TextError as e:
        raise DataError(str(e)) from None


def _language_build(setup: TaskSetup, dataset: Dataset, verbose: int):
    model = build_transformer(dataset.num_classes, context=dataset.input_shape[0], seed=setup.seed)
    models.train(model, dataset, epochs=setup.epochs, seed=setup.seed, verbose=verbose, batch_size=32,
                 learning_rate=3e-3)  # fmt: skip
    return model


def score(outputs: np.ndarray, dataset: Dataset) -> Score:
    """Bits per character on the test windows; perplexity beside it; next-character guesses for agreement.

    The per-example contributions are the windows' own bits per character: every window holds ``context``
    characters, so their mean is the metric, and a resample draws whole windows.
    """
    per_char = bits(outputs, dataset.y_test)
    mean = float(per_char.mean())
    windows = per_char.reshape(len(per_char), -1).mean(axis=1)
    return Score(mean, {"perplexity": float(2.0**mean)}, np.argmax(outputs, axis=-1), Examples.of_mean(windows))


BITS_PER_CHAR = Metric(
    "bits_per_char",
    False,
    False,
    "validation cross-entropy of the next character in bits (lower is better)",
    notes=("perplexity (2 to the power of bits_per_char) is in results.json.",),
)
register(
    Task(
        "language",
        "character-level language model (validation bits per character; lower is better)",
        BITS_PER_CHAR,
        "transformer",
        ("transformer",),
        _language_data,
        _language_build,
        score,
        default_recipes=("fp32", "dynamic_range", "float16", "int8", "int16x8", "prune", "lowrank"),
        batch_size=32,
        options=LanguageOptions,
    )
)
