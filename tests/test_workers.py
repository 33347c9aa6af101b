"""Two `inc-flow tune` workers on one study (one machine, SQLite storages).

The Optuna study and the MLflow database (with its experiment) are created once before the
workers start: two processes creating the same fresh SQLite file race. The workers then
start tuning together (a barrier in the model factory) and must share the work: distinct
plans (a plan evaluated twice only as a reported duplicate), every trial finished, one child
run per trial, and exactly one champion in the registry. Two fast tests pin the two rules
that make this so, with the fake engine of tests/fakes.py and a stand-in for the other
worker: a seed another worker runs is skipped, and a plan drawn twice waits for its twin.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import asdict

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from inc_flow.search.records import TrialRecord
from inc_flow.search.space import SearchSpace
from inc_flow.search.storage import RECORD_ATTR, WORKER_ATTR
from tests.fakes import OPS, FakeEngine, FakeEvaluator, run
from tests.helpers.stores import (
    kill_group,
    mlflow_template,
    mlflow_trial_runs,
    prepare_mlflow,
    sleepy_config,
    start_tune,
)
from tests.toys import BARRIER_ENV, SLEEP_ENV

STUDY = "shared"
MAX_TRIALS = 6
OTHER_WORKER = f"{socket.gethostname()}:{os.getppid()}"  # a live process of this host


def _study_with_a_running_default_trial(storage: str) -> tuple[optuna.Study, dict]:
    """The study, as another worker left it: the default seed asked and running."""
    study = optuna.create_study(storage=storage, study_name="inc_flow", direction="minimize")
    params = SearchSpace(tuple(OPS)).params_for(SearchSpace(tuple(OPS)).default_plan())
    study.enqueue_trial(params, user_attrs={"inc_flow.phase": "default"})
    study.ask().set_user_attr(WORKER_ATTR, OTHER_WORKER)
    return study, params


def test_a_seed_that_another_worker_runs_is_not_enqueued_again(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    _study_with_a_running_default_trial(storage)
    evaluator = FakeEvaluator(FakeEngine({}))
    result, _, _ = run({}, evaluator.engine, evaluator, storage=storage, max_trials=3, timeout=60)
    assert SearchSpace(tuple(OPS)).default_plan() not in evaluator.calls
    assert [r.phase for r in result.records] == ["observer", "op_type", "op_type"]


def test_a_plan_drawn_twice_waits_for_its_twin_and_is_a_duplicate(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study, params = _study_with_a_running_default_trial(storage)
    study.enqueue_trial(params, user_attrs={"inc_flow.phase": "default"})  # the same seed
    default = SearchSpace(tuple(OPS)).default_plan()
    twin = TrialRecord(0, default, "passed", "default", accuracy=0.9, latency_ms=7.0)

    def other_worker_finishes() -> None:
        time.sleep(1.0)
        other = optuna.load_study(study_name="inc_flow", storage=storage)
        record = {**asdict(twin), "plan": default.to_dict()}
        other._storage.set_trial_user_attr(other.trials[0]._trial_id, RECORD_ATTR, record)
        other.tell(0, [7.0])

    thread = threading.Thread(target=other_worker_finishes)
    thread.start()
    start = time.monotonic()
    evaluator = FakeEvaluator(FakeEngine({}))
    result, _, _ = run({}, evaluator.engine, evaluator, storage=storage, max_trials=2, timeout=60)
    thread.join()
    assert time.monotonic() - start >= 1.0  # it waited for the twin
    assert evaluator.calls == [None]  # the fp32 baseline only
    assert result.records[1].state == "duplicate" and result.records[1].duplicate_of == 0
    assert result.records[1].latency_ms == 7.0


@pytest.mark.slow
def test_two_workers_share_one_study_and_one_champion(tmp_path, tmp_path_factory, mlflow_tracking):
    prepare_mlflow(mlflow_tracking, mlflow_template(tmp_path_factory), "sleepy", tmp_path / "art")
    mlflow_db = tmp_path_factory.getbasetemp() / mlflow_tracking.split("/")[-2] / "mlflow.db"
    config = sleepy_config(tmp_path, STUDY, MAX_TRIALS, "sleepy")
    storage = f"sqlite:///{tmp_path / 'ws' / 'optuna.db'}"
    (tmp_path / "ws").mkdir()
    optuna.create_study(storage=storage, study_name=STUDY, direction="minimize")

    env = {SLEEP_ENV: "0.15", BARRIER_ENV: f"{tmp_path / 'barrier'}:2"}
    workers = [
        start_tune(config, tmp_path / f"out{i}", tmp_path / f"worker{i}.log", **env)
        for i in range(2)
    ]
    try:
        codes = [w.wait(timeout=300) for w in workers]
    finally:
        for w in workers:
            kill_group(w)
    logs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], "\n".join(log[-3000:] for log in logs)

    trials = optuna.load_study(study_name=STUDY, storage=storage).get_trials()
    assert all(t.state.is_finished() for t in trials), [t.state for t in trials]
    # each worker stops once the study holds max_trials finished trials; both may have had
    # one more trial running at that moment
    assert MAX_TRIALS <= len(trials) <= MAX_TRIALS + 1
    workers_seen = {t.user_attrs[WORKER_ATTR] for t in trials}
    assert len(workers_seen) == 2, "one worker ran no trial:\n" + "\n".join(logs)
    records = [TrialRecord.from_dict(t.user_attrs[RECORD_ATTR]) for t in trials]
    assert {r.state for r in records} <= {"passed", "duplicate"}
    plans = [r.plan for r in records if r.state != "duplicate"]
    assert len(plans) == len(set(plans)), [(r.number, r.phase, r.plan.summary()) for r in records]
    for r in records:
        if r.state == "duplicate":
            assert records[r.duplicate_of].plan == r.plan
    assert all(t.state == TrialState.COMPLETE for t in trials)

    # MLflow: one child run per trial, all finished
    runs = mlflow_trial_runs(mlflow_db)
    assert sorted(int(n) for n, _, _ in runs) == [t.number for t in trials]
    assert {s for _, _, s in runs} == {"FINISHED"}
    # the registry: each worker registers its best, once per distinct model (both may find
    # the same best); exactly one version is the champion
    client = MlflowClient(mlflow_tracking)
    name = f"{STUDY}-int8"
    versions = client.search_model_versions(f"name = '{name}'")
    digests = [v.tags["content_digest"] for v in versions]
    assert 1 <= len(versions) <= 2 and len(set(digests)) == len(digests), digests
    aliases = client.get_registered_model(name).aliases
    assert "champion" in aliases
    assert sum(alias == "champion" for alias in aliases) == 1
