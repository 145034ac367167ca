VENV := .venv
PY := $(VENV)/bin/python
# Rebuilt when requirements.txt or setup.cfg changes (or .venv is missing).
STAMP := $(VENV)/.installed

.PHONY: venv study test test-slow lint bench fuzz clean

venv: $(STAMP)

$(STAMP): requirements.txt setup.cfg pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# The main job: the default study (cnn on mnist5k, every recipe) into runs/latest.
study: venv
	$(PY) -m experiments.study $(ARGS)

lint: venv
	$(VENV)/bin/ruff check tfcompress experiments tests
	$(VENV)/bin/ruff format --check tfcompress experiments tests

# Two pytest workers (one per core of the CI machine); each test file stays on one worker, so its
# module-scoped fixtures (a trained model, a study) are built once.
TEST_WORKERS ?= 2

# The long end-to-end runs (marked slow) are left out so that it stays under 10 minutes on 2 cores;
# `make test-slow` runs them, and so does `make bench` before its sections.
test: venv lint
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not slow" $(ARGS)

test-slow: venv
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m slow $(ARGS)

# Runs every section into benchmarks/<section>.json and renders BENCHMARKS.md from them (BUILD.md: how long).
bench: venv test-slow
	$(PY) -m experiments.bench

# The long fuzz run: 1,000 mutated .tflite and 1,000 mutated .npz files (a few minutes).
fuzz: venv
	$(PY) -m experiments.fuzz --tflite_cases=1000 --npz_cases=1000

clean:
	rm -rf runs .pytest_cache .ruff_cache
