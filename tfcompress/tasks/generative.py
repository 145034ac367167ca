"""A convolutional variational autoencoder on MNIST digits, whose decoder is the model that ships.

The encoder maps a 28x28 image to the mean and log-variance of a Gaussian over
a small latent code; the decoder maps a code back to an image of pixel
probabilities. Only the decoder is converted to .tflite and compressed: at
evaluation time the encoder runs in Keras to give the latent means of the test
images, the decoder runs in the LiteRT interpreter, and quality is the PSNR of
its reconstructions against the original images (higher is better).

The decoder is Dense -> Reshape -> Conv2DTranspose x2 -> Conv2D: every layer
converts to a TFLite builtin, TFMOT can prune every weighted layer, and TFMOT's
default 8-bit scheme has a QuantizeConfig for each of them, so
``quantize_model`` takes the decoder as it is.
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np

from tfcompress._keras import keras, tf
from tfcompress.data import Dataset, load_mnist5k
from tfcompress.fields import Column
from tfcompress.measure.evaluate import accuracy, top1
from tfcompress.models import predict_logits
from tfcompress.tasks.base import Examples, Metric, Score, Task, TaskSetup, register

IMAGE_SHAPE = (28, 28, 1)
# The decoder's first feature map: 7x7 doubles twice to 28x28.
_BASE = 7
_BASE_CHANNELS = 64


def build_vae(latent_dim: int = 16, seed: int = 0) -> tuple[keras.Model, keras.Model]:
    """Builds a VAE's encoder and decoder as two functional tf_keras models.

    Args:
      latent_dim: the size of the latent code.
      seed: seeds the weight initializers.

    Returns:
      (encoder, decoder). The encoder takes images (N, 28, 28, 1) and returns
      [z_mean, z_log_var], each (N, latent_dim). The decoder takes codes
      (N, latent_dim) and returns pixel probabilities (N, 28, 28, 1) through a
      sigmoid.

    Raises:
      ValueError: latent_dim is not a positive integer.
    """
    if not isinstance(latent_dim, int) or latent_dim < 1:
        raise ValueError(f"latent_dim must be a positive integer, got {latent_dim!r}.")
    keras.utils.set_random_seed(seed)
    layers = keras.layers

    images = keras.Input(IMAGE_SHAPE, name="image")
    x = layers.Conv2D(32, 3, strides=2, padding="same", activation="relu", name="enc_conv1")(images)
    x = layers.Conv2D(64, 3, strides=2, padding="same", activation="relu", name="enc_conv2")(x)
    x = layers.Flatten(name="enc_flatten")(x)
    x = layers.Dense(128, activation="relu", name="enc_dense")(x)
    z_mean = layers.Dense(latent_dim, name="z_mean")(x)
    z_log_var = layers.Dense(latent_dim, name="z_log_var")(x)
    encoder = keras.Model(images, [z_mean, z_log_var], name="encoder")

    codes = keras.Input((latent_dim,), name="latent")
    y = layers.Dense(_BASE * _BASE * _BASE_CHANNELS, activation="relu", name="dec_dense")(codes)
    y = layers.Reshape((_BASE, _BASE, _BASE_CHANNELS), name="dec_reshape")(y)
    y = layers.Conv2DTranspose(64, 3, strides=2, padding="same", activation="relu", name="dec_up1")(y)
    y = layers.Conv2DTranspose(32, 3, strides=2, padding="same", activation="relu", name="dec_up2")(y)
    pixels = layers.Conv2D(1, 3, padding="same", activation="sigmoid", name="dec_pixels")(y)
    decoder = keras.Model(codes, pixels, name="decoder")
    return encoder, decoder


def _check_images(x: np.ndarray, what: str) -> None:
    if tuple(x.shape[1:]) != IMAGE_SHAPE:
        raise ValueError(f"{what} has shape {tuple(x.shape)}; the VAE takes images shaped (N, 28, 28, 1).")


def _make_train_step(encoder: keras.Model, decoder: keras.Model, optimizer, beta: float):
    """A compiled step: encode, sample a code by reparameterization, decode, descend on BCE + beta * KL."""
    variables = encoder.trainable_variables + decoder.trainable_variables
    eps = keras.backend.epsilon()

    @tf.function
    def step(images, noise):
        with tf.GradientTape() as tape:
            z_mean, z_log_var = encoder(images, training=True)
            # Reparameterization: the sample is a differentiable function of mean and variance.
            z = z_mean + tf.exp(0.5 * z_log_var) * noise
            pixels = tf.clip_by_value(decoder(z, training=True), eps, 1.0 - eps)
            bce = -(images * tf.math.log(pixels) + (1.0 - images) * tf.math.log(1.0 - pixels))
            reconstruction = tf.reduce_mean(tf.reduce_sum(bce, axis=[1, 2, 3]))
            kl = tf.reduce_mean(-0.5 * tf.reduce_sum(1.0 + z_log_var - tf.square(z_mean) - tf.exp(z_log_var), axis=1))
            loss = reconstruction + beta * kl
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        return loss

    return step


def train_vae(
    encoder: keras.Model,
    decoder: keras.Model,
    data: Dataset,
    epochs: int,
    seed: int = 0,
    verbose: int = 0,
    beta: float = 1.0,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
) -> float:
    """Trains encoder and decoder in place on data.x_train; returns the wall time in seconds.

    The loss per image is the binary cross-entropy summed over pixels plus
    ``beta`` times the KL divergence of the code's Gaussian from N(0, I),
    averaged over each batch, minimized with Adam.

    Args:
      encoder: from `build_vae`.
      decoder: from `build_vae`.
      data: images in x_train (N, 28, 28, 1), values in [0, 1]; labels unused.
      epochs: passes over the training images.
      seed: seeds the shuffling and the sampling noise.
      verbose: 1 prints the mean loss after each epoch.
      beta: weight of the KL term (1 is the standard VAE).
      batch_size: images per step.
      learning_rate: Adam's step size.

    Raises:
      ValueError: an argument is out of range or the images are not 28x28x1.
    """
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}.")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    _check_images(data.x_train, "x_train")
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    x = data.x_train.astype(np.float32)
    latent_dim = int(decoder.inputs[0].shape[-1])
    step = _make_train_step(encoder, decoder, keras.optimizers.Adam(learning_rate), float(beta))
    start = time.perf_counter()
    for epoch in range(epochs):
        order = rng.permutation(len(x))
        losses = []
        for i in range(0, len(x), batch_size):
            batch = x[order[i : i + batch_size]]
            noise = rng.standard_normal((len(batch), latent_dim)).astype(np.float32)
            losses.append(float(step(tf.constant(batch), tf.constant(noise))))
        if verbose:
            print(f"epoch {epoch + 1}/{epochs}: loss {np.mean(losses):.2f}")
    return time.perf_counter() - start


def latents(encoder: keras.Model, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The latent means z_mean (N, latent_dim) of images x, the decoder's input at evaluation time."""
    _check_images(x, "x")
    means = [
        encoder(tf.constant(x[i : i + batch_size]), training=False)[0].numpy() for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(means).astype(np.float32)


def psnr(reconstructions: np.ndarray, images: np.ndarray) -> float:
    """Mean peak signal-to-noise ratio in dB, with peak value 1.0.

    PSNR is computed per image, 10 * log10(1 / MSE) with the MSE over that
    image's pixels, and then averaged over images. An image reproduced exactly
    has infinite PSNR, so the mean is ``inf`` when any image is exact.

    Args:
      reconstructions: (N, ...) values in [0, 1].
      images: the originals, the same shape.

    Raises:
      ValueError: the shapes differ or there are no images.
    """
    return float(np.mean(psnr_per_image(reconstructions, images)))


def psnr_per_image(reconstructions: np.ndarray, images: np.ndarray) -> np.ndarray:
    """Each image's PSNR in dB (N,), peak 1.0: what ``psnr`` averages. Raises as ``psnr``."""
    reconstructions = np.asarray(reconstructions, dtype=np.float64)
    images = np.asarray(images, dtype=np.float64)
    if reconstructions.shape != images.shape:
        raise ValueError(
            f"reconstructions have shape {reconstructions.shape} but images have {images.shape}; they must match."
        )
    if len(images) == 0:
        raise ValueError("psnr needs at least one image, got 0.")
    mse = np.mean(np.square(reconstructions - images).reshape(len(images), -1), axis=1)
    with np.errstate(divide="ignore"):
        return -10.0 * np.log10(mse)


def as_dataset(encoder: keras.Model, data: Dataset) -> Dataset:
    """(latent mean, image) pairs for fine-tuning or evaluating a decoder on its own.

    x_train and x_test are the encoder's latent means of the train and test
    images; y_train and y_test are the images themselves, so
    ``models.train(decoder, dataset, ..., loss=keras.losses.BinaryCrossentropy())``
    fine-tunes the decoder. ``num_classes`` is 0: the targets are images, not
    class ids.
    """
    return Dataset(
        f"{data.name}-latents",
        latents(encoder, data.x_train),
        data.x_train.astype(np.float32),
        latents(encoder, data.x_test),
        data.x_test.astype(np.float32),
        0,
    )


# --- the task ------------------------------------------------------------------------------------------------


def _classifier(setup: TaskSetup):
    """The classification task's CNN trained on mnist5k (shared cache): the judge of decoded digits."""
    judge = dataclasses.replace(setup, model="cnn", dataset="mnist5k", data=None, options=None)
    return setup.cache.builtin("classification", judge)[0]


def _vae(setup: TaskSetup, verbose: int = 0):
    """The VAE's (encoder, decoder, loaded_from_cache), trained on mnist5k or loaded from the model cache."""
    stem = os.path.join(setup.cache.folder, f"vae-mnist5k-e{setup.epochs}-s{setup.seed}")
    if os.path.exists(stem + "-decoder.keras"):
        encoder, decoder = (keras.models.load_model(f"{stem}-{part}.keras", compile=False, safe_mode=True)
                            for part in ("encoder", "decoder"))  # fmt: skip
        return encoder, decoder, True
    encoder, decoder = build_vae(seed=setup.seed)
    train_vae(encoder, decoder, load_mnist5k(setup.seed), setup.epochs, setup.seed, verbose)
    os.makedirs(os.path.dirname(stem), exist_ok=True)
    for part, model in (("encoder", encoder), ("decoder", decoder)):  # the decoder last: it marks a full cache
        model.save(f"{stem}-{part}.tmp.keras")
        os.replace(f"{stem}-{part}.tmp.keras", f"{stem}-{part}.keras")
    return encoder, decoder, False


def _generative_data(setup: TaskSetup, model=None) -> Dataset:
    """(latent mean, image) pairs of mnist5k; the test labels and the judging classifier ride along."""
    digits = load_mnist5k(setup.seed)
    encoder, _, _ = _vae(setup, verbose=2)
    return dataclasses.replace(
        as_dataset(encoder, digits), meta={"labels": digits.y_test, "classifier": _classifier(setup)}
    )


def _generative_build(setup: TaskSetup, dataset: Dataset, verbose: int):
    _, decoder, cached = _vae(setup, verbose)
    return decoder, cached


def _generative_score(outputs: np.ndarray, dataset: Dataset) -> Score:
    outputs = np.clip(outputs, 0.0, 1.0)
    judged = top1(predict_logits(dataset.meta["classifier"], outputs))
    per_image = psnr_per_image(outputs, dataset.y_test)  # the metric is their mean: a resample draws images
    return Score(float(np.mean(per_image)), {"sample_accuracy": accuracy(judged, dataset.meta["labels"])},
                 examples=Examples.of_mean(per_image))  # fmt: skip


def _generative_loss():
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
        columns=(Column("sample_accuracy", "sample acc", ".4f"),),
    )
)
