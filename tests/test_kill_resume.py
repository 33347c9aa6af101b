"""`kill -9` of `inc-flow tune` in the middle of a trial, then the same command again.

A real subprocess tunes ``tests.toys:sleepy_net`` (each forward pass sleeps, so a trial
takes about two seconds). Once a trial has finished and the next one is running, with its
MLflow child run open, the process is killed. The rerun must resume: the orphaned Optuna
trial FAIL, its MLflow child run KILLED, every finished trial kept as it was and none run
again, and exactly one registered version, the champion.
"""

from __future__ import annotations

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from inc_flow.search.records import TrialRecord
from inc_flow.search.storage import RECORD_ATTR
from tests.helpers.stores import (
    kill_group,
    mlflow_template,
    mlflow_trial_runs,
    optuna_states,
    prepare_mlflow,
    sleepy_config,
    start_tune,
    wait_for,
)
from tests.toys import SLEEP_ENV

pytestmark = pytest.mark.slow
STUDY = "killed"
MAX_TRIALS = 5


def _finished(study: optuna.Study) -> dict[int, tuple]:
    return {
        t.number: (t.state, t.params, t.user_attrs.get(RECORD_ATTR))
        for t in study.get_trials()
        if t.state.is_finished()
    }


def test_kill_9_mid_trial_then_rerun_resumes_without_losing_or_redoing_trials(
    tmp_path, tmp_path_factory, mlflow_tracking
):
    prepare_mlflow(mlflow_tracking, mlflow_template(tmp_path_factory), "sleepy", tmp_path / "art")
    mlflow_db = tmp_path_factory.getbasetemp() / mlflow_tracking.split("/")[-2] / "mlflow.db"
    optuna_db = tmp_path / "ws" / "optuna.db"
    config = sleepy_config(tmp_path, STUDY, MAX_TRIALS, "sleepy")
    out, log = tmp_path / "out", tmp_path / "first.log"

    first = start_tune(config, out, log, **{SLEEP_ENV: "0.25"})
    try:

        def mid_trial() -> bool:
            states = optuna_states(optuna_db)
            running = [n for n, s in states.items() if s == "RUNNING"]
            open_runs = {int(n) for n, _, s in mlflow_trial_runs(mlflow_db) if s == "RUNNING"}
            done = [n for n, s in states.items() if s == "COMPLETE"]
            return bool(done and running and running[0] in open_runs)

        wait_for("a finished trial and a running one", mid_trial, [(first, log)], 120)
    finally:
        kill_group(first)
    assert first.returncode == -9
    storage = f"sqlite:///{optuna_db}"
    before = _finished(optuna.load_study(study_name=STUDY, storage=storage))
    (killed,) = [n for n, s in optuna_states(optuna_db).items() if s == "RUNNING"]
    runs_before = {n: (run, status) for n, run, status in mlflow_trial_runs(mlflow_db)}
    assert runs_before[str(killed)][1] == "RUNNING"
    assert not out.exists()

    second = start_tune(config, out, tmp_path / "second.log", **{SLEEP_ENV: "0"})
    assert second.wait(timeout=300) == 0, (tmp_path / "second.log").read_text()[-3000:]
    log_text = (tmp_path / "second.log").read_text()
    assert f"trials [{killed}] were left running by a stopped process: failed" in log_text
    assert f"marked orphaned MLflow run of trial {killed} KILLED" in log_text

    # Optuna: the orphan is FAIL, finished trials are untouched, the study is complete
    study = optuna.load_study(study_name=STUDY, storage=storage)
    after = _finished(study)
    assert after[killed][0] == TrialState.FAIL and after[killed][2] is None
    assert {n: after[n] for n in before} == before
    assert len(after) == MAX_TRIALS and not study.get_trials(states=(TrialState.RUNNING,))
    # no plan was evaluated twice (duplicates would be reported as such)
    records = [TrialRecord.from_dict(r) for _, _, r in after.values() if r is not None]
    plans = [r.plan for r in records if r.state != "duplicate"]
    assert len(plans) == len(set(plans)) == MAX_TRIALS - 1

    # MLflow: one child run per trial; the orphan KILLED, earlier runs kept as they were
    runs = mlflow_trial_runs(mlflow_db)
    assert sorted(int(n) for n, _, _ in runs) == list(range(MAX_TRIALS))
    status = {int(n): (run, s) for n, run, s in runs}
    assert status[killed] == (runs_before[str(killed)][0], "KILLED")
    for number in before:
        assert status[number] == runs_before[str(number)] == (status[number][0], "FINISHED")
    assert {s for n, (_, s) in status.items() if n != killed} == {"FINISHED"}
    client = MlflowClient(mlflow_tracking)
    experiment = client.get_experiment_by_name("sleepy").experiment_id
    parents = client.search_runs([experiment], "tags.`inc_flow.role` = 'study'")
    assert [p.info.status for p in parents] == ["FINISHED"]

    # the registry: one version, the champion; the output directory
    versions = client.search_model_versions(f"name = '{STUDY}-int8'")
    assert [str(v.version) for v in versions] == ["1"]
    aliases = client.get_registered_model(f"{STUDY}-int8").aliases
    assert {k: str(v) for k, v in aliases.items()} == {"champion": "1"}
    assert (out / "best_configure.yaml").is_file() and (out / "best_model_weights.pt").is_file()
