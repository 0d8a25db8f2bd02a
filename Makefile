# Two commands matter: `make run` (the relay) and `make test` (everything CI checks).
# Each creates the virtual environment it needs on first use.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint venv clean

$(BIN)/relay: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(BIN)/relay

venv: $(BIN)/relay

run: venv
	$(BIN)/relay serve

lint: venv
	$(BIN)/ruff check relay tests bench
	$(BIN)/ruff format --check relay tests bench
	$(BIN)/mypy relay

test: venv lint
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
