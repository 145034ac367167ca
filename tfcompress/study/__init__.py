"""Studies: one model through many recipes, measured side by side, and what is built on them.

config.py       StudyConfig, MeasureOptions, RunOptions; from_flat (the script's flags)
runner.py       run(): the loop (baseline, executor, results.json after each row, reports)
job.py          one recipe job: preparation, pipeline, measurement of its .tflite, its resume key
executor.py     where jobs run: in process, or each in its own child process
cache.py        trained built-in models, shared transforms, the output folder
environment.py  the machine and versions a study records
results.py      Row, Results, results.json
report.py       tables, CSV, report.md, plots
overview.py     --task=all: every task's study and overview.md
sweep.py        the sparsity sweep
zoo.py          the latency zoo (tf_keras.applications with random weights)
bench.py        make bench: the sections of BENCHMARKS.md, each saved as benchmarks/<section>.json
bench_render.py BENCHMARKS.md rendered from those section documents (no TensorFlow)
cli.py          the study script's flags, generated from the recipe and task registries
"""

from tfcompress.study.config import MeasureOptions, RunOptions, StudyConfig, StudyError, from_flat
from tfcompress.study.environment import environment
from tfcompress.study.executor import Executor, InProcessExecutor, IsolatedExecutor
from tfcompress.study.runner import run

__all__ = [
    "Executor",
    "InProcessExecutor",
    "IsolatedExecutor",
    "MeasureOptions",
    "RunOptions",
    "StudyConfig",
    "StudyError",
    "environment",
    "from_flat",
    "run",
]
