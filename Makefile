# Trunkline — the two commands a new user needs are `make run` and `make test`; both install first.
VENV   ?= .venv
PY     := $(VENV)/bin/python
CONFIG ?= config/trunkline.toml

.PHONY: install run test test-fast bench lint format clean

install:
	@bash scripts/install.sh

run: install
	$(VENV)/bin/trunkline serve --config $(CONFIG)

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q tests/unit

bench: install
	@test -f $(VENV)/.bench-installed || { $(PY) -m pip install -q -e ".[bench]" >$(VENV)/pip-bench.log 2>&1 && touch $(VENV)/.bench-installed; } || echo "bench: pjsua2-python (comparator) not installed; its rows will say why"
	$(PY) -m bench.run

lint: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff format src tests bench
	$(VENV)/bin/ruff check --fix src tests bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
