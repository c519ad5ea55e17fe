# arvo-service developer commands. `make run` and `make test` install first when needed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# Coverage of the Arvo primitives is reported on every test run (issue bar: >= 90 %).
COVERAGE_ARGS ?= --cov=service/arvo --cov-report=term:skip-covered --cov-fail-under=90

.PHONY: install test lint bench run fault-test clean up down logs publish docs validate-deploy mutation

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
	$(BIN)/ruff check service contracts tests tools
	$(BIN)/ruff format --check service contracts tests tools
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(MAKE) --no-print-directory validate-deploy

# Offline checks of the deployment files (docs/deploying.md, "Validation"): hadolint on the Dockerfile,
# docker-compose.yml against the Compose specification schema, then tests/deploy's static checks
# (Kubernetes manifests rendered and validated against the Kubernetes schemas, settings, docs).
validate-deploy: install
	$(BIN)/hadolint --config deploy/hadolint.yaml deploy/Dockerfile
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not e2e" tests/deploy

# Regenerate docs/configuration.md from the settings class.
docs: install
	$(BIN)/python -m tools.gen_config_docs

# The Docker path (needs Docker with the compose plugin): Kafka, Redis, Jaeger, the example services
# and a one-shot publisher of demo workflows. Jaeger: http://localhost:16686
COMPOSE ?= docker compose

up:
	$(COMPOSE) up --build --detach
	@echo "Started. Completions: '$(COMPOSE) logs publisher'; traces: http://localhost:16686; stop: make down"

down:
	$(COMPOSE) down --volumes --remove-orphans

logs:
	$(COMPOSE) logs --follow --tail=100

# Start the demo workflows again (the publisher is a one-shot container).
publish:
	$(COMPOSE) run --rm publisher

bench: install
	$(BIN)/python -m tests.benchmarks

run: install
	$(BIN)/arvo demo

# Mutation testing (not in CI): mutmut 3.8.1 (the `mutation` extra) against tests/unit, a fixed sample of
# 150 mutants per module; prints killed/survived/timeout, the score and the survivors' diffs.
# MODULES="service/x.py service/y.py::SomeClass" picks the modules (default: see tools/mutation.py);
# MUTATION_ARGS="--sample 50 --jobs 1" and the like are passed on (python -m tools.mutation --help).
mutation: install
	@$(BIN)/python -c 'import importlib.metadata as m; assert m.version("mutmut") == "3.8.1"' 2>/dev/null \
		|| $(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,mutation]'
	$(BIN)/python -m tools.mutation $(MUTATION_ARGS) $(MODULES)

# The crash test (tests/fault/crash_test.py): 300 bench workflows on two workers, a private broker and a
# private Redis, while FAULT hits them: worker-kill (kill -9 a worker, 5 times; the default),
# redis-restart (kill -9 Redis with AOF fsync always, 5 times), redis-outage (SIGSTOP Redis for longer
# than a record's retry budget, twice) or timers (kill -9 workers, 5 times, under 300 timer workflows of
# service.examples.timers: the unanswered half must time out, the answered half must not; the summary
# line adds late_timers_p99_ms, how late the timers fired). One summary line; exit 1 unless nothing is
# lost, divergent, non-identically duplicated, parked or dead-lettered.
# FAULT_ARGS="--seed 3 --redis-persistence everysec".
FAULT ?= worker-kill
FAULT_ARGS ?=
fault-test: install
	$(BIN)/python -m tests.fault.crash_test --fault $(FAULT) --workflows 300 $(FAULT_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache tests/interop/*/node_modules
