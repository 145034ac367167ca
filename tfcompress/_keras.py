"""The one place that chooses Keras 2 (tf_keras) for the whole package, and imports TensorFlow quietly.

TFMOT only works with Keras 2 models, and TensorFlow picks the Keras version
when it is first imported, so the environment variable must be set before that
import. Every other module does ``from tfcompress._keras import keras, tf``.
(Keras 3, ``import keras``, stays importable in the same process: the users'
own models are read with it, see tfcompress.loading.)

TensorFlow's native libraries print start-up lines on a CPU machine (oneDNN,
CUDA driver and cuInit probes, CPU-feature hints, absl's pre-init notice)
that ``TF_CPP_MIN_LOG_LEVEL`` does not silence, because they are written
while the libraries load. The import therefore runs with standard error
captured, and every captured line that is not one of those notices is
written back, so real errors still show.
"""

import os
import re

from tfcompress._process import quiet_stderr

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The notices a CPU-only TensorFlow prints while it loads and probes for GPUs.
START_UP_NOISE = re.compile(
    r"All log messages before absl::InitializeLog|oneDNN custom operations are on"
    + r"|Could not find cuda drivers|failed call to cuInit|cpu_feature_guard|To enable the following instructions"
    + r"|rebuild TensorFlow with the appropriate compiler flags|Unable to register cu(DNN|FFT|BLAS) factory"
    + r"|computation placer already registered|TF-TRT Warning"
)

with quiet_stderr(START_UP_NOISE):
    import tensorflow as tf
    import tf_keras as keras

    tf.config.list_physical_devices("GPU")  # the CUDA probe (cuInit) happens here, inside the capture

# The converter logs every SavedModel it writes at INFO; keep warnings and errors.
tf.get_logger().setLevel("WARNING")

__all__ = ["keras", "tf"]
