# The two commands of the README. Both install what they need into ./.venv first.
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo demo-tiny test test-unit install install-test lint lint-imports typecheck

install:
	./scripts/install.sh

install-test:
	./scripts/install.sh --test

## Build mini-Qwen if missing, harvest it, serve it. Its first line says how long, and names the quick path.
demo:
	@echo "make demo: builds mini-Qwen (about 8 minutes on a quiet CPU, much longer on a busy one), harvests it and serves it; for a first look in about a minute: make demo-tiny"
	@$(MAKE) --no-print-directory install
	$(BIN)/qscope demo

## The same with the tiny build (a smaller model and SAEs, a shorter harvest): a first look in about a minute.
demo-tiny:
	@echo "make demo-tiny: builds the tiny mini-Qwen (about half a minute on a quiet CPU), harvests it and serves it; make demo builds the full one"
	@$(MAKE) --no-print-directory install
	$(BIN)/qscope demo --tiny

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
