"""Tests for tfcompress.generative: the VAE, its decoder as .tflite, PSNR, and the (latent, image) dataset."""

import numpy as np
import pytest

from tfcompress.data import Dataset, check_fits, load_mnist5k
from tfcompress.tasks import generative

LATENT_DIM = 8


@pytest.fixture(scope="module")
def small_mnist():
    """1,000 real training digits and 200 test digits: enough to learn something in seconds."""
    data = load_mnist5k(seed=0)
    return Dataset("mnist1k", data.x_train[:1000], data.y_train[:1000], data.x_test[:200], data.y_test[:200], 10)


@pytest.fixture(scope="module")
def vae(small_mnist):
    """A VAE trained briefly (5 epochs of 1,000 digits, seeded); returns (encoder, decoder)."""
    encoder, decoder = generative.build_vae(LATENT_DIM, seed=0)
    generative.train_vae(encoder, decoder, small_mnist, epochs=5, seed=0, batch_size=16)
    return encoder, decoder


def _decode(decoder, codes):
    return decoder(codes, training=False).numpy()


def test_psnr_of_identical_images_is_inf():
    images = np.random.default_rng(0).uniform(size=(3, 28, 28, 1))
    assert generative.psnr(images, images) == np.inf


def test_psnr_of_known_noise_matches_formula():
    images = np.full((2, 28, 28, 1), 0.5)
    signs = np.where(np.random.default_rng(0).uniform(size=images.shape) < 0.5, -1.0, 1.0)
    # Every pixel off by 0.1: MSE 0.01, PSNR 10 * log10(1 / 0.01) = 20 dB.
    assert generative.psnr(images + 0.1 * signs, images) == pytest.approx(20.0)
    # Per-image PSNRs are averaged (20 and 40 dB -> 30), not the PSNR of the mean MSE (about 22.97 dB).
    noise = 0.1 * signs * np.array([1.0, 0.1]).reshape(2, 1, 1, 1)
    assert generative.psnr(images + noise, images) == pytest.approx(30.0)


def test_psnr_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\(2, 28, 28, 1\).*\(3, 28, 28, 1\)"):
        generative.psnr(np.zeros((2, 28, 28, 1)), np.zeros((3, 28, 28, 1)))


def test_build_vae_rejects_bad_latent_dim():
    with pytest.raises(ValueError, match="latent_dim .* got 0"):
        generative.build_vae(0)


def test_decoder_maps_one_code_to_one_sigmoid_image(vae):
    encoder, decoder = vae
    assert len(decoder.inputs) == 1 and len(decoder.outputs) == 1
    assert tuple(decoder.inputs[0].shape) == (None, LATENT_DIM)
    assert tuple(decoder.outputs[0].shape) == (None, 28, 28, 1)
    pixels = _decode(decoder, np.random.default_rng(0).standard_normal((4, LATENT_DIM)).astype(np.float32))
    assert np.all((pixels > 0) & (pixels < 1))


def test_trained_vae_beats_mean_image_baseline(vae, small_mnist):
    encoder, decoder = vae
    reconstructions = _decode(decoder, generative.latents(encoder, small_mnist.x_test))
    mean_image = np.broadcast_to(small_mnist.x_train.mean(axis=0), small_mnist.x_test.shape)
    baseline_db = generative.psnr(mean_image, small_mnist.x_test)
    assert generative.psnr(reconstructions, small_mnist.x_test) > baseline_db + 1.0


@pytest.mark.parametrize("mode, tolerance_db", [("fp32", 0.1), ("float16", 0.1), ("dynamic_range", 0.1), ("int8", 0.5)])
def test_decoder_tflite_psnr_matches_keras(vae, small_mnist, mode, tolerance_db):
    from tfcompress.measure.evaluate import run_tflite
    from tfcompress.recipes.converter import Quantization, convert

    encoder, decoder = vae
    train_codes = generative.latents(encoder, small_mnist.x_train[:200])
    codes = generative.latents(encoder, small_mnist.x_test)
    tflite = convert(decoder, Quantization(mode), calibration_data=train_codes)
    tflite_db = generative.psnr(run_tflite(tflite, codes), small_mnist.x_test)
    keras_db = generative.psnr(_decode(decoder, codes), small_mnist.x_test)
    assert np.isfinite(tflite_db)
    assert tflite_db == pytest.approx(keras_db, abs=tolerance_db)


def test_as_dataset_pairs_latent_means_with_images_for_finetuning(vae, small_mnist):
    from tfcompress import models
    from tfcompress._keras import keras

    encoder, decoder = vae
    pairs = generative.as_dataset(encoder, small_mnist)
    np.testing.assert_allclose(pairs.x_test, generative.latents(encoder, small_mnist.x_test), atol=1e-6)
    np.testing.assert_array_equal(pairs.y_test, small_mnist.x_test)
    assert pairs.x_train.shape == (1000, LATENT_DIM) and pairs.num_classes == 0
    check_fits(pairs, decoder.inputs[0].shape, models.num_classes(decoder))  # raises if they do not fit

    tuned = models.clone(decoder)
    before_db = generative.psnr(_decode(tuned, pairs.x_test), pairs.y_test)
    models.train(tuned, pairs, epochs=2, seed=0, verbose=0, loss=keras.losses.BinaryCrossentropy())
    # The encoder is frozen here, so the decoder fits its codes better than the VAE's noisy samples.
    assert generative.psnr(_decode(tuned, pairs.x_test), pairs.y_test) > before_db


def test_tfmot_prunes_and_quantization_aware_trains_the_decoder(vae, small_mnist):
    import tensorflow_model_optimization as tfmot

    from tfcompress import models
    from tfcompress._keras import keras
    from tfcompress.measure.evaluate import run_tflite
    from tfcompress.recipes.converter import Quantization, convert

    encoder, decoder = vae
    codes = generative.latents(encoder, small_mnist.x_test[:64])
    images = small_mnist.x_test[:64]
    sparsity = tfmot.sparsity.keras
    pruned = sparsity.prune_low_magnitude(
        models.clone(decoder), pruning_schedule=sparsity.ConstantSparsity(0.5, begin_step=0, frequency=1)
    )
    pruned.compile("adam", keras.losses.BinaryCrossentropy())
    pruned.fit(codes, images, batch_size=64, epochs=1, verbose=0, callbacks=[sparsity.UpdatePruningStep()])
    kernels = [w for w in sparsity.strip_pruning(pruned).get_weights() if w.ndim > 1]
    assert len(kernels) == 4  # Dense, two Conv2DTranspose, Conv2D: every weighted layer pruned
    assert all(np.mean(k == 0) == pytest.approx(0.5, abs=0.01) for k in kernels)

    quantized = tfmot.quantization.keras.quantize_model(decoder)  # clones; no QuantizeConfig needed
    quantized.compile("adam", keras.losses.BinaryCrossentropy())
    quantized.fit(codes, images, batch_size=64, epochs=1, verbose=0)
    tflite = convert(quantized, Quantization.INT8, calibration_data=codes)
    keras_db = generative.psnr(_decode(quantized, codes), images)
    assert generative.psnr(run_tflite(tflite, codes), images) == pytest.approx(keras_db, abs=0.5)
