"""Three plain ``inc-flow tune`` processes started together on a fresh directory all succeed.

Nothing is prepared: the MLflow store is MLflow's default (``./mlflow.db`` of the directory
the processes run in) and the Optuna study is the default workspace's ``optuna.db``; the first
process to open each creates and migrates it under the lock ``<db>.lock``
(:mod:`inc_flow.locks`). Without the lock, alembic's "Online migration expected to match one
row" or a leftover ``_alembic_tmp_*`` table killed at least one of them. The processes pass a
barrier (``INC_FLOW_TEST_BARRIER``: all three have built the model) before opening the stores,
so they reach them at the same moment, not by timing.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess

import pytest
import yaml

from tests.helpers.stores import BIN, ROOT, kill_group
from tests.toys import BARRIER_ENV

pytestmark = pytest.mark.slow
N = 3


def _config(where) -> str:
    dummy = {"batch_size": 8, "dataset": {"dummy": {"shape": [8, 1, 20, 20]}}}
    conf = {
        "model": {"name": "first", "factory": "tests.toys:sleepy_net"},
        "quantization": {"calibration": {"sampling_size": 8, "dataloader": dummy}},
        "evaluation": {
            "accuracy": {"metric": {"topk": 1}, "dataloader": dummy},
            "performance": {"warmup": 1, "iteration": 3, "dataloader": dummy},
        },
        "tuning": {
            "accuracy_criterion": {"absolute": 1.0},
            "exit_policy": {"max_trials": 1},
            "finalists": 1,
        },
    }
    path = where / "conf.yaml"
    path.write_text(yaml.safe_dump(conf, sort_keys=False))
    return path.name


def test_n_plain_tune_processes_on_a_fresh_directory_all_succeed(tmp_path):
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    config = _config(fresh)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}  # the default
    env.update(
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        **{BARRIER_ENV: f"{tmp_path / 'barrier'}:{N}"},
    )
    procs = []
    try:
        for i in range(N):
            with (tmp_path / f"{i}.log").open("wb") as log:
                command = [str(BIN / "inc-flow"), "tune", config, "-o", f"out{i}"]
                procs.append(
                    subprocess.Popen(
                        command,
                        cwd=fresh,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        codes = [p.wait(timeout=600) for p in procs]
    finally:
        for p in procs:
            kill_group(p)
    logs = [(tmp_path / f"{i}.log").read_text() for i in range(N)]
    assert codes == [0] * N, "\n\n".join(log[-2000:] for log in logs)
    for i in range(N):
        assert (fresh / f"out{i}" / "best_configure.yaml").is_file()
    # one MLflow store, migrated once: no alembic leftovers; every process's study recorded
    conn = sqlite3.connect(fresh / "mlflow.db")
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert not [t for t in tables if t.startswith("_alembic_tmp")]
        (version,) = conn.execute("SELECT count(*) FROM alembic_version").fetchone()
        assert version == 1
        parents = conn.execute(
            "SELECT count(*) FROM tags WHERE key = 'inc_flow.role' AND value = 'study'"
        ).fetchone()[0]
        assert parents >= 1
    finally:
        conn.close()
    assert (fresh / "mlflow.db.lock").exists() and (
        fresh / "nc_workspace" / "optuna.db.lock"
    ).exists()
