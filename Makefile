# The two commands: `make run` (try it) and `make test` (the whole suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Every dependency, the [test] extra, pip and setuptools, pinned with hashes
# (README, "Dependencies" says how to update it).
LOCK := requirements/lock.txt
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml $(LOCK) | cksum | cut -d' ' -f1)

.PHONY: run test test-fast lint format bench setup clean

# Exactly what the lock file says, every file checked against its hash; then
# the project itself, built with the locked setuptools (no build isolation, so
# nothing unhashed is fetched).
$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	rm -f $(VENV)/.installed-*
	touch $@

setup: $(STAMP)

## Serve the dashboard with the simulators and a worker on http://127.0.0.1:8000 (demo / demo).
run: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash bin/run-dev

## The whole suite: unit, integration against the simulators, and browser tests.
test: $(STAMP)
	bash bin/ensure-chromium
	PYTHON=$(BIN)/python bash bin/run-tests $(PYTEST_ARGS)

## Everything but the browser and slow tests.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -n 2 -m "not shared_db and not slow" $(PYTEST_ARGS)

## Style, and the arrows of the layout (import-linter contracts in pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var .pytest_cache
