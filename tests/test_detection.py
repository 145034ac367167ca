"""Detection data composed from real digits, and COCO mAP through pycocotools."""

import numpy as np
import pytest

from tfcompress.tasks import detection, detector


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


def test_targets_decode_back_to_the_ground_truth_boxes(sets):
    _, test = sets
    target = detector.targets(test)
    assert target.shape == (len(test.images), 16, 16, 10 + 5)
    assert target[..., -1].sum() == sum(len(b) for b in test.boxes)  # one center per box
    perfect = detector.decode(target[..., :-1])  # the target without its mask is a perfect output
    assert detection.coco_map(test, perfect) == {"map": 1.0, "map50": 1.0}
    np.testing.assert_allclose(np.sort(perfect[0][0], axis=0), np.sort(test.boxes[0], axis=0), atol=1e-4)


def test_decode_keeps_one_peak_per_blob_and_respects_threshold_and_top_k():
    outputs = np.zeros((1, 16, 16, 14), np.float32)
    outputs[0, 4:7, 4:7, 3] = 0.5
    outputs[0, 5, 5, 3] = 0.9  # one peak with lower neighbours: one detection
    outputs[0, 12, 12, 7] = 0.3
    outputs[0, 5, 5, 10:14] = [1.0, 2.0, 0.5, 0.5]  # 16 x 32 px box centred at (22, 22)
    boxes, scores, labels = detector.decode(outputs)[0]
    np.testing.assert_allclose(scores, [0.9, 0.3])
    np.testing.assert_array_equal(labels, [3, 7])
    np.testing.assert_allclose(boxes[0], [14, 6, 30, 38])
    assert len(detector.decode(outputs, score_threshold=0.5)[0][0]) == 1
    assert len(detector.decode(outputs, max_detections=1)[0][0]) == 1


def test_decode_rejects_outputs_without_the_box_channels():
    with pytest.raises(ValueError, match=r"\(1, 16, 16, 4\)"):
        detector.decode(np.zeros((1, 16, 16, 4)))


def test_detector_has_one_input_one_output_and_converts_to_a_matching_tflite(sets):
    from tfcompress.measure.evaluate import run_tflite
    from tfcompress.recipes.converter import Quantization, convert

    model = detector.build_detector(canvas=64, num_classes=10, seed=0)
    assert len(model.inputs) == 1 and len(model.outputs) == 1
    assert tuple(model.input_shape) == (None, 64, 64, 1)
    assert tuple(model.output_shape) == (None, 16, 16, 14)
    x = sets[1].images[:8]
    tflite = run_tflite(convert(model, Quantization.FP32), x)
    np.testing.assert_allclose(tflite, model.predict(x, verbose=0), atol=1e-4)


def test_build_detector_rejects_a_canvas_off_the_stride():
    with pytest.raises(ValueError, match="62"):
        detector.build_detector(canvas=62)


def test_loss_is_small_for_a_perfect_output_and_counts_size_errors_per_object(sets):
    target = detector.targets(sets[1])[:4]
    perfect_output = target[..., :-1]
    loss = detector.DetectionLoss()
    perfect = float(loss(target, perfect_output))
    assert perfect < 0.1  # the focal loss is not quite zero on the Gaussian slopes
    assert float(loss(target, np.full(perfect_output.shape, 0.5, np.float32))) > 10 * perfect
    wrong_size = perfect_output.copy()
    wrong_size[..., 10:12] += 0.25  # everywhere, but only object centers count: 2 sides x 0.25 per object
    assert float(loss(target, wrong_size)) == pytest.approx(perfect + 0.5, abs=1e-4)
    again = detector.DetectionLoss.from_config(loss.get_config())
    assert again.size_weight == loss.size_weight and again.beta == loss.beta


def test_briefly_trained_tiny_detector_finds_the_digits():
    """Class-agnostic (one class) so that a few seconds of training are enough to mean something."""
    import dataclasses

    def one_class(s):
        return dataclasses.replace(s, labels=[np.zeros_like(lab) for lab in s.labels], num_classes=1)

    train, test = (one_class(s) for s in detection.load_mnist_detection(num_train=256, num_test=40, seed=0))
    model = detector.build_detector(num_classes=1, seed=0, width=16)
    untrained = detection.coco_map(test, detector.decode(model.predict(test.images, verbose=0)))["map50"]
    detector.train_detector(model, detector.as_dataset(train, test), epochs=6, seed=0, batch_size=16)
    trained = detection.coco_map(test, detector.decode(model.predict(test.images, verbose=0)))["map50"]
    assert untrained < 0.05 and trained > 0.4  # measured 0.001 and 0.68
