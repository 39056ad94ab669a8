# The two commands of the README. Both install what they need into ./.venv first.
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test test-unit install install-test lint lint-imports typecheck

install:
	./scripts/install.sh

install-test:
	./scripts/install.sh --test

## Build mini-Qwen if missing, harvest it, serve it.
demo: install
	$(BIN)/qscope demo

## Run the whole test suite (lint, format, layer contracts and types included), offline.
test: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check app tests scripts
	$(MAKE) lint-imports
	$(MAKE) typecheck
	$(BIN)/pytest -q

## The inner loop: the unit tier only (tests/unit: no model build, about a minute).
test-unit: install-test
	$(BIN)/pytest -q tests/unit

lint:
	$(BIN)/ruff check .

## The layer rule: the import-linter contracts in pyproject.toml.
lint-imports:
	$(BIN)/lint-imports

## mypy over the package app/qscope (pyproject.toml's [tool.mypy] names app/ as its source root).
typecheck:
	$(BIN)/python -m mypy -p qscope
