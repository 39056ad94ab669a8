# The two commands of the README. Both install what they need into ./.venv first.
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test install install-test lint

install:
	./scripts/install.sh

install-test:
	./scripts/install.sh --test

## Build mini-Qwen if missing, harvest it, serve it.
demo: install
	$(BIN)/qscope demo

## Run the whole test suite (lint included), offline.
test: install-test
	$(BIN)/ruff check .
	$(BIN)/pytest -q

lint:
	$(BIN)/ruff check .
