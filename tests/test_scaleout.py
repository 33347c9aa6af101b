"""Scale out: workers on one study in PostgreSQL, logging to one ``mlflow server``.

A throwaway PostgreSQL cluster (scripts/postgres.sh) holds the Optuna study and the MLflow
backend store; ``mlflow server`` runs against it on 127.0.0.1. Two ``inc-flow tune --worker``
processes tune one study, then ``inc-flow finalize`` saves and registers the best model once.
The second test kills a worker mid-trial (SIGKILL): the RDB heartbeat lets the other worker
fail that trial and run its retry. Every process is stopped by PID in ``finally``.
"""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from inc_flow.record.keys import TAG_PARENT, TAG_ROLE, TAG_STUDY, TAG_TRIAL
from inc_flow.search.records import TrialRecord
from inc_flow.search.storage import GRACE_ENV, HEARTBEAT_ENV, PARENT_ATTR, RECORD_ATTR, WORKER_ATTR
from tests.helpers.scaleout import cluster, mlflow_server, postgres_missing, start_cli
from tests.helpers.stores import kill_group, sleepy_config, wait_for
from tests.toys import BARRIER_ENV, HOLD_ENV, SLEEP_ENV

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(postgres_missing() is not None, reason=str(postgres_missing())),
]
TRIAL_LINE = re.compile(r"\[trial (\d+) \| \d+/\d+\] (?!started)")  # finished trials


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """One PostgreSQL cluster and one ``mlflow server`` for the module: (optuna URL, MLflow
    tracking URI)."""
    tmp = tmp_path_factory.mktemp("scaleout")
    with cluster(tmp / "pg") as urls:
        with mlflow_server(urls["mlflow"], tmp / "artifacts", tmp / "mlflow.log") as uri:
            yield urls["optuna"], uri


