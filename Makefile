# Quick start: `make run` (set up + tune LeNet on the default config), `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
CONFIG ?= conf/lenet_static.yaml

.PHONY: setup run test test-fast lint bench

setup:
	bash scripts/setup.sh

run: setup
	$(VENV)/bin/inc-flow tune $(CONFIG)

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: setup
	$(PY) benchmarks/bench_tuning.py
