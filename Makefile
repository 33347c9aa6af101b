# Quick start: `make run` (set up + tune LeNet on the default config), `make test`, `make lint`.
VENV ?= .venv
PY := $(VENV)/bin/python
CONFIG ?= conf/lenet_static.yaml

.PHONY: setup run mlflow-run ui serve test test-fast lint bench bench-models

setup:
	bash scripts/setup.sh

run: setup
	$(VENV)/bin/inc-flow tune $(CONFIG)

# The same job as an MLflow project run (the project run becomes the study's parent run).
# --env-manager local: the default virtualenv manager needs pyenv and the network.
mlflow-run: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/mlflow run . -P config=$(CONFIG) --env-manager local --experiment-name lenet

ui: setup
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

serve: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/mlflow models serve -m "models:/lenet-int8@champion" --env-manager local -h 127.0.0.1 -p 5001

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: setup
	$(PY) benchmarks/bench_tuning.py
	$(PY) benchmarks/bench_tracking.py

bench-models: setup  # every example model; trains missing checkpoints; rewrites README's table
	$(PY) benchmarks/bench_models.py --train
