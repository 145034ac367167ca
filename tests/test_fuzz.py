"""Mutated .tflite and .npz files never take the tool down (a bounded run; `make fuzz` runs 1,000 of each)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tfcompress import fuzzing as fuzz


@pytest.fixture(scope="module")
def tflite_seeds():
    return fuzz.seed_tflite_files()


@pytest.fixture(scope="module")
def npz_seed(tmp_path_factory):
    return fuzz.seed_npz_file(str(tmp_path_factory.mktemp("npz")))


_SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture], derandomize=True)


@settings(max_examples=25, **_SETTINGS)
@given(seed=st.integers(0, 2**32 - 1), which=st.integers(0, 1))
def test_mutated_tflite_never_crashes_the_parent(tflite_seeds, tmp_path, seed, which):
    _, data = fuzz.mutate(tflite_seeds[which], np.random.default_rng(seed))
    outcome = fuzz.fuzz_tflite_case(str(tmp_path / "case.tflite"), data)
    assert outcome == "ok" or outcome.startswith("error: child")  # we are still here: the parent survived


@settings(max_examples=150, **_SETTINGS)
@given(seed=st.integers(0, 2**32 - 1))
def test_mutated_npz_gives_data_or_a_data_error(npz_seed, tmp_path, seed):
    _, data = fuzz.mutate(npz_seed, np.random.default_rng(seed))
    assert fuzz.fuzz_npz_case(str(tmp_path / "case.npz"), data) in ("ok", "error: DataError")


def test_mutations_change_the_bytes(tflite_seeds):
    rng = np.random.default_rng(0)
    kinds = set()
    for _ in range(60):
        kind, data = fuzz.mutate(tflite_seeds[0], rng)
        kinds.add(kind)
        assert data != tflite_seeds[0] or kind == "duplicate_span"
    assert kinds == set(fuzz.MUTATIONS)
