# gpufleet on a fresh machine:  make run   (starts web, worker and agent; Ctrl-C stops all)
#                               make test  (lint, the suite on SQLite, then on PostgreSQL + Redis)
SHELL := /bin/bash
.DEFAULT_GOAL := run

PYTHON ?= python3.11
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
PY := $(BIN)/python

GPUFLEET_HOST ?= 127.0.0.1
GPUFLEET_PORT ?= 8000
export GPUFLEET_HOST GPUFLEET_PORT
# The Procfile's commands (daphne, python) come from the virtualenv.
export PATH := $(BIN):$(PATH)

.PHONY: run test lint install

install: $(VENV)/.installed $(VENV)/.llama-cpp $(VENV)/.llama-server

$(PY):
	$(PYTHON) -m venv $(VENV)

# Stamp files: re-running make is quick when nothing changed.
$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

$(VENV)/.llama-cpp: scripts/install_llama_cpp.sh | $(VENV)/.installed
	bash scripts/install_llama_cpp.sh $(PY)
	touch $@

$(VENV)/.llama-server: scripts/install_llama_server.sh scripts/install_llama_cpp.sh | $(VENV)/.installed
	bash scripts/install_llama_server.sh $(PY)
	touch $@

run: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput --verbosity 0
	$(PY) manage.py bootstrap
	@echo "gpufleet: open http://$(GPUFLEET_HOST):$(GPUFLEET_PORT)/ and log in (Ctrl-C stops everything)"
	exec $(BIN)/honcho start -f Procfile

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy agent config core devtools inventory models_app scheduling gateway

# pytest exits 5 when it collected nothing: say so instead of a bare "Error 5".
test: install lint
	$(PY) -m pytest -m "not postgres" || { rc=$$?; [ $$rc -ne 5 ] || echo "pytest collected no tests" >&2; exit $$rc; }
	$(PY) scripts/cluster_tests.py
