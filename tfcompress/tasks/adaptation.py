"""The lora task (LLM-style adaptation): the language model, pretrained on one corpus, adapted to another.

The adaptation corpus is, by default, real text of another domain that ships
with Python: the source code of a fixed list of standard-library modules
(ADAPT_MODULES), encoded in the pretrained model's vocabulary and split 90/10
by position. Every row's metric is bits per character on its validation part;
fp32 is the frozen base.
"""

from __future__ import annotations

import dataclasses
import importlib.util

import numpy as np

from tfcompress.data import DataError, Dataset
from tfcompress.fields import param
from tfcompress.tasks import language
from tfcompress.tasks.base import Task, TaskSetup, register

# Pure-Python standard-library modules whose source is the default adaptation corpus (~300k characters).
ADAPT_MODULES = ("argparse", "calendar", "difflib", "fractions", "heapq", "shlex", "string", "textwrap")


def default_adapt_text() -> str:
    """Python source code of a fixed list of standard-library modules (ADAPT_MODULES), about 300k characters.

    Real text in another domain than the language model's default corpus
    (CPython's English documentation), offline and deterministic for a given
    Python version.
    """
    parts = []
    for name in ADAPT_MODULES:
        with open(importlib.util.find_spec(name).origin, encoding="utf-8") as f:
            parts.append(f.read())
    return "\n\n".join(parts)


def encode(text: str, vocab: str) -> np.ndarray:
    """Character ids of a text in an existing vocabulary (as language.load_text: id 0 for unknown characters)."""
    index = {c: i + 1 for i, c in enumerate(vocab)}
    return np.array([index.get(c, 0) for c in text], dtype=np.int32)


def adapt_data(vocab: str, text: str | None = None, valid_fraction: float = 0.1) -> language.TextData:
    """A text (default: `default_adapt_text`) in a model's vocabulary, split by position into train and valid.

    Raises:
      ValueError: valid_fraction is not in (0, 1), or the text is too short.
    """
    if not 0 < valid_fraction < 1:
        raise ValueError(f"valid_fraction must be in (0, 1), got {valid_fraction}.")
    name = "stdlib_source" if text is None else "adapt"
    text = default_adapt_text() if text is None else text
    split = int(len(text) * (1 - valid_fraction))
    if split < 2 or len(text) - split < 2:
        raise ValueError(f"The adaptation text has {len(text)} characters; give at least a few hundred.")
    ids = encode(text, vocab)
    return language.TextData(name, vocab, ids[:split], ids[split:])


@dataclasses.dataclass(frozen=True)
class AdaptationOptions(language.LanguageOptions):
    """Options of the lora task: the language task's (the pretraining corpus and context), and the target corpus.

    Attributes:
      adapt_text_file: the UTF-8 corpus to adapt to; None for the standard-library source.
    """

    adapt_text_file: str | None = param(
        None,
        "--task=lora: the UTF-8 corpus to adapt to (default: the source code of some Python standard-library modules).",
        path=True,
    )


def _lora_data(setup: TaskSetup, model=None) -> Dataset:
    """The adaptation corpus in the language model's vocabulary (default: Python standard-library source)."""
    options = setup.options
    try:
        source = language.load_text(options.text_file)
        text = language.read_text(options.adapt_text_file) if options.adapt_text_file else None
        return language.as_dataset(adapt_data(source.vocab, text), options.context)
    except (language.TextError, ValueError) as e:
        raise DataError(str(e)) from None


def _lora_build(setup: TaskSetup, dataset: Dataset, verbose: int):
    """The language task's model, pretrained on the source corpus (shared cache)."""
    options = language.LanguageOptions(text_file=setup.options.text_file, context=setup.options.context)
    pretrained = dataclasses.replace(setup, model="transformer", options=options)
    return setup.cache.builtin("language", pretrained, verbose=verbose)


register(
    Task(
        "lora",
        "LLM-style adaptation: the language model, pretrained on --text_file, adapted to --adapt_text_file; "
        + "fp32 is the frozen base",
        dataclasses.replace(
            language.BITS_PER_CHAR, description=language.BITS_PER_CHAR.description + " on the adaptation corpus"
        ),
        "transformer",
        ("transformer",),
        _lora_data,
        _lora_build,
        language.score,
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
        options=AdaptationOptions,
    )
)
