# Two commands matter: `make demo` (the relay, with local emulators) and `make test` (everything
# CI checks); `make run` serves in production. Each creates the virtual environment on first use.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run demo test lint venv clean bench

$(BIN)/relay: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(BIN)/relay

venv: $(BIN)/relay

run: venv
	$(BIN)/relay serve

demo: venv
	$(BIN)/relay demo $(ARGS)

lint: venv
	$(BIN)/ruff check relay tests bench
	$(BIN)/ruff format --check relay tests bench
	$(BIN)/mypy relay

test: venv lint
	$(BIN)/pytest -q

# The relay against a minimal baseline on loopback (README "Benchmarks"): ~8 min; ARGS=--quick ~1.
bench: venv
	$(BIN)/python -m bench.run $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
