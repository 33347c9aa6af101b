"""Shared fixtures: every test that may use MLflow gets its own MLflow tracking store (MLflow's
own test style) and fails if it leaves a run open.

The store is per test: ``MLFLOW_TRACKING_URI`` and ``MLFLOW_REGISTRY_URI`` point at a fresh
``sqlite:///<tmp>/mlflow.db``. Pure tests (config, search space, scoring, tuner with fakes, FX
engine, data, metrics) opt out with ``pytestmark = pytest.mark.no_mlflow`` in their module (or
the mark on a test): for them the fixture does nothing and imports nothing, so mlflow is not
imported on their account. A marked test that did talk to MLflow would reach a store not its
own, so mark only what never touches MLflow (no ``quantize``, ``Quantization``, CLI with
tracking, ``MlflowClient``). tests/test_conftest.py checks both sides.

The shared toy models live in tests/toys.py, the tuner's fakes in tests/fakes.py.
"""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def mlflow_tracking(request, tmp_path_factory, monkeypatch):
    """A fresh SQLite tracking URI per test; no project-run variables leak in.

    None, untouched environment, for tests marked ``no_mlflow``."""
    if request.node.get_closest_marker("no_mlflow") is not None:
        yield None
        return
    store = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{store}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
    for var in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(var, raising=False)
    import mlflow
    from mlflow import MlflowClient

    # set_tracking_uri wins over the environment; an earlier test may have called it.
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    yield uri
    if not (store / "mlflow.db").exists():
        return

    assert mlflow.active_run() is None, "the test left an active MLflow run"
    client = MlflowClient(tracking_uri=uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    running = client.search_runs(experiments, filter_string="attributes.status = 'RUNNING'")
    assert not running, f"the test left MLflow runs RUNNING: {[r.info.run_name for r in running]}"
