"""The scope of the MLflow fixture of tests/conftest.py: a test marked ``no_mlflow`` gets no
store and imports no mlflow; any other test gets a fresh SQLite store of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FRESH_ENV = "INC_FLOW_TEST_FRESH_INTERPRETER"
# Read at import (collection), before any fixture has set anything: the outer environment.
OUTER = {v: os.environ.get(v) for v in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
SEEN: set[str] = set()


@pytest.mark.no_mlflow
def test_a_no_mlflow_test_gets_no_store(mlflow_tracking, tmp_path_factory):
    assert mlflow_tracking is None
    assert {v: os.environ.get(v) for v in OUTER} == OUTER
    basetemp = str(tmp_path_factory.getbasetemp())
    assert not any(basetemp in (uri or "") for uri in OUTER.values())
    if os.environ.get(FRESH_ENV):  # alone in a fresh interpreter: see the next test
        assert "mlflow" not in sys.modules


def test_a_no_mlflow_test_imports_no_mlflow():
    test = f"{Path(__file__).name}::test_a_no_mlflow_test_gets_no_store"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"tests/{test}"],
        cwd=ROOT,
        env={**os.environ, FRESH_ENV: "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


@pytest.mark.parametrize("case", ["first", "second"])
def test_an_unmarked_test_gets_its_own_sqlite_store(case, mlflow_tracking, tmp_path_factory):
    import mlflow

    uri = os.environ["MLFLOW_TRACKING_URI"]
    assert uri == mlflow_tracking == os.environ["MLFLOW_REGISTRY_URI"]
    assert mlflow.get_tracking_uri() == uri
    assert uri.startswith("sqlite:///") and uri not in SEEN
    SEEN.add(uri)
    db = Path(uri.removeprefix("sqlite:///"))
    assert db.name == "mlflow.db" and not db.exists()
    assert db.parent.parent == tmp_path_factory.getbasetemp()
