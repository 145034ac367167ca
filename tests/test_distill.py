"""Distillation: the loss is Hinton's, the control starts where the student starts, the recipe reports both."""

import numpy as np
import pytest

from tfcompress import models, recipes
from tfcompress._keras import keras
from tfcompress.data import Dataset
from tfcompress.recipes.base import NotApplicable, RecipeContext
from tfcompress.recipes.channel_prune import conv_filters
from tfcompress.recipes.distill import DistillationLoss, DistillParams, compare_with_labels_only, teacher_logits


@pytest.fixture(scope="module")
def small_digits(digits):
    """600 training digits: enough to learn something in an epoch, quick to train twice."""
    return Dataset("digits600", digits.x_train[:600], digits.y_train[:600], digits.x_test, digits.y_test, 10)


@pytest.fixture(scope="module")
def teacher(small_digits):
    model = models.build_cnn(small_digits.input_shape, 10, filters=(8, 16, 16), seed=0)
    models.train(model, small_digits, epochs=8, seed=0, verbose=0, learning_rate=3e-3)  # about 94% test accuracy
    return model


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_loss_is_the_weighted_sum_of_soft_kl_times_t_squared_and_hard_cross_entropy():
    rng = np.random.default_rng(0)
    labels, teacher, student = rng.integers(0, 5, 6), rng.normal(size=(6, 5)) * 3, rng.normal(size=(6, 5)) * 3
    t, alpha = 3.0, 0.3
    p, q = _softmax(teacher / t), _softmax(student / t)
    soft = np.sum(p * (np.log(p) - np.log(q)), axis=-1) * t * t
    hard = -np.log(_softmax(student)[np.arange(6), labels])
    y = np.concatenate([labels[:, None], teacher], axis=1).astype(np.float32)
    loss = DistillationLoss(t, alpha, reduction="none")(y, student.astype(np.float32)).numpy()
    np.testing.assert_allclose(loss, alpha * soft + (1 - alpha) * hard, rtol=1e-4)
    # A student that outputs probabilities gets the same loss as one that outputs the logits behind them.
    from_probs = DistillationLoss(t, alpha, from_probabilities=True, reduction="none")(
        y, _softmax(student).astype(np.float32)
    )
    np.testing.assert_allclose(from_probs.numpy(), loss, rtol=1e-4)


def test_teacher_logits_of_a_softmax_teacher_are_its_log_probabilities(teacher, small_digits):
    with_softmax = keras.Model(teacher.inputs, keras.layers.Softmax()(teacher.outputs[0]))
    x = small_digits.x_test[:16]
    np.testing.assert_allclose(
        _softmax(teacher_logits(with_softmax, x)), _softmax(teacher_logits(teacher, x)), rtol=1e-4, atol=1e-6
    )


def test_alpha_zero_distillation_is_exactly_the_labels_only_control(teacher, small_digits):
    """Same start, same loop, same seed: with no teacher term both students must end identical."""
    student = models.build_cnn(small_digits.input_shape, 10, filters=(4, 8, 8), seed=3)
    start = [w.copy() for w in student.get_weights()]
    params = DistillParams(distill_alpha=0.0, finetune_epochs=1)
    distilled, control, report = compare_with_labels_only(teacher, student, small_digits, params, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(start, student.get_weights(), strict=True))  # untouched
    assert not np.array_equal(distilled.get_weights()[0], start[0])  # it trained
    for a, b in zip(distilled.get_weights(), control.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert report["distill_gain"] == 0.0


def test_recipe_distils_into_a_narrower_student_and_reports_both_accuracies(teacher, small_digits):
    pipeline = recipes.parse("distill:0.5:finetune_epochs=1")
    stage = pipeline.transforms[0]
    assert stage.params == DistillParams(keep_fraction=0.5, finetune_epochs=1)
    context = RecipeContext(calibration_data=small_digits.x_train[:10], dataset=small_digits, seed=0)
    result = stage.recipe.apply(teacher, context, stage.params)
    assert list(conv_filters(result.model).values()) == [4, 8, 8]
    extras = result.extras
    for key in ("teacher_keras_accuracy", "distill_keras_accuracy", "labels_only_keras_accuracy"):
        assert isinstance(extras[key], float) and 0 <= extras[key] <= 1
    assert extras["distill_gain"] == extras["distill_keras_accuracy"] - extras["labels_only_keras_accuracy"]
    assert extras["teacher_keras_accuracy"] > 0.5 and extras["finetune_s"] > 0
    assert extras["params"] == result.model.count_params() < teacher.count_params()
    predictions = np.argmax(models.predict_logits(result.model, small_digits.x_test), axis=-1)
    assert np.mean(predictions == small_digits.y_test) == pytest.approx(extras["distill_keras_accuracy"])


def test_a_student_file_replaces_the_narrowed_teacher(teacher, small_digits, tmp_path):
    inputs = keras.Input(small_digits.input_shape)
    x = keras.layers.Dense(16, activation="relu")(keras.layers.Flatten()(inputs))
    path = str(tmp_path / "student.keras")
    keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x)).save(path)
    context = RecipeContext(calibration_data=small_digits.x_train[:10], dataset=small_digits)
    stage = recipes.parse(f"distill:student={path}:finetune_epochs=1").transforms[0]
    result = stage.recipe.apply(teacher, context, stage.params)
    assert [type(layer).__name__ for layer in result.model.layers] == ["InputLayer", "Flatten", "Dense", "Dense"]
    assert 0 <= result.extras["distill_keras_accuracy"] <= 1


def test_non_classification_tasks_are_not_applicable(teacher, small_digits):
    context = RecipeContext(calibration_data=small_digits.x_train[:10], dataset=small_digits, loss="mse")
    with pytest.raises(NotApplicable, match="distill needs a classifier"):
        recipes.get("distill").apply(teacher, context, DistillParams())
    # A per-step output (a sequence model's (batch, time, classes)) is not a classifier's either.
    inputs = keras.Input((3, 2))
    sequence_model = keras.Model(inputs, keras.layers.Dense(5)(inputs))
    context = RecipeContext(calibration_data=small_digits.x_train[:10], dataset=small_digits)
    with pytest.raises(NotApplicable, match=r"one \(batch, classes\) output; the teacher outputs \[\(None, 3, 5\)\]"):
        recipes.get("distill").apply(sequence_model, context, DistillParams())


@pytest.mark.parametrize("spec, message", [
    ("distill:0", r"keep_fraction must be in \(0, 1\], got 0.0"),
    ("distill:temperature=0", r"temperature must be > 0, got 0.0"),
    ("distill:distill_alpha=1.5", r"distill_alpha must be in \[0, 1\], got 1.5"),
])  # fmt: skip
def test_bad_parameters_are_refused(spec, message):
    with pytest.raises(recipes.RecipeError, match=message):
        recipes.parse(spec)
