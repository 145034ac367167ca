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


def _noisy_predictions(test, seed, false_positives=6, tied=False):
    """Shifted boxes, some wrong labels and false positives at lower scores, as a trained detector's would be."""
    rng = np.random.default_rng(seed)
    predictions = []
    for boxes, labels in zip(test.boxes, test.labels, strict=True):
        shifted = boxes + rng.normal(0, 2.0, boxes.shape)
        labels = np.where(rng.random(len(labels)) < 0.1, (labels + 1) % 10, labels)
        corner = rng.uniform(0, 44, (false_positives, 2))
        spurious = np.concatenate([corner, corner + rng.uniform(10, 20, (false_positives, 2))], axis=1)
        scores = np.concatenate([rng.uniform(0.3, 1.0, len(boxes)), rng.uniform(0.01, 0.6, false_positives)])
        if tied:
            scores = np.round(scores * 16) / 16  # as few levels as an int8 output tensor: many ties across canvases
        predictions.append((np.concatenate([shifted, spurious]), scores,
                            np.concatenate([labels, rng.integers(0, 10, false_positives)])))  # fmt: skip
    return predictions


def test_resampled_map50_with_every_canvas_once_is_pycocotools_map50(sets):
    _, test = sets
    predictions = _noisy_predictions(test, seed=0, tied=True)
    scores, evaluation = detection._coco_eval(test, predictions)
    examples = detection.map50_examples(test, evaluation)
    assert 0.3 < scores["map50"] < 0.95  # neither perfect nor hopeless
    once = detection.resampled_map50(examples, np.ones((1, len(test.images))))
    assert once[0] == pytest.approx(scores["map50"], abs=1e-12)
    nothing = detection.map50_examples(test, None)  # nothing predicted: every draw scores 0, as coco_map does
    assert np.all(detection.resampled_map50(nothing, np.ones((2, len(test.images)))) == 0.0)


def test_resampled_map50_of_a_draw_is_pycocotools_map50_on_those_canvases(sets):
    _, test = sets
    predictions = _noisy_predictions(test, seed=1)  # untied scores: the ranking of copies is unambiguous
    examples = detection.map50_examples(test, detection._coco_eval(test, predictions)[1])
    counts = np.random.default_rng(2).multinomial(len(test.images), np.ones(len(test.images)) / len(test.images))
    drawn = np.repeat(np.arange(len(test.images)), counts)  # canvases drawn twice appear twice
    resample = detection.DetectionSet("drawn", test.images[drawn], [test.boxes[i] for i in drawn],
                                      [test.labels[i] for i in drawn], [test.sources[i] for i in drawn])  # fmt: skip
    expected = detection.coco_map(resample, [predictions[i] for i in drawn])["map50"]
    assert detection.resampled_map50(examples, counts[np.newaxis])[0] == pytest.approx(expected, abs=1e-12)


def test_a_detector_identical_to_fp32_has_a_zero_interval_and_a_worse_one_is_outside_the_noise(sets):
    from tfcompress import tasks

    _, test = sets
    task = tasks.get("detection")
    fp32 = detection.map50_examples(test, detection._coco_eval(test, _noisy_predictions(test, seed=0))[1])
    same = task.intervals(fp32, fp32, seed=0)
    assert same.delta.to_list() == [0.0, 0.0] and same.metric.low < same.metric.high
    worse = _noisy_predictions(test, seed=0)
    worse = [(boxes + 6.0, scores, labels) for boxes, scores, labels in worse]  # every box 6 px off: IoU drops
    intervals = task.intervals(detection.map50_examples(test, detection._coco_eval(test, worse)[1]), fp32, seed=0)
    assert intervals.delta.high < 0 and not intervals.delta.contains(0.0)  # in points of mAP@.5
