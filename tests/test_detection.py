"""Detection data composed from real digits, and COCO mAP through pycocotools."""

import numpy as np
import pytest

from tfcompress import detection


@pytest.fixture(scope="module")
def sets():
    return detection.load_mnist_detection(num_train=120, num_test=40, canvas=64, seed=0)


def test_boxes_lie_inside_the_canvas_and_cover_every_pasted_digit(sets):
    for s in sets:
        assert s.images.shape[1:] == (64, 64, 1)
        for image, boxes, labels in zip(s.images, s.boxes, s.labels, strict=True):
            assert 1 <= len(boxes) <= 4 and len(labels) == len(boxes)
            assert np.all(boxes[:, :2] >= 0) and np.all(boxes[:, 2:] <= 64)
            assert np.all(boxes[:, 2:] > boxes[:, :2])
            covered = np.zeros((64, 64), bool)
            for x0, y0, x1, y1 in boxes.astype(int):
                covered[y0:y1, x0:x1] = True
                assert image[y0:y1, x0:x1].max() > 0.1  # each box holds ink
            assert not np.any(image[..., 0][~covered] > 0.1)  # no ink outside every box


def test_train_and_test_canvases_use_distinct_source_digits(sets):
    import tfcompress.data as data_lib

    train, test = sets
    digits = data_lib.load_mnist5k(0)
    train_pixels = {digits.x_train[i].tobytes() for src in train.sources for i in src}
    test_pixels = {digits.x_test[i].tobytes() for src in test.sources for i in src}
    assert train_pixels and test_pixels and not train_pixels & test_pixels
    labels = np.concatenate(test.labels)
    np.testing.assert_array_equal(labels, np.concatenate([digits.y_test[src] for src in test.sources]))


def test_composition_is_seeded(sets):
    again = detection.load_mnist_detection(num_train=120, num_test=40, canvas=64, seed=0)
    np.testing.assert_array_equal(again[1].images, sets[1].images)
    other = detection.load_mnist_detection(num_train=10, num_test=40, canvas=64, seed=1)
    assert not np.array_equal(other[1].images, sets[1].images)


def test_perfect_predictions_score_one_and_none_score_zero(sets):
    _, test = sets
    perfect = [(b, np.ones(len(b)), lab) for b, lab in zip(test.boxes, test.labels, strict=True)]
    assert detection.coco_map(test, perfect) == {"map": 1.0, "map50": 1.0}
    empty = [(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64)) for _ in test.boxes]
    assert detection.coco_map(test, empty) == {"map": 0.0, "map50": 0.0}


def test_loose_boxes_pass_at_iou_half_but_not_across_thresholds(sets):
    _, test = sets
    loose = []
    for boxes, labels in zip(test.boxes, test.labels, strict=True):
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        grown = boxes + np.stack([-0.1 * w, -0.1 * h, 0.1 * w, 0.1 * h], axis=1)  # IoU 1/1.44 ~ 0.69
        loose.append((grown, np.ones(len(boxes)), labels))
    scores = detection.coco_map(test, loose)
    assert scores["map50"] == pytest.approx(1.0) and scores["map"] < 0.5


def test_wrong_labels_score_zero(sets):
    _, test = sets
    wrong = [(b, np.ones(len(b)), (lab + 1) % 10) for b, lab in zip(test.boxes, test.labels, strict=True)]
    assert detection.coco_map(test, wrong)["map50"] == 0.0
