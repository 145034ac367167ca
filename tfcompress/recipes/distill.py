"""Knowledge distillation (Hinton et al., 2015) from the baseline into a smaller student, with a control.

The teacher is the model the recipe receives. The student is, by default, the
teacher narrowed by channel pruning (``keep_fraction`` of each conv's filters,
starting from the teacher's kept weights), or a Keras model file. The student
learns from

    alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(label, student)

with the teacher's logits computed once on the training split. T^2 keeps the
soft term's gradients on the scale of the hard one's as T grows.

Whether distillation helps is a question, not an assumption: the recipe also
trains an identical copy of the starting student (same weights, epochs, batch
size, seed, optimizer and training loop, alpha = 0) from labels alone and
reports both Keras test accuracies and their difference. The returned model is
the distilled student whatever the outcome.

Classification only: the models output class scores (logits or softmax
probabilities) for integer labels; other tasks are NotApplicable.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from tfcompress import loading, models, twin
from tfcompress._keras import keras, tf
from tfcompress.data import Dataset
from tfcompress.measure.evaluate import accuracy, top1
from tfcompress.recipes.base import Column, Kind, NotApplicable, Recipe, RecipeContext, Transformed, param, register
from tfcompress.recipes.channel_prune import KEEP_FRACTION_HELP, prune_channels
from tfcompress.recipes.training import FinetuneParams

# Probabilities are clipped before taking logs so that a saturated softmax gives finite logits.
_EPSILON = 1e-7


@dataclasses.dataclass(frozen=True)
class DistillParams(FinetuneParams):
    """Parameters of `distill` (and the training ones of FinetuneParams: epochs and Adam's learning rate).

    Attributes:
      keep_fraction: the default student keeps this fraction of the teacher's
        conv filters (channel pruning), in (0, 1]; unused when ``student`` is given.
      student: a Keras model file (.keras, .h5 or SavedModel folder) to use as
        the student, loaded in safe mode; '' means the narrowed teacher.
      temperature: the softening temperature T, above 0.
      distill_alpha: the weight of the soft (teacher) term, in [0, 1]; 0 is
        training from labels alone.
    """

    keep_fraction: float = param(0.5, KEEP_FRACTION_HELP, bounds=(1e-6, 1.0))
    student: str = param(
        "", "distill: a Keras model file to train as the student (default: the teacher narrowed to --keep_fraction).",
        path=True,
    )  # fmt: skip
    temperature: float = param(4.0, "distill: softmax temperature of the soft targets.", bounds=(1e-6, None))
    distill_alpha: float = param(0.5, "distill: weight of the teacher's soft targets (1 - it: the labels).",
                                 bounds=(0.0, 1.0))  # fmt: skip

    def __post_init__(self):
        super().__post_init__()
        if not 0 < self.keep_fraction <= 1:
            raise ValueError(f"keep_fraction must be in (0, 1], got {self.keep_fraction}.")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}.")
        if not 0 <= self.distill_alpha <= 1:
            raise ValueError(f"distill_alpha must be in [0, 1], got {self.distill_alpha}.")


@keras.utils.register_keras_serializable(package="tfcompress")
class DistillationLoss(keras.losses.Loss):
    """The distillation loss; y_true packs [label, teacher logits...] per example.

    Args:
      temperature: T of the soft term.
      alpha: the soft term's weight; the hard cross-entropy gets 1 - alpha.
      from_probabilities: whether the student outputs softmax probabilities
        (else logits).
    """

    def __init__(self, temperature: float = 4.0, alpha: float = 0.5, from_probabilities: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.temperature, self.alpha, self.from_probabilities = temperature, alpha, from_probabilities

    def call(self, y_true, y_pred):
        labels = tf.cast(y_true[:, 0], tf.int32)
        teacher = y_true[:, 1:]
        student = tf.math.log(tf.clip_by_value(y_pred, _EPSILON, 1.0)) if self.from_probabilities else y_pred
        hard = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, student)
        t = self.temperature
        teacher_log_p = tf.nn.log_softmax(teacher / t)
        soft = tf.reduce_sum(tf.exp(teacher_log_p) * (teacher_log_p - tf.nn.log_softmax(student / t)), axis=-1)
        return self.alpha * t * t * soft + (1.0 - self.alpha) * hard

    def get_config(self):
        return super().get_config() | {
            "temperature": self.temperature,
            "alpha": self.alpha,
            "from_probabilities": self.from_probabilities,
        }


def teacher_logits(teacher: keras.Model, x: np.ndarray) -> np.ndarray:
    """The teacher's logits in inference mode (log-probabilities if it outputs a softmax)."""
    out = models.predict_logits(teacher, x).astype(np.float32)
    return np.log(np.clip(out, _EPSILON, 1.0)) if models.outputs_probabilities(teacher) else out


def keras_accuracy(model: keras.Model, dataset: Dataset) -> float:
    """Top-1 accuracy of the Keras model on the test split."""
    return accuracy(top1(models.predict_logits(model, dataset.x_test)), dataset.y_test)


def _fit(student, dataset, targets, params: DistillParams, alpha: float, seed: int, batch_size: int, verbose: int):
    """The one training loop both the distilled student and the labels-only control go through."""
    keras.utils.set_random_seed(seed)
    loss = DistillationLoss(params.temperature, alpha, models.outputs_probabilities(student))
    student.compile(optimizer=keras.optimizers.Adam(params.finetune_learning_rate), loss=loss)
    y = np.concatenate([dataset.y_train.astype(np.float32)[:, None], targets], axis=1)
    start = time.perf_counter()
    student.fit(dataset.x_train, y, epochs=params.finetune_epochs, batch_size=batch_size, verbose=verbose)
    return time.perf_counter() - start


def compare_with_labels_only(
    teacher: keras.Model,
    student: keras.Model,
    dataset: Dataset,
    params: DistillParams,
    seed: int = 0,
    batch_size: int = 64,
    verbose: int = 0,
) -> tuple[keras.Model, keras.Model, dict]:
    """Distils one copy of ``student`` and trains another from labels alone, from the same weights.

    Both copies start from ``student``'s weights (which is left untouched) and
    go through the same training loop, seed, batch size, epochs and optimizer;
    only the loss's alpha differs (``params.distill_alpha`` vs 0).

    Returns:
      (distilled student, labels-only student, measurements): the Keras test
      accuracies of the teacher and of both students, their difference
      (``distill_gain``), and the training time of each.
    """
    _check_classifier(teacher, student, dataset)
    targets = teacher_logits(teacher, dataset.x_train)
    distilled, control = models.clone(student), models.clone(student)
    distill_s = _fit(distilled, dataset, targets, params, params.distill_alpha, seed, batch_size, verbose)
    control_s = _fit(control, dataset, targets, params, 0.0, seed, batch_size, verbose)
    distilled_accuracy, control_accuracy = keras_accuracy(distilled, dataset), keras_accuracy(control, dataset)
    report = {
        "finetune_s": distill_s,
        "labels_only_s": control_s,
        "teacher_keras_accuracy": keras_accuracy(teacher, dataset),
        "distill_keras_accuracy": distilled_accuracy,
        "labels_only_keras_accuracy": control_accuracy,
        "distill_gain": distilled_accuracy - control_accuracy,
    }
    return distilled, control, report


def _check_outputs(model: keras.Model, role: str) -> None:
    if len(model.outputs) != 1 or len(model.outputs[0].shape) != 2:
        raise NotApplicable(
            f"distill needs a classifier with one (batch, classes) output; the {role} outputs "
            + f"{[tuple(o.shape) for o in model.outputs]}."
        )


def _check_classifier(teacher: keras.Model, student: keras.Model, dataset: Dataset) -> None:
    _check_outputs(teacher, "teacher")
    _check_outputs(student, "student")
    if models.num_classes(student) != models.num_classes(teacher):
        raise NotApplicable(
            f"the student has {models.num_classes(student)} outputs but the teacher "
            + f"{models.num_classes(teacher)} classes; they must match."
        )
    if tuple(student.inputs[0].shape[1:]) != tuple(dataset.input_shape):
        raise NotApplicable(
            f"the student takes inputs {tuple(student.inputs[0].shape[1:])} but the data is {dataset.input_shape}."
        )
    labels = np.asarray(dataset.y_train)
    if labels.ndim != 1 or labels.dtype.kind not in "ui":
        raise NotApplicable(f"distill needs integer class labels; y_train is {labels.dtype} {labels.shape}.")


def make_student(teacher: keras.Model, params: DistillParams) -> keras.Model:
    """The starting student: the model file ``params.student``, else the teacher with fewer filters."""
    if params.student:
        student = loading.load_model(params.student, safe_mode=True)
        if loading.flavour(student) in ("saved_model", "tflite"):
            what = "a .tflite file" if loading.flavour(student) == "tflite" else "a SavedModel"
            raise NotApplicable(f"distill's student {params.student!r} is {what} without layers to train; "
                                + "give its .keras file.")  # fmt: skip
        if twin.is_keras3(student):
            try:
                return twin.build_twin(student)
            except twin.TwinError as e:
                raise NotApplicable(f"distill's Keras 3 student has no tf_keras twin to train: {e}") from None
        return student
    try:
        return prune_channels(teacher, params.keep_fraction)
    except NotApplicable as e:
        raise NotApplicable(
            f"distill's default student is the channel-pruned teacher, and {e} Give a student model file instead."
        ) from None


def distill(model: keras.Model, context: RecipeContext, params: DistillParams) -> Transformed:
    """Distils the model into a student and reports the labels-only control beside it."""
    if context.loss is not None:
        raise NotApplicable(
            "distill needs a classifier trained with class labels; this task has its own loss (not class scores)."
        )
    if context.dataset is None:
        raise ValueError("distill needs RecipeContext.dataset (the training data).")
    _check_outputs(model, "teacher")  # before building a student for it
    student = make_student(model, params)
    distilled, _, report = compare_with_labels_only(
        model, student, context.dataset, params, context.seed, context.batch_size, context.verbose
    )
    # "params" replaces the baseline's count in the row (and so bytes_per_param).
    return Transformed(distilled, report | {"params": int(distilled.count_params())})


register(
    Recipe(
        "distill",
        "knowledge distillation into a narrower student, beside a labels-only control",
        Kind.TRANSFORM,
        distill,
        DistillParams,
        "keep_fraction",
        columns=(
            Column("distill_keras_accuracy", "distilled acc (Keras)", ".4f"),
            Column("labels_only_keras_accuracy", "labels-only acc (Keras)", ".4f"),
        ),
    )
)
