# empsync — the commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help venv servers test unit lint format bench faults soak demo clean

help:
	@echo "make demo    the whole system on a local emulator, in the console"
	@echo "make test    lint, unit and integration tests (starts its own servers)"
	@echo "make bench   benchmarks, printed as JSON"
	@echo "make faults  the fault-injection suite at full size"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# The integration tests need MariaDB's and PostgreSQL's server binaries and the Firestore
# emulator (Java + the Google Cloud CLI component); they start all three themselves.
servers:
	@.ci/servers.sh

# ruff; the import contracts of pyproject.toml (core knows no screen, core's layers); mypy (strict on core/).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The fast tier starts no server, so it runs on two workers.
unit: $(STAMP)
	$(BIN)/python -m pytest -q -m "not integration" -n 2

# The unit tier on both cores, then the integration tests in one process: they share one
# emulator, MariaDB and PostgreSQL.
test: $(STAMP) servers lint
	$(BIN)/python -m pytest -q -m "not integration" -n 2
	$(BIN)/python -m pytest -q -m integration

bench: $(STAMP) servers
	$(BIN)/python -m bench

faults: $(STAMP) servers
	EMPSYNC_FAULTS_SIZE=full $(BIN)/python -m pytest -q tests/faults

soak: $(STAMP) servers
	$(BIN)/python -m bench.soak

demo: $(STAMP)
	$(BIN)/empsync demo

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .mypy_cache .hypothesis
