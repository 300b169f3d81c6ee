# Every target creates .venv itself when it is missing, so a fresh clone needs only Python.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo dev lint format typecheck test bench all clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The local stack (Redis, sandbox, workers, Flower) with four example jobs, then teardown.
demo: $(STAMP)
	$(BIN)/smsgw demo

# The local stack until Ctrl-C; `set -a; . .smsgw/dev.env; set +a` in another shell to use it.
dev: $(STAMP)
	$(BIN)/smsgw dev

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(STAMP)
	$(BIN)/mypy config gateways worker

test: $(STAMP)
	$(BIN)/pytest

# Benchmarks print JSON and merge it into benchmarks/results/latest.json.
bench: $(STAMP)
	$(BIN)/python -m benchmarks.sandbox_rps
	$(BIN)/python -m benchmarks.pipeline
	$(BIN)/python -m benchmarks.account_resolution
	$(BIN)/python -m benchmarks.campaign
	$(BIN)/python -m benchmarks.health_scrape

all: lint typecheck test

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
