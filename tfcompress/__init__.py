"""tfcompress: compress a Keras model many ways, export each to .tflite, measure them side by side.

Everything the scripts do is callable from here::

    import tfcompress as tfc
    tflite = tfc.convert(model, tfc.Quantization.INT8, calibration_data=x[:200])
    acc = tfc.accuracy(tfc.top1(tfc.run_tflite(tflite, x_test)), y_test)
    stats = tfc.measure_latency("model.tflite", threads=1)
    results = tfc.run_study(tfc.StudyConfig(recipes=("fp32", "int8")))
"""

from tfcompress import catalog  # noqa: F401  (registers every recipe)
from tfcompress._keras import keras, tf
from tfcompress.benchmark import LatencyError, LatencyStats, measure_latency
from tfcompress.convert import Quantization, convert
from tfcompress.data import (
    DataError,
    Dataset,
    check_fits,
    load_dataset,
    load_digits,
    load_image_folder,
    load_mnist5k,
    load_npz,
)
from tfcompress.evaluate import accuracy, run_tflite, top1
from tfcompress.graph import weight_stats
from tfcompress.models import ModelError, build_cnn, load_model, train
from tfcompress.recipes import (
    Compressed,
    Kind,
    NotApplicable,
    Pipeline,
    Recipe,
    RecipeContext,
    RecipeError,
    Transformed,
    parse,
    parse_recipes,
    register,
    register_alias,
)
from tfcompress.recipes import get as get_recipe
from tfcompress.recipes import names as recipe_names
from tfcompress.recipes import run as run_pipeline
from tfcompress.report import format_table
from tfcompress.results import Results, Row, Status
from tfcompress.results import load as load_results
from tfcompress.study import StudyConfig, StudyError
from tfcompress.study import run as run_study

__version__ = "0.1.0"

__all__ = [
    "Compressed",
    "Kind",
    "NotApplicable",
    "Pipeline",
    "Transformed",
    "parse",
    "register_alias",
    "run_pipeline",
    "weight_stats",
    "DataError",
    "Dataset",
    "LatencyError",
    "LatencyStats",
    "ModelError",
    "Quantization",
    "Recipe",
    "RecipeContext",
    "RecipeError",
    "Results",
    "Row",
    "Status",
    "StudyConfig",
    "StudyError",
    "accuracy",
    "build_cnn",
    "check_fits",
    "convert",
    "format_table",
    "get_recipe",
    "keras",
    "load_dataset",
    "load_digits",
    "load_image_folder",
    "load_mnist5k",
    "load_model",
    "load_npz",
    "load_results",
    "measure_latency",
    "parse_recipes",
    "recipe_names",
    "register",
    "run_study",
    "run_tflite",
    "tf",
    "top1",
    "train",
]
