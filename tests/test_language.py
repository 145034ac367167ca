"""The character-level language model: offline text, a transformer that converts, bits per char on the .tflite."""

import numpy as np
import pytest

from tfcompress.models import train
from tfcompress.recipes.converter import Quantization, convert
from tfcompress.tasks import language


@pytest.fixture(scope="module")
def text():
    return language.load_text(max_chars=40_000)


@pytest.fixture(scope="module")
def model(text):
    model = language.build_transformer(text.vocab_size, context=32, dim=32, heads=2, layers=1)
    train(model, language.as_dataset(text, 32), epochs=2, batch_size=32, learning_rate=3e-3, verbose=0)
    return model


def test_default_corpus_is_cpythons_documentation_split_by_position(text):
    full = language.default_text()
    assert len(full) > 400_000 and "Python" in full
    assert len(text.train) == 36_000 and len(text.valid) == 4_000
    decoded = "".join(text.vocab[i - 1] if i else "?" for i in text.train[:200])
    assert decoded == full[:200]


def test_windows_pair_each_character_with_the_next():
    ids = np.arange(10, dtype=np.int32)
    x, y = language.windows(ids, context=4)
    np.testing.assert_array_equal(x[0], [0, 1, 2, 3])
    np.testing.assert_array_equal(y[0], [1, 2, 3, 4])


def test_bits_per_char_of_a_uniform_model_is_log2_of_the_vocabulary():
    assert language.bits_per_char(np.zeros((3, 5, 16)), np.zeros((3, 5), np.int64)) == pytest.approx(4.0)


def test_training_learns_something(model, text):
    assert language.evaluate_keras(model, text) < 0.8 * np.log2(text.vocab_size)


def test_fp32_tflite_bits_per_char_equals_keras_within_one_percent(model, text):
    keras_bpc = language.evaluate_keras(model, text)
    tflite_bpc = language.evaluate_tflite(convert(model), text, context=32)
    assert tflite_bpc == pytest.approx(keras_bpc, rel=0.01)


def test_dynamic_range_is_close_to_fp32(model, text):
    fp32 = language.evaluate_tflite(convert(model), text, context=32)
    dynamic = language.evaluate_tflite(convert(model, Quantization.DYNAMIC_RANGE), text, context=32)
    assert dynamic == pytest.approx(fp32, rel=0.05)


def test_missing_or_tiny_text_is_refused(tmp_path):
    with pytest.raises(language.TextError, match="does not exist"):
        language.load_text(str(tmp_path / "none.txt"))
    (tmp_path / "tiny.txt").write_text("ab")
    with pytest.raises(language.TextError, match="give at least a few hundred"):
        language.load_text(str(tmp_path / "tiny.txt"))
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1") * 100)
    with pytest.raises(language.TextError, match="is not UTF-8"):
        language.load_text(str(tmp_path / "latin1.txt"))
