# Common tasks in one word. Every target sets up .venv first (torch CPU wheel before anything that needs it).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: setup demo test test-slow test-all test-ray gpu-check bench lint clean

$(BIN)/privtune: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install "$(TORCH_SPEC)"
	$(BIN)/pip install -e ".[test]"
	touch $(BIN)/privtune

setup: $(BIN)/privtune

# The whole pipeline on the embedded model, offline (see README); re-running reuses the finished study in demo/.
demo: setup
	$(BIN)/privtune demo --out demo

test: setup
	$(BIN)/python -m pytest -m "not slow and not browser" -n 2 $(PYTEST_ARGS)

test-slow: setup
	$(BIN)/python -m pytest -m "slow" $(PYTEST_ARGS)

test-all: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Sweeps on a local Ray instance (2 CPUs, started and stopped by the tests); installs the optional `ray` extra.
test-ray: setup
	$(BIN)/pip install -e ".[ray]"
	$(BIN)/python -m pytest -m "ray" $(PYTEST_ARGS)

# On a machine with one NVIDIA GPU: the CUDA path end to end, one summary line per check (scripts/gpu_check.sh).
gpu-check:
	bash scripts/gpu_check.sh

bench: setup
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
