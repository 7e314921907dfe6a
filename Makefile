# Grainery developer commands. `make demo` and `make test` are the two a new
# user runs; each creates .venv and installs what it needs on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
RUNTIME_STAMP := $(VENV)/.runtime-installed
DEV_STAMP     := $(VENV)/.dev-installed
BENCH_STAMP   := $(VENV)/.bench-installed

.PHONY: demo test chaos lint proto proto-check bench bench-quick clean node-deps

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "Python >= 3.10 required"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(RUNTIME_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(RUNTIME_STAMP) $@

$(BENCH_STAMP): pyproject.toml | $(DEV_STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

# KEEP=1: afterwards keep the cluster running and print the dashboard's URL (Ctrl-C stops).
demo: $(RUNTIME_STAMP)
	$(BIN)/python examples/demo.py $(if $(KEEP),--keep)

node-deps:
	@if command -v npm >/dev/null 2>&1 && [ -f tests/node/package.json ]; then \
	  cd tests/node && npm install --silent --no-audit --no-fund; \
	else echo "npm not found: the Node.js client test will be skipped"; fi

proto: $(DEV_STAMP)
	$(BIN)/python protos/generate.py

proto-check: $(DEV_STAMP)
	$(BIN)/python protos/generate.py --check

lint: $(DEV_STAMP)
	$(BIN)/ruff check grainery silo client tests examples bench protos
	$(BIN)/mypy

# The churn soak runs 60 s here (100 s in `make chaos`), to keep the suite under 10 minutes.
test: $(DEV_STAMP) node-deps proto-check lint
	GRAINERY_SOAK_SECONDS=$${GRAINERY_SOAK_SECONDS:-60} $(BIN)/python -m pytest -q

# The long chaos runs (smaller ones are part of `make test`): the cluster chaos run
# (GRAINERY_CHAOS_SEED=N replays a run's fault schedule; GRAINERY_CHAOS_SECONDS /
# GRAINERY_CHAOS_SILOS change its size), then 200 concurrent durable workflows while the
# silo where they wait is killed again and again.
chaos: $(DEV_STAMP)
	GRAINERY_CHAOS_SECONDS=$${GRAINERY_CHAOS_SECONDS:-240} $(BIN)/python -m pytest -q -s tests/chaos
	$(BIN)/python -m pytest -q -m soak tests/integration/test_durable_failover.py \
	  tests/integration/test_soak.py

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench.run

bench-quick: $(BENCH_STAMP)
	$(BIN)/python -m bench.run --quick

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
