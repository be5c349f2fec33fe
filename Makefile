# Two commands: `make run` (everything, embedded: SQLite + filesystem broker) and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install lint format bench bench-throughput bench-load drills clean

$(STAMP): requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is needed, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	@touch $@

install: $(STAMP)

run: install
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	$(BIN)/python manage.py bootstrap
	@exec bash platform/run-embedded.sh

test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install
	$(BIN)/python bench/learning_loop.py

# Platform vs the model's own pipeline, both modes (needs PostgreSQL on 127.0.0.1 and redis-server).
bench-throughput: install
	$(BIN)/python bench/throughput.py

bench-load: install
	$(BIN)/python bench/load.py

# Fault drills on the production roles: worker SIGKILL mid-batch, broker outages, database cuts.
drills: install
	$(BIN)/python bench/drills.py

clean:
	rm -rf var staticfiles .pytest_cache .ruff_cache
