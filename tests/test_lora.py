"""LoRA: only the adapters train, the merged model computes base + adapters, and it is a recipe like any other."""

import numpy as np
import pytest

from tfcompress import recipes
from tfcompress._keras import keras
from tfcompress.measure.evaluate import run_tflite
from tfcompress.models import predict_logits
from tfcompress.recipes import finetune as finetune_recipe
from tfcompress.recipes import lora
from tfcompress.recipes.base import NotApplicable, RecipeContext
from tfcompress.recipes.lora import LoraAdapter, LoraMultiHeadAttention, LoraParams, add_adapters, merge
from tfcompress.recipes.training import finetune
from tfcompress.tasks import adaptation, language

CONTEXT, DIM, HEADS = 16, 32, 2


@pytest.fixture(scope="module")
def text():
    """A little real text: the start of the adaptation corpus, in its own vocabulary."""
    chars = adaptation.default_adapt_text()[:6000]
    vocab = "".join(sorted(set(chars)))
    return adaptation.adapt_data(vocab, chars, valid_fraction=0.2)


@pytest.fixture(scope="module")
def dataset(text):
    return language.as_dataset(text, CONTEXT)


@pytest.fixture(scope="module")
def base(text):
    """An untrained one-block transformer (seeded): adapters must teach it the text."""
    return language.build_transformer(text.vocab_size, context=CONTEXT, dim=DIM, heads=HEADS, layers=1, seed=0)


@pytest.fixture(scope="module")
def context(dataset):
    return RecipeContext(calibration_data=dataset.x_train[:16], dataset=dataset, batch_size=32)


def randomize_b(adapted, seed=1):
    """Sets every adapter's B to non-zero values, so that the update A @ B is not zero."""
    rng = np.random.default_rng(seed)
    for _, adapter in lora.adapters(adapted):
        adapter.lora_b.assign(rng.normal(0, 0.2, adapter.lora_b.shape).astype(np.float32))


def test_adapted_model_starts_equal_to_the_base(base, dataset):
    adapted = add_adapters(base, LoraParams(rank=4, targets="all"))
    assert len(lora.adapters(adapted)) == 4 + 3  # q, k, v, output; mlp_up, mlp_down; logits
    np.testing.assert_array_equal(predict_logits(adapted, dataset.x_test), predict_logits(base, dataset.x_test))


def test_training_changes_the_adapters_and_no_base_weight(base, context):
    adapted = add_adapters(base, LoraParams(rank=4, targets="query+value+mlp"))
    adapter_ids = {id(w) for w in adapted.trainable_weights}
    assert {w.name.split("/")[-1] for w in adapted.trainable_weights} == {"lora_a:0", "lora_b:0"}
    before = [w.numpy() for w in adapted.weights]
    finetune(adapted, context, LoraParams(finetune_epochs=1, finetune_learning_rate=1e-2))
    for weight, old in zip(adapted.weights, before, strict=True):
        if id(weight) in adapter_ids:
            assert not np.array_equal(weight.numpy(), old), f"{weight.name} did not train"
        else:
            np.testing.assert_array_equal(weight.numpy(), old, err_msg=f"frozen {weight.name} changed")


@pytest.mark.parametrize("targets", ["query+value", "attention", "all"])
def test_merged_model_computes_base_plus_adapters(base, dataset, targets):
    adapted = add_adapters(base, LoraParams(rank=3, alpha=6.0, targets=targets))
    randomize_b(adapted)
    merged = merge(adapted, base)
    assert not any(isinstance(layer, (LoraAdapter, LoraMultiHeadAttention)) for layer in merged.layers)
    assert [type(layer) for layer in merged.layers] == [type(layer) for layer in base.layers]
    expected = predict_logits(adapted, dataset.x_test)
    assert np.abs(expected - predict_logits(base, dataset.x_test)).max() > 0.1  # the update does something
    np.testing.assert_allclose(predict_logits(merged, dataset.x_test), expected, rtol=1e-5, atol=1e-5)


def test_adapted_model_survives_saving(base, dataset, tmp_path):
    adapted = add_adapters(base, LoraParams(rank=2, targets="all"))
    randomize_b(adapted)
    adapted.save(tmp_path / "adapted.keras")
    loaded = keras.models.load_model(tmp_path / "adapted.keras", compile=False, safe_mode=True)
    assert lora.trainable_params(loaded) == lora.trainable_params(adapted)
    np.testing.assert_allclose(predict_logits(loaded, dataset.x_test), predict_logits(adapted, dataset.x_test),
                               rtol=1e-6, atol=1e-6)  # fmt: skip


