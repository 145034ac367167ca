"""tfcompress: compress a Keras model many ways, export each to .tflite, measure them side by side.

Everything the scripts do is callable from here::

    import tfcompress as tfc
    tflite = tfc.convert(model, tfc.Quantization.INT8, calibration_data=x[:200])
    acc = tfc.accuracy(tfc.top1(tfc.run_tflite(tflite, x_test)), y_test)
    stats = tfc.measure_latency("model.tflite", threads=1)
    results = tfc.run_study(tfc.StudyConfig(recipes=("fp32", "int8")))
    results = tfc.run_study(tfc.StudyConfig(recipes=("fp32", "int8")), model=my_model, dataset=my_data)

The package: ``recipes/`` (what a recipe is, one module per family),
``tasks/`` (what a task is, one module per family), ``measure/`` (metric on
the .tflite, latency, MACs, the .tflite graph), ``study/`` (config, the loop,
executors, results, reports), ``advise/`` (the advisor: limits in, the file to ship out), ``data.py`` and
``models.py``.
"""

from tfcompress._keras import keras, tf
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
from tfcompress.fields import Column, param
from tfcompress.loading import load_model
from tfcompress.measure.evaluate import accuracy, run_tflite, top1
from tfcompress.measure.latency import LatencyError, LatencyStats, measure_latency
from tfcompress.measure.rounds import Timing, interleaved
from tfcompress.measure.tflite_graph import weight_stats
from tfcompress.models import ModelError, build_cnn, train
from tfcompress.recipes import (
    Compressed,
    ExportBackend,
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
    register_backend,
)
from tfcompress.recipes import get as get_recipe
from tfcompress.recipes import names as recipe_names
from tfcompress.recipes import run as run_pipeline
from tfcompress.recipes.converter import Quantization, convert
from tfcompress.study import Executor, MeasureOptions, RunOptions, StudyConfig, StudyError, from_flat
from tfcompress.study import run as run_study
from tfcompress.study.report import format_table
from tfcompress.study.results import Results, Row, Status
from tfcompress.study.results import load as load_results
from tfcompress.twin import TwinError, build_twin, register_twin

__version__ = "0.2.0"

__all__ = [
    "Column",
    "Compressed",
    "DataError",
    "Dataset",
    "Executor",
    "ExportBackend",
    "Kind",
    "LatencyError",
    "LatencyStats",
    "MeasureOptions",
    "ModelError",
    "NotApplicable",
    "Pipeline",
    "Quantization",
    "Recipe",
    "RecipeContext",
    "RecipeError",
    "Results",
    "Row",
    "RunOptions",
    "Status",
    "StudyConfig",
    "StudyError",
    "Transformed",
    "accuracy",
    "build_cnn",
    "check_fits",
    "convert",
    "format_table",
    "from_flat",
    "get_recipe",
    "keras",
    "load_dataset",
    "load_digits",
    "load_image_folder",
    "load_mnist5k",
    "load_model",
    "register_twin",
    "build_twin",
    "TwinError",
    "load_npz",
    "load_results",
    "measure_latency",
    "interleaved",
    "Timing",
    "param",
    "parse",
    "parse_recipes",
    "recipe_names",
    "register",
    "register_alias",
    "register_backend",
    "run_pipeline",
    "run_study",
    "run_tflite",
    "tf",
    "top1",
    "train",
    "weight_stats",
]
