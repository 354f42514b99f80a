# The two commands of the Quickstart: `make run` and `make test`. Both bootstrap .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint bench-relay bench clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "chatrelay needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the dependencies change. The first install builds llama-cpp-python
# from source (about 8 minutes on 2 cores); pip caches the wheel for every later install.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --progress-bar off -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/chatrelay serve

test: $(STAMP)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

bench-relay: $(STAMP)
	$(BIN)/python bench/relay_latency.py

# Side by side: the mock directly, nginx, chatrelay and LiteLLM (installed on first use into
# bench/.venv-litellm); results in bench/results/, tables and chart in docs/benchmarks.md.
bench: $(STAMP)
	$(BIN)/python bench/compare.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