@pytest.mark.parametrize(
    "targets, fan_in_outs",
    [
        ("query+value", [(DIM, DIM), (DIM, DIM)]),  # kernels (dim, heads, head_dim): fan_out = heads * head_dim
        ("output", [(DIM, DIM)]),  # kernel (heads, head_dim, dim): fan_in = heads * head_dim
        ("mlp", [(DIM, 4 * DIM), (4 * DIM, DIM)]),
        ("head", [(DIM, None)]),  # None: the vocabulary size
    ],
)
def test_trainable_params_are_rank_times_fan_in_plus_fan_out(base, targets, fan_in_outs):
    rank, vocab = 5, base.outputs[0].shape[-1]
    adapted = add_adapters(base, LoraParams(rank=rank, targets=targets))
    assert lora.trainable_params(adapted) == sum(rank * (i + (o or vocab)) for i, o in fan_in_outs)
    assert adapted.count_params() == base.count_params() + lora.trainable_params(adapted)


def test_default_params_train_under_5_percent_of_the_default_transformer():
    model = language.build_transformer(104)  # the default corpus' vocabulary, 64 wide, 2 blocks: 117,608 weights
    adapted = add_adapters(model, LoraParams())
    # Rank 8 on 2 blocks x (query and value, 64 inputs + 64 outputs each).
    assert lora.trainable_params(adapted) == 8 * 2 * 2 * 128 == 4096
    assert lora.trainable_params(adapted) / model.count_params() < 0.05


def test_lora_recipe_adapts_the_model_and_exports(base, text, context):
    pipeline = recipes.parse("lora:rank=4:targets=all:finetune_epochs=3:finetune_learning_rate=0.01>dynamic_range")
    result = recipes.run(pipeline, base, context)
    assert result.extras["lora_layers"] == ["attention_0/query", "attention_0/key", "attention_0/value",
                                            "attention_0/output", "mlp_up_0", "mlp_down_0", "logits"]  # fmt: skip
    # q, k, v, output: rank * 2 * DIM each; mlp_up, mlp_down: rank * 5 * DIM each; logits: rank * (DIM + vocab).
    trainable = 4 * (4 * 2 * DIM + 2 * 5 * DIM) + 4 * (DIM + text.vocab_size)
    assert result.extras["trainable_params"] == trainable
    assert result.extras["trainable_fraction"] == pytest.approx(trainable / base.count_params())
    x, y = language.windows(text.valid, CONTEXT)
    before = language.bits_per_char(predict_logits(base, x), y)
    after = language.bits_per_char(run_tflite(result.tflite, x, batch_size=32), y)
    assert after < before - 1.0, (before, after)  # an untrained model (~log2(vocab) bits) learns the text


def test_finetune_trains_every_weight_of_a_copy(base, context):
    before = [w.copy() for w in base.get_weights()]
    result = finetune_recipe.full_finetune(base, context, lora.FinetuneParams(finetune_epochs=1))
    assert result.extras["trainable_fraction"] == 1.0
    for new, old in zip(result.model.get_weights(), base.get_weights(), strict=True):
        assert not np.array_equal(new, old)
    for weight, old in zip(base.get_weights(), before, strict=True):
        np.testing.assert_array_equal(weight, old)  # the original is untouched


def test_models_with_nothing_to_adapt_are_not_applicable(base, context):
    conv = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3), keras.layers.GlobalAveragePooling2D()])
    with pytest.raises(NotApplicable, match="no layer matches LoRA targets 'query\\+value'.*Conv2D"):
        lora.lora(conv, context, LoraParams())
    dense = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, name="dense")])
    with pytest.raises(NotApplicable, match="no layer matches LoRA targets 'mlp'"):
        add_adapters(dense, LoraParams(targets="mlp"))  # its only Dense layer is the head
    assert [name for name, _ in lora.adapters(add_adapters(dense, LoraParams(targets="head")))] == ["dense"]


@pytest.mark.parametrize(
    "spec, message",
    [
        ("lora:0", "rank must be >= 1, got 0"),
        ("lora:alpha=0", r"alpha must be > 0 \(the update's scale is alpha / rank\), got 0.0"),
        ("lora:targets=query+mlps", "Unknown LoRA target 'mlps' in targets='query\\+mlps'"),
        ("lora:targets=", "Unknown LoRA target '' in targets=''"),
    ],
)
def test_bad_params_are_refused(spec, message):
    with pytest.raises(ValueError, match=message):
        recipes.parse(spec)


def test_encode_keeps_the_base_vocabulary():
    ids = adaptation.encode("abz\u00e9", "abc")
    np.testing.assert_array_equal(ids, [1, 2, 0, 0])  # unknown characters are id 0, as in language.load_text
    text = adaptation.default_adapt_text()
    assert 250_000 < len(text) < 400_000
    assert all(f"class {name}" in text for name in ("ArgumentParser", "SequenceMatcher", "TextWrapper"))
    assert text == adaptation.default_adapt_text()


def test_adaptation_data_splits_by_position_in_the_given_vocabulary():
    data = adaptation.adapt_data("abc", "abcx" * 150)
    assert (len(data.train), len(data.valid), data.vocab_size) == (540, 60, 4)
    np.testing.assert_array_equal(data.valid[:4], [1, 2, 3, 0])
    with pytest.raises(ValueError, match="valid_fraction must be in \\(0, 1\\), got 1.5"):
        adaptation.adapt_data("abc", "abc" * 100, valid_fraction=1.5)