def _env(uri: str, **extra: str) -> dict[str, str]:
    return {"MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri, **extra}


def _run(procs: list, logs: list[Path], timeout: float = 240) -> list[int]:
    try:
        return [p.wait(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            kill_group(p)


def _study_runs(client: MlflowClient, study: str):
    exps = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(exps, filter_string=f"tags.`{TAG_STUDY}` = '{study}'")
    parents = [r for r in runs if r.data.tags.get(TAG_ROLE) == "study"]
    children = [r for r in runs if r.data.tags.get(TAG_ROLE) == "trial"]
    return parents, children


def _finalize(config: Path, storage: str, uri: str, tmp: Path) -> None:
    log = tmp / "finalize.log"
    proc = start_cli(
        ["finalize", str(config), "--storage", storage, "-o", str(tmp / "out")], log, _env(uri)
    )
    assert _run([proc], [log]) == [0], log.read_text()[-3000:]
    assert (tmp / "out" / "best_configure.yaml").exists()


def _check_registry_and_runs(uri: str, study: str, trials: list) -> None:
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    parents, children = _study_runs(client, study)
    assert len(parents) == 1, [p.info.run_id for p in parents]
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert {c.data.tags[TAG_PARENT] for c in children} == {parent.info.run_id}
    assert sorted(int(c.data.tags[TAG_TRIAL]) for c in children) == [t.number for t in trials]
    name = f"{study}-int8"
    versions = client.search_model_versions(f"name = '{name}'")
    assert len(versions) == 1, "registered more than once"
    assert client.get_registered_model(name).aliases == {"champion": versions[0].version}
    assert parent.data.tags.get("inc_flow.registered_version") == versions[0].version


def test_two_workers_then_finalize(servers, tmp_path):
    storage, uri = servers
    study = "scaleout-two"
    config = sleepy_config(tmp_path, study, 6, "scaleout-two")
    env = _env(uri, **{SLEEP_ENV: "0.15", BARRIER_ENV: f"{tmp_path / 'barrier'}:2"})
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    workers = [
        start_cli(["tune", str(config), "--storage", storage, "--worker"], log, env)
        for log in logs
    ]
    codes = _run(workers, logs)
    texts = [log.read_text() for log in logs]
    assert codes == [0, 0], "\n".join(t[-3000:] for t in texts)

    loaded = optuna.load_study(study_name=study, storage=storage)
    trials = loaded.get_trials()
    assert all(t.state.is_finished() for t in trials), [t.state for t in trials]
    # the trial count is the workers' sum, and each worker ran its share
    ran = [sorted(int(n) for n in TRIAL_LINE.findall(t)) for t in texts]
    assert sorted(ran[0] + ran[1]) == [t.number for t in trials]
    assert all(ran), "one worker ran no trial"
    assert 6 <= len(trials) <= 7  # each stops at 6 finished; one more may have been running
    records = [TrialRecord.from_dict(t.user_attrs[RECORD_ATTR]) for t in trials]
    plans = [r.plan for r in records if r.state != "duplicate"]
    assert len(plans) == len(set(plans)), "a plan was evaluated twice"
    assert PARENT_ATTR in loaded.user_attrs

    # workers neither register nor end the parent run
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    parents, _ = _study_runs(client, study)
    assert [p.info.status for p in parents] == ["RUNNING"]
    assert not client.search_model_versions(f"name = '{study}-int8'")

    _finalize(config, storage, uri, tmp_path)
    _check_registry_and_runs(uri, study, trials)


def test_a_killed_workers_trial_is_retried_by_the_other(servers, tmp_path):
    storage, uri = servers
    study = "scaleout-kill"
    config = sleepy_config(tmp_path, study, 8, "scaleout-kill")
    env = _env(uri, **{SLEEP_ENV: "0.3", HEARTBEAT_ENV: "1", GRACE_ENV: "3"})
    env[BARRIER_ENV] = f"{tmp_path / 'barrier'}:2"
    hold = tmp_path / "hold"  # each worker's first trial waits while it exists
    hold.touch()
    env[HOLD_ENV] = str(hold)
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    command = ["tune", str(config), "--storage", storage, "--worker"]
    victim, survivor = (start_cli(command, log, env) for log in logs)
    try:

        def both_run_a_trial() -> bool:
            try:
                s = optuna.load_study(study_name=study, storage=storage)
            except KeyError:
                return False
            running = s.get_trials(states=(TrialState.RUNNING,))
            pids = {str(t.user_attrs.get(WORKER_ATTR, "")).rpartition(":")[2] for t in running}
            return {str(victim.pid), str(survivor.pid)} <= pids

        procs = [(victim, logs[0]), (survivor, logs[1])]
        wait_for("a running trial in each worker", both_run_a_trial, procs, 120)
        kill_group(victim)  # SIGKILL mid-trial; the survivor only learns it by the heartbeat
        hold.unlink()
        assert survivor.wait(timeout=240) == 0, logs[1].read_text()[-3000:]
    finally:
        kill_group(victim)
        kill_group(survivor)
    assert "left running by a stopped process" not in logs[1].read_text()  # not the pid check

    trials = optuna.load_study(study_name=study, storage=storage).get_trials()
    assert all(t.state.is_finished() for t in trials), [t.state for t in trials]
    killed = [t for t in trials if t.user_attrs.get(WORKER_ATTR, "").endswith(f":{victim.pid}")]
    killed = [t for t in killed if t.state == TrialState.FAIL and RECORD_ATTR not in t.user_attrs]
    assert len(killed) == 1, [(t.number, t.state, t.user_attrs) for t in trials]
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed[0].number]
    assert len(retries) == 1, "the killed trial was not retried"
    retry = retries[0]
    assert retry.state == TrialState.COMPLETE
    # the retry repeats every choice the killed trial had made (a kill between Optuna's
    # ask and the end of the plan's suggestions leaves only the first few recorded)
    assert killed[0].params.items() <= retry.params.items(), (killed[0].params, retry.params)
    assert retry.user_attrs[WORKER_ATTR].endswith(f":{survivor.pid}")
    records = [TrialRecord.from_dict(t.user_attrs[RECORD_ATTR]) for t in trials if t != killed[0]]
    plans = [r.plan for r in records if r.state != "duplicate"]
    assert len(plans) == len(set(plans)), "a plan was evaluated twice"

    _finalize(config, storage, uri, tmp_path)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    parents, children = _study_runs(client, study)
    assert len(parents) == 1
    assert {c.data.tags[TAG_PARENT] for c in children} == {parents[0].info.run_id}
    status = {int(c.data.tags[TAG_TRIAL]): c.info.status for c in children}
    assert status.pop(killed[0].number, "KILLED") == "KILLED"  # the orphan, if it got a run
    assert set(status.values()) == {"FINISHED"}
    aliases = client.get_registered_model(f"{study}-int8").aliases
    assert list(aliases) == ["champion"]
