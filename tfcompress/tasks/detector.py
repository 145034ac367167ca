"""The detector of the detection task: a small CenterNet-style model, its training targets, loss and decoding.

``build_detector`` makes a model whose one output holds a per-class center
heatmap and each center's box size and offset on a grid of stride 4;
``targets`` and ``DetectionLoss`` train it and ``decode`` turns its outputs
into boxes in numpy, outside the model, so that the model itself converts to
TFLite and compresses like any classifier. The canvases it is trained on
come from tfcompress.tasks.detection (a ``DetectionSet``: images, boxes, labels).

Boxes are (x0, y0, x1, y1) in pixels, x1 and y1 exclusive.
"""

from __future__ import annotations

import numpy as np

from tfcompress import data as data_lib
from tfcompress import models
from tfcompress._keras import keras, tf

# --- The detector: a CenterNet-style single-shot, anchor-free model -------------------------------------------------
#
# The model's one output (grid, grid, num_classes + 4) concatenates, per grid cell:
#   [0, C)       per-class center heatmap, sigmoid probabilities in [0, 1];
#   [C, C + 2)   box width and height in units of SIZE_UNIT pixels (digits are 8-32 px, so about 0.5-2);
#   [C + 2, C + 4) the center's sub-cell offset (x, y) in cells, sigmoid in [0, 1].
# Every channel lies in about [0, 2], so one int8 scale for the whole output tensor resolves the heatmap to
# about 0.01 and box sides to about 0.1 px.

STRIDE = 4  # canvas pixels per output grid cell
SIZE_UNIT = 16.0  # pixels per unit of the predicted box width and height
_HEATMAP_PRIOR = 0.01  # initial heatmap probability; keeps the focal loss sane at the start (CenterNet)


