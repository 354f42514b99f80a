# The two commands of the Quickstart: `make run` and `make test`. Both bootstrap .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test test-unit lint bench-relay bench clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "chatrelay needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)

# llama.cpp is built for any x86-64 with AVX2 (GGML_NATIVE=OFF), not tuned to this CPU: a
# build tuned to a CPU with AMX dies (SIGSEGV in its first multi-token batch) in VMs that
# report AMX without enabling it, and pip's wheel cache would hand such a build on to other
# machines. So the portable wheel is built once (about 8 minutes on 2 cores, never with pip's
# cache) into $(WHEELS) and installed from there.
WHEELS ?= $(HOME)/.cache/chatrelay/wheels-portable
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF
# As in pyproject.toml: the highest wheel in $(WHEELS) that satisfies it is installed, and one
# is built only when none does (so raising the bound there means raising it here too).
LLAMA := llama-cpp-python>=0.3.2
PIP := $(BIN)/python -m pip
INSTALL_LLAMA := $(PIP) install --no-deps --force-reinstall --no-index --find-links $(WHEELS) '$(LLAMA)'

# Reinstall when the dependencies or this recipe change.
$(STAMP): pyproject.toml Makefile | $(BIN)/python
	$(PIP) install --quiet --upgrade pip
	$(INSTALL_LLAMA) --quiet 2>/dev/null || { \
		CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) wheel --progress-bar off --no-deps \
			--no-cache-dir --no-binary llama-cpp-python -w $(WHEELS) '$(LLAMA)' && \
		$(INSTALL_LLAMA); }
	$(PIP) install --progress-bar off -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/chatrelay serve

# The JavaScript the browser tests import (tests/js: the openai package), reinstalled when its
# lock changes. Without npm (or the registry) those tests skip outside CI: `make test` runs on.
JS_STAMP := tests/js/node_modules/.package-lock.json
$(JS_STAMP): tests/js/package-lock.json
	cd tests/js && npm ci --no-audit --no-fund

# In parallel (pytest-xdist): most tests wait on sockets, so four workers keep two cores
# busy. Each test has its own port, database, Redis prefix and files (tests/conftest.py); the
# tests that start the real llama.cpp server share one worker (--dist loadgroup).
TEST_WORKERS ?= 4
test: $(STAMP)
	@command -v npm >/dev/null 2>&1 && $(MAKE) --no-print-directory $(JS_STAMP) || \
		echo "tests/js not installed (npm ci): the tests that need it will skip"
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup

# The pure parts on their own (tests/unit/: no sockets, no databases, no browser): seconds,
# in one process (starting workers would take longer than the tests).
test-unit: $(STAMP)
	$(BIN)/pytest tests/unit

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

bench-relay: $(STAMP)
	$(BIN)/python bench/relay_latency.py

# Side by side: the mock directly, nginx, chatrelay and LiteLLM (installed on first use into
# bench/.venv-litellm); results in bench/results/ (out of git unless cited), tables and chart
# in docs/benchmarks.md.
bench: $(STAMP)
	$(BIN)/python bench/compare.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
