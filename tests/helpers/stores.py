"""Set-up and read-outs for tests that tune in subprocesses (kill and resume, two workers).

The stores are created before any worker starts: an MLflow SQLite database is copied from a
template made once per test session (creating one takes seconds, and two processes creating
the same file race), the experiment is created with its artifacts in the test's tmp dir.
While a subprocess tunes, the stores are read with plain read-only ``sqlite3`` queries, so
the test never writes to them or takes a lock for long.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.toys import SLEEP_BATCH

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
_TEMPLATES: dict[str, Path] = {}


def mlflow_template(tmp_path_factory: Any) -> Path:
    """An empty MLflow SQLite store, created once per test session."""
    if "mlflow" not in _TEMPLATES:
        from mlflow import MlflowClient

        db = tmp_path_factory.mktemp("mlflow_template") / "mlflow.db"
        MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
        _TEMPLATES["mlflow"] = db
    return _TEMPLATES["mlflow"]


def prepare_mlflow(uri: str, template: Path, experiment: str, artifacts: Path) -> str:
    """The database at ``uri`` (a copy of ``template``) with ``experiment`` in it; its id."""
    from mlflow import MlflowClient

    db = Path(uri.removeprefix("sqlite:///"))
    assert not db.exists(), f"{db} exists already"
    shutil.copy(template, db)
    return MlflowClient(uri).create_experiment(experiment, artifact_location=artifacts.as_uri())


def sleepy_config(tmp: Path, study: str, max_trials: int, experiment: str) -> Path:
    """A yaml config tuning ``tests.toys:sleepy_net`` on dummy data; its path.

    ``timeout`` > 0, so tuning goes on after the first passing plan until ``max_trials``;
    ``absolute: 1.0`` makes every completed plan pass (the scores are not under test).
    Calibration and evaluation run on batches of ``SLEEP_BATCH`` (8), where the model sleeps:
    7 evaluation batches per trial, 1 per calibration. Latency is timed at batch 1 and 64,
    where it does not, and where TinyNet's int8 model is faster than fp32 (so the best plan
    may be ``@champion``).
    """
    dummy = {"batch_size": SLEEP_BATCH, "dataset": {"dummy": {"shape": [8, 1, 20, 20]}}}
    evaluation = {"batch_size": SLEEP_BATCH, "dataset": {"dummy": {"shape": [56, 1, 20, 20]}}}
    conf = {
        "model": {"name": "sleepy", "factory": "tests.toys:sleepy_net"},
        "quantization": {"calibration": {"sampling_size": 8, "dataloader": dummy}},
        "evaluation": {
            "accuracy": {"metric": {"topk": 1}, "iteration": 7, "dataloader": evaluation},
            "performance": {
                "warmup": 1,
                "iteration": 10,
                "dataloader": {**dummy, "batch_size": 64},
            },
        },
        "tuning": {
            "accuracy_criterion": {"absolute": 1.0},
            "exit_policy": {"timeout": 600, "max_trials": max_trials},
            "study_name": study,
            "workspace": {"path": str(tmp / "ws")},
        },
        "tracking": {"experiment": experiment, "registered_model_name": f"{study}-int8"},
    }
    path = tmp / f"{study}.yaml"
    path.write_text(yaml.safe_dump(conf, sort_keys=False))
    return path


def start_tune(config: Path, output: Path, log: Path, **env: str) -> subprocess.Popen:
    """``inc-flow tune CONFIG -o OUTPUT`` in its own session, run from the repository root
    (so ``tests.toys`` imports), with ``env`` added to this process's environment."""
    full_env = {**os.environ, **env, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    command = [str(BIN / "inc-flow"), "tune", str(config), "-o", str(output)]
    with log.open("wb") as out:
        return subprocess.Popen(
            command,
            cwd=ROOT,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process's session (it has its own) and reap it."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def query(db: Path, sql: str, *args: Any) -> list[tuple]:
    """Rows of a read-only query; [] while the file or its tables do not exist yet."""
    if not db.exists():
        return []
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()
    except sqlite3.OperationalError as e:
        if "no such table" in str(e) or "locked" in str(e):
            return []
        raise


def optuna_states(db: Path) -> dict[int, str]:
    """Trial number -> state (RUNNING, COMPLETE, FAIL, ...) in an Optuna SQLite storage."""
    return dict(query(db, "SELECT number, state FROM trials"))


def mlflow_trial_runs(db: Path) -> list[tuple[str, str, str]]:
    """(trial number, run id, status) of every inc_flow trial run in an MLflow SQLite store."""
    sql = (
        "SELECT t.value, r.run_uuid, r.status FROM runs r JOIN tags t ON r.run_uuid = t.run_uuid"
        " WHERE t.key = 'inc_flow.trial'"
    )
    return sorted(query(db, sql))


def wait_for(what: str, condition: Callable[[], bool], procs: list, seconds: float) -> None:
    """Poll ``condition`` every 0.1 s; fail with the logs' ends when a process exited or
    ``seconds`` passed."""
    deadline = time.monotonic() + seconds
    while not condition():
        for proc, log in procs:
            assert proc.poll() is None, f"exited before {what}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {what} within {seconds} s"
        time.sleep(0.1)