def _conv_bn_relu(x, filters: int, seed: int, name: str, dilation: int = 1):
    """A 3x3 Conv2D, BatchNormalization and ReLU: the pattern TFLite folds into one conv and TFMOT QAT quantizes."""
    x = keras.layers.Conv2D(
        filters,
        3,
        padding="same",
        dilation_rate=dilation,
        use_bias=False,
        kernel_initializer=keras.initializers.HeNormal(seed),
        name=name,
    )(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def build_detector(canvas: int = 64, num_classes: int = 10, seed: int = 0, width: int = 64) -> keras.Model:
    """A small CenterNet-style detector: one input, one output of all heads concatenated.

    Two conv + max-pool stages bring the canvas to a grid of stride 4; four 3x3
    convs there, the last two dilated 2 and 4, see about 75 px around each cell,
    enough to take in a whole digit. 1x1 convs give the heads. Each 3x3 conv is
    followed by BatchNormalization (folded into the conv on conversion) and ReLU;
    with only Conv2D, BatchNormalization after a conv, ReLU, MaxPooling2D and
    Concatenate, the model runs as TFLite builtins and TFMOT prunes and quantizes
    it as it is. At 64x64 with the defaults: 136k parameters, 40 M MACs.

    Args:
      canvas: the input side in pixels; a multiple of STRIDE.
      num_classes: heatmap channels.
      seed: seeds the initializers.
      width: channels of the convs on the grid.

    Returns:
      A Functional tf_keras model (canvas, canvas, 1) -> (canvas / 4, canvas / 4, num_classes + 4); see the
      layout above.

    Raises:
      ValueError: canvas is not a positive multiple of STRIDE, or num_classes < 1.
    """
    if canvas <= 0 or canvas % STRIDE:
        raise ValueError(f"canvas must be a positive multiple of {STRIDE}, got {canvas}.")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
    inputs = keras.Input((canvas, canvas, 1), name="canvas")
    x = _conv_bn_relu(inputs, 16, seed, "conv1")
    x = keras.layers.MaxPooling2D(name="pool1")(x)
    x = _conv_bn_relu(x, 32, seed + 1, "conv2")
    x = keras.layers.MaxPooling2D(name="pool2")(x)
    for i, dilation in enumerate((1, 1, 2, 4)):
        x = _conv_bn_relu(x, width, seed + 2 + i, f"grid{i + 1}", dilation)

    def head(filters, activation, name, bias=0.0):
        return keras.layers.Conv2D(
            filters,
            1,
            activation=activation,
            kernel_initializer=keras.initializers.GlorotUniform(seed + 10),
            bias_initializer=keras.initializers.Constant(bias),
            name=name,
        )(x)

    prior = float(-np.log((1 - _HEATMAP_PRIOR) / _HEATMAP_PRIOR))
    heatmap = head(num_classes, "sigmoid", "heatmap", prior)
    size = head(2, "relu", "size", 1.0)  # starts at 16 px, mid-range for the digits
    offset = head(2, "sigmoid", "offset")
    outputs = keras.layers.Concatenate(name="heads")([heatmap, size, offset])
    return keras.Model(inputs, outputs, name="detector")


def _gaussian(grid: int, cx: float, cy: float, sigma_x: float, sigma_y: float) -> np.ndarray:
    """A (grid, grid) Gaussian bump of height 1 at cell (cx, cy)."""
    xs = np.arange(grid, dtype=np.float32)
    gx = np.exp(-((xs - cx) ** 2) / (2 * sigma_x**2))
    gy = np.exp(-((xs - cy) ** 2) / (2 * sigma_y**2))
    return gy[:, np.newaxis] * gx[np.newaxis, :]


def targets(dset, stride: int = STRIDE) -> np.ndarray:
    """The training target of each canvas, laid out as the model's output plus a mask channel.

    Each box puts a Gaussian peak of 1.0 on its class's heatmap at its center cell
    (sigma a sixth of the box side in cells, at least half a cell; TTFNet's
    shape), and its size and sub-cell offset at that cell; the last channel is 1
    at object centers. Where two boxes share a center cell, the later one's size
    and offset win.

    Args:
      dset: the canvases and their boxes.
      stride: canvas pixels per grid cell.

    Returns:
      (N, grid, grid, num_classes + 5) float32.

    Raises:
      ValueError: the canvas side is not a multiple of the stride.
    """
    side = dset.images.shape[1]
    if side % stride:
        raise ValueError(f"The canvas side {side} is not a multiple of the stride {stride}.")
    grid, c = side // stride, dset.num_classes
    out = np.zeros((len(dset.images), grid, grid, c + 5), np.float32)
    for n, (boxes, labels) in enumerate(zip(dset.boxes, dset.labels, strict=True)):
        for (x0, y0, x1, y1), label in zip(boxes, labels, strict=True):
            cx, cy = (x0 + x1) / 2 / stride, (y0 + y1) / 2 / stride
            ix, iy = min(int(cx), grid - 1), min(int(cy), grid - 1)
            w, h = (x1 - x0) / stride, (y1 - y0) / stride
            peak = _gaussian(grid, ix, iy, max(w / 6, 0.5), max(h / 6, 0.5))
            out[n, ..., label] = np.maximum(out[n, ..., label], peak)
            out[n, iy, ix, c : c + 5] = [(x1 - x0) / SIZE_UNIT, (y1 - y0) / SIZE_UNIT, cx - ix, cy - iy, 1.0]
    return out


@keras.utils.register_keras_serializable(package="tfcompress")
class DetectionLoss(keras.losses.Loss):
    """CenterNet's loss: penalty-reduced focal loss on the heatmap, L1 on size and offset at object centers.

    Takes targets as made by ``targets`` (the output's channels plus a center
    mask) and the model's outputs; each canvas's loss is divided by its number of
    objects.

    Args:
      size_weight: weight of the L1 size loss (sizes in SIZE_UNIT pixels).
      offset_weight: weight of the L1 offset loss (offsets in cells).
      alpha: focal exponent on the prediction's error.
      beta: exponent of the penalty reduction near centers.
    """

    def __init__(
        self,
        size_weight: float = 1.0,
        offset_weight: float = 1.0,
        alpha: float = 2.0,
        beta: float = 4.0,
        name: str = "detection_loss",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        self.size_weight, self.offset_weight = float(size_weight), float(offset_weight)
        self.alpha, self.beta = float(alpha), float(beta)

    def call(self, y_true, y_pred):
        y_true = tf.cast(y_true, y_pred.dtype)
        c = y_pred.shape[-1] - 4
        truth, mask = y_true[..., :c], y_true[..., -1:]
        p = tf.clip_by_value(y_pred[..., :c], 1e-4, 1.0 - 1e-4)
        is_center = tf.cast(truth >= 1.0 - 1e-6, p.dtype)
        positive = is_center * tf.pow(1.0 - p, self.alpha) * tf.math.log(p)
        negative = (1.0 - is_center) * tf.pow(1.0 - truth, self.beta) * tf.pow(p, self.alpha) * tf.math.log(1.0 - p)
        focal = -tf.reduce_sum(positive + negative, axis=[1, 2, 3])
        error = tf.abs(y_pred[..., c:] - y_true[..., c : c + 4]) * mask
        size = tf.reduce_sum(error[..., :2], axis=[1, 2, 3])
        offset = tf.reduce_sum(error[..., 2:], axis=[1, 2, 3])
        count = tf.maximum(tf.reduce_sum(mask, axis=[1, 2, 3]), 1.0)
        return (focal + self.size_weight * size + self.offset_weight * offset) / count

    def get_config(self):
        config = super().get_config()
        config.update(size_weight=self.size_weight, offset_weight=self.offset_weight, alpha=self.alpha, beta=self.beta)
        return config


def _local_max(heatmap: np.ndarray) -> np.ndarray:
    """3x3 max pooling (stride 1, 'same') over the two grid axes of (N, H, W, C)."""
    padded = np.pad(heatmap, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    h, w = heatmap.shape[1:3]
    return np.max([padded[:, dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)], axis=0)


def decode(
    outputs: np.ndarray, max_detections: int = 20, score_threshold: float = 0.01, stride: int = STRIDE
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Detections from the model's outputs: heatmap peaks (3x3 local maxima), top-k, boxes in canvas pixels.

    The local-maximum test stands in for NMS, as in CenterNet.

    Args:
      outputs: (N, grid, grid, num_classes + 4) model outputs (the first num_classes + 4 channels of a
        target tensor also decode).
      max_detections: the most detections kept per canvas, by score.
      score_threshold: peaks scoring below this are dropped.
      stride: canvas pixels per grid cell.

    Returns:
      Per canvas, (boxes (k, 4) float32 as x0, y0, x1, y1 clipped to the canvas; scores (k,); labels (k,) int64).

    Raises:
      ValueError: outputs is not (N, grid, grid, C + 4) with C >= 1.
    """
    outputs = np.asarray(outputs, np.float32)
    if outputs.ndim != 4 or outputs.shape[-1] < 5:
        raise ValueError(f"outputs must be (N, grid, grid, num_classes + 4), got shape {outputs.shape}.")
    c = outputs.shape[-1] - 4
    heatmap = outputs[..., :c]
    peaks = (heatmap == _local_max(heatmap)) & (heatmap >= score_threshold)
    grid_h, grid_w = heatmap.shape[1:3]
    results = []
    for n in range(len(outputs)):
        ys, xs, labels = np.nonzero(peaks[n])
        scores = heatmap[n, ys, xs, labels]
        keep = np.argsort(-scores, kind="stable")[:max_detections]
        ys, xs, labels, scores = ys[keep], xs[keep], labels[keep], scores[keep]
        w, h, dx, dy = (outputs[n, ys, xs, c + i] for i in range(4))
        cx, cy = (xs + dx) * stride, (ys + dy) * stride
        w, h = w * SIZE_UNIT, h * SIZE_UNIT
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1).reshape(-1, 4)
        boxes = np.clip(boxes, 0, [grid_w * stride, grid_h * stride] * 2).astype(np.float32)
        results.append((boxes, scores.astype(np.float32), labels.astype(np.int64)))
    return results


def as_dataset(train, test) -> data_lib.Dataset:
    """The canvases as a Dataset for ``models.train``: x the images, y their ``targets``."""
    if train.num_classes != test.num_classes:
        raise ValueError(f"train has {train.num_classes} classes but test has {test.num_classes}; they must match.")
    return data_lib.Dataset(
        train.name.removesuffix("_train"),
        train.images,
        targets(train),
        test.images,
        targets(test),
        train.num_classes,
    )


def train_detector(
    model: keras.Model,
    dataset: data_lib.Dataset,
    epochs: int,
    seed: int = 0,
    verbose: int = 0,
    batch_size: int = 64,
    learning_rate: float = 6e-3,
) -> float:
    """Trains a detector in place with Adam and DetectionLoss; returns the wall time in seconds.

    Args:
      model: a model from ``build_detector`` (or one with its output layout).
      dataset: from ``as_dataset``: canvases and their ``targets``.
      epochs: passes over the training canvases.
      seed: seeds the shuffling and anything else random in training.
      verbose: Keras' fit verbosity.
      batch_size: canvases per step.
      learning_rate: Adam's constant rate; 6e-3 beat 3e-3 and 1e-2 over 10 epochs on 3,000 canvases, and a
        cosine decay gained nothing.
    """
    return models.train(
        model,
        dataset,
        epochs=epochs,
        seed=seed,
        batch_size=batch_size,
        learning_rate=learning_rate,
        verbose=verbose,
        loss=DetectionLoss(),
    )
