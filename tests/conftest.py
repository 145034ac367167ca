"""Shared fixtures: tiny seeded models and data, built once per test session."""

import json
import os
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session", autouse=True)
def roof_cache(tmp_path_factory):
    """One folder of generated roof files (tfcompress.measure.roofs) for the whole test run, workers included."""
    folder = tmp_path_factory.getbasetemp().parent / "tfcompress-cache"
    os.environ["TFCOMPRESS_CACHE"] = str(folder)  # isolated study children inherit it
    return folder


@pytest.fixture(scope="session")
def digits():
    from tfcompress.data import load_digits

    return load_digits(seed=0)


@pytest.fixture(scope="session")
def tiny_cnn(digits):
    """A small CNN trained briefly on the 8x8 digits (about 95% test accuracy)."""
    from tfcompress.models import build_cnn, train

    model = build_cnn(digits.input_shape, digits.num_classes, filters=(8, 16, 16), seed=0)
    train(model, digits, epochs=15, seed=0, verbose=0)
    return model


@pytest.fixture(scope="session")
def calibration(digits):
    return digits.x_train[np.random.default_rng(0).choice(len(digits.x_train), 100, replace=False)]


def run_module(module: str, *args: str, cwd: str = ROOT, timeout: float = 300):
    """Runs `python -m module args...` as a user would; returns the CompletedProcess."""
    import subprocess

    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def study_cli(capsys, *args: str):
    """Runs experiments.study's main in this process (no TensorFlow start-up); returns (code, out, err).

    A flag that absl refuses returns code 1 and absl's message, as `app.run` would print and exit.
    """
    from absl import flags

    import experiments.study as script

    capsys.readouterr()
    flags.FLAGS.unparse_flags()
    try:
        flags.FLAGS(["study", *args])
    except flags.Error as e:
        return 1, "", f"FATAL Flags parsing error: {e}"
    code = script.main([])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def wrap_latency_worker(folder, monkeypatch, crash: str = "crash.tflite", hang: str = "hang.tflite") -> None:
    """The real latency worker, except that a file whose name ends with ``crash`` aborts it natively (SIGABRT)
    and one ending with ``hang`` never returns (for the measuring process's crash and time-out paths)."""
    from tfcompress.measure import latency

    script = os.path.join(str(folder), "latency_worker_for_test.py")
    with open(script, "w", encoding="utf-8") as f:
        f.write(f"""
import importlib.util, os, sys, time
spec = importlib.util.spec_from_file_location("w", {latency._WORKER!r})
w = importlib.util.module_from_spec(spec)
spec.loader.exec_module(w)
real = w._measure
def measure(path, *args, **kwargs):
    if path.endswith({crash!r}):
        os.abort()
    if path.endswith({hang!r}):
        time.sleep(600)
    return real(path, *args, **kwargs)
w._measure = measure
sys.exit(w.main(sys.argv))
""")
    monkeypatch.setattr(latency, "_WORKER", script)


def wait_for_rows(proc, out, rows: int = 2, timeout_s: float = 240) -> None:
    """Waits until the study process has written ``rows`` finished rows to OUT/results.json, or fails the test."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if len(json.loads((out / "results.json").read_text())["rows"]) >= rows:
                return
        except (FileNotFoundError, json.JSONDecodeError):
            pass  # not written yet (a partial file is never visible: writes are atomic)
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"the study never finished {rows} rows")
