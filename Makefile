# arvo-service developer commands. `make run` and `make test` install first when needed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# Coverage of the Arvo primitives is reported on every test run (issue bar: >= 90 %).
COVERAGE_ARGS ?= --cov=service/arvo --cov-report=term:skip-covered --cov-fail-under=90

.PHONY: install test lint bench run fault-test clean

install: $(STAMP)

# Re-install only when the project definition or the pinned versions change.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade 'pip>=24' 2>/dev/null || true
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

test: install
	$(BIN)/python -m pytest $(COVERAGE_ARGS) $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check service contracts tests
	$(BIN)/ruff format --check service contracts tests
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: install
	$(BIN)/python -m tests.benchmarks

run: install
	$(BIN)/arvo demo

fault-test: install
	$(BIN)/python -m tests.fault.crash_test --workflows 300 --kills 5

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache tests/interop/*/node_modules
