# One obvious way to run things. `make run` serves on the embedded default; `make test` runs every check.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
BUF_VERSION := 1.75.0
BUF := .tools/node_modules/.bin/buf
PLUGINS := $(wildcard plugins/*/pyproject.toml)

.PHONY: install run sandbox test lint typecheck buf-lint check-generated generate pytest bench fuzz

## install: create .venv with crm_hub, its first-party plugins and the dev tools (idempotent)
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(PLUGINS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,gateway,testing]' $(foreach p,$(PLUGINS),-e './$(dir $(p))[fake]')
	@touch $@

$(BUF):
	npm install --silent --no-save --no-package-lock --no-audit --no-fund --prefix .tools @bufbuild/buf@$(BUF_VERSION)

build/third_party/.copied: $(VENV)/.installed scripts/protos.py
	$(BIN)/python scripts/protos.py third-party
	@touch $@

## run: migrate the embedded SQLite database, serve gRPC and the REST gateway (Envoy) on CRM_HUB_HTTP_ADDRESS
run: install
	$(BIN)/crm-hub migrate
	exec $(BIN)/crm-hub up

## sandbox: like run, with every provider pointed at its bundled fake CRM (no CRM account needed)
sandbox: install
	$(BIN)/crm-hub migrate
	exec $(BIN)/crm-hub up --sandbox

## test: lint, type-check, buf lint, generated-code drift check, then the whole pytest suite
test: install $(BUF) build/third_party/.copied lint typecheck buf-lint check-generated pytest

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck:
	$(BIN)/mypy
	$(BIN)/mypy $(wildcard plugins/*/src/crm_hub_*)

buf-lint: $(BUF) build/third_party/.copied
	$(BUF) lint
	$(BUF) build -o /dev/null

check-generated:
	$(BIN)/python scripts/protos.py check
	$(BIN)/python -m crm_hub.gateway check

## generate: regenerate src/crm_hub/v1 from proto/ (commit the result)
generate: $(VENV)/.installed
	$(BIN)/python scripts/protos.py generate
	$(BIN)/python -m crm_hub.gateway generate

pytest:
	$(BIN)/pytest

## fuzz: the REST schema fuzzer at length (not part of `make test`): many more examples, failures shrunk to a
## minimal request, on PostgreSQL and SQLite. `make fuzz FUZZ_SEED=$$RANDOM` explores inputs CI never sent.
FUZZ_EXAMPLES ?= 1000
FUZZ_SEED ?= 20261204
fuzz: install
	CRM_HUB_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) CRM_HUB_FUZZ_SEED=$(FUZZ_SEED) CRM_HUB_FUZZ_SHRINK=1 \
	CRM_HUB_FUZZ_DATABASES=postgresql,sqlite $(BIN)/pytest tests/adversarial/test_schema_fuzz.py

## bench: run the benchmarks in bench/ (not part of `make test`); their numbers go in bench/RESULTS.md
bench: install
	@for b in bench/bench_*.py; do module=$${b%.py}; echo "== $$module"; $(BIN)/python -m $${module//\//.} || exit 1; done
