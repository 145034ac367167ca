"""The one place that chooses Keras 2 (tf_keras) for the whole package.

TFMOT only works with Keras 2 models, and TensorFlow picks the Keras version
when it is first imported, so the environment variable must be set before that
import. Every other module does ``from tfcompress._keras import keras, tf``.
"""

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
# Quiet TensorFlow's C++ start-up chatter (oneDNN, CUDA probes); errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

# The converter logs every SavedModel it writes at INFO; keep warnings and errors.
tf.get_logger().setLevel("WARNING")

__all__ = ["keras", "tf"]
