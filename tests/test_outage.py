"""The tracking store fails: unreachable at start, stopped in the middle of a study, a logged
model left PENDING by a killed upload (README, "What happens when things go wrong").

An unreachable store fails in seconds, before any work. A real ``mlflow server`` stopped
after trial 0 (stopped by the test when the tracker has recorded trial 0, not by timing)
costs the record, never the result: the study goes on, the model is saved, the CLI names what
was not recorded and exits 4; the same command with the server back records the study without
running a trial again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import mlflow
import optuna
import pytest
import yaml
from mlflow import MlflowClient
from mlflow.entities import LoggedModelStatus

from inc_flow.cli import EXIT_UNRECORDED, main
from inc_flow.config.sections import Config
from inc_flow.errors import ConfigError, IncFlowError, TrackingError
from inc_flow.locks import this_process
from inc_flow.record import keys
from inc_flow.record.outage import Outage, guarded
from inc_flow.record.store import PROBE_ENV, fail_orphaned_models, probe_seconds
from inc_flow.record.tracking import MlflowTracker
from tests.helpers.scaleout import free_port, start_mlflow_server
from tests.helpers.stores import kill_group, mlflow_template, prepare_mlflow, sleepy_config

STUDY = "outage"
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens, connections refused


def test_an_unreachable_tracking_store_fails_in_seconds_before_the_baseline(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", UNREACHABLE)
    config = sleepy_config(tmp_path, STUDY, 2, "sleepy")

    assert main(["tune", str(config), "-o", str(tmp_path / "out")]) == 2

    out = capsys.readouterr()
    assert f"the MLflow tracking store '{UNREACHABLE}' cannot be reached or opened" in out.err
    assert f"{PROBE_ENV}=5 s, no retries" in out.err and "tracking.enabled: false" in out.err
    # before the study: no Optuna storage, so no baseline was measured
    assert not (tmp_path / "ws" / "optuna.db").exists()
    assert "fp32 accuracy" not in out.out
    assert not (tmp_path / "out").exists()
    # MLflow's retry settings are the caller's again after the probe
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ
    with pytest.raises(TrackingError, match=UNREACHABLE):  # the Python API raises it
        MlflowTracker(Config.from_yaml(config))


@pytest.mark.parametrize("value", ["abc", "0", "1.5", "601", "-3"])
def test_the_probe_timeout_is_validated(monkeypatch, value):
    monkeypatch.setenv(PROBE_ENV, value)
    with pytest.raises(ConfigError, match=rf"`{PROBE_ENV}` must be a whole number .* {value!r}"):
        probe_seconds()


def test_the_probe_timeout_defaults_to_5_and_is_configurable(monkeypatch):
    monkeypatch.delenv(PROBE_ENV, raising=False)
    assert probe_seconds() == 5
    monkeypatch.setenv(PROBE_ENV, "12")
    assert probe_seconds() == 12


class _Recorder:
    def __init__(self, failing: set[str]) -> None:
        self.outage = Outage("http://store")
        self.failing = failing
        self.sent: list[str] = []

    @guarded(lambda n: f"trial {n}")
    def trial(self, n: int) -> str:
        if f"trial {n}" in self.failing:
            raise ConnectionError(f"refused at trial {n}")
        self.sent.append(f"trial {n}")
        return "ok"

    @guarded("the model")
    def model(self) -> None:
        raise IncFlowError("bad model name")  # bad input, not an outage


def test_after_the_first_failure_nothing_more_is_sent_and_what_was_missed_is_listed():
    rec = _Recorder(failing={"trial 1"})
    assert rec.trial(0) == "ok"
    assert rec.trial(1) is None and rec.outage.down
    assert rec.trial(2) is None and rec.trial(2) is None
    assert rec.sent == ["trial 0"]  # trial 2 was never sent: the store is down for the run
    assert rec.outage.missed == ("trial 1", "trial 2")
    assert rec.outage.error == "ConnectionError: refused at trial 1"
    assert "not recorded: trial 1, trial 2" in rec.outage.summary()


def test_bad_input_is_not_taken_for_an_outage():
    rec = _Recorder(failing=set())
    with pytest.raises(IncFlowError, match="bad model name"):
        rec.model()
    assert not rec.outage.down


def _gone_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_pending_logged_model_of_a_dead_process_is_marked_failed(
    tmp_path, tmp_path_factory, mlflow_tracking
):
    template = mlflow_template(tmp_path_factory)  # an empty store: no migration per test
    experiment = prepare_mlflow(mlflow_tracking, template, "pending", tmp_path / "art")
    client = MlflowClient()
    run = client.create_run(experiment).info.run_id
    host = this_process().rpartition(":")[0]
    owners = {
        "dead": f"{host}:{_gone_pid()}",
        "alive": this_process(),
        "elsewhere": "another-host:1",
    }
    models = {
        what: client.create_logged_model(
            experiment, name=what, source_run_id=run, tags={keys.MODEL_OWNER: owner}
        ).model_id
        for what, owner in owners.items()
    }
    untagged = client.create_logged_model(experiment, name="untagged", source_run_id=run)
    untagged = untagged.model_id

    assert fail_orphaned_models(client, run) == [models["dead"]]

    status = {m: client.get_logged_model(m).status for m in [*models.values(), untagged]}
    assert status.pop(models["dead"]) == LoggedModelStatus.FAILED
    assert set(status.values()) == {LoggedModelStatus.PENDING}  # a live or unknown owner
    client.set_terminated(run)


def _optuna_trials(tmp_path) -> dict[int, tuple]:
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{tmp_path / 'ws/optuna.db'}")
    return {t.number: (t.state.name, t.params) for t in study.get_trials()}


def _small_factory(tmp_path, monkeypatch):
    """The sleepy config with a factory in a one-file module (the logged model's code is that
    file, not the whole tests package: fewer uploads through the server)."""
    (tmp_path / "outage_toy.py").write_text("from tests.toys import sleepy_net  # noqa: F401\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = sleepy_config(tmp_path, STUDY, 2, "sleepy")
    conf = yaml.safe_load(config.read_text())
    conf["model"]["factory"] = "outage_toy:sleepy_net"
    config.write_text(yaml.safe_dump(conf, sort_keys=False))
    return config


@pytest.mark.slow
def test_a_server_stopped_after_trial_0_costs_the_record_not_the_result_and_a_rerun_records_it(
    tmp_path, tmp_path_factory, monkeypatch, capsys
):
    shutil.copy(mlflow_template(tmp_path_factory), tmp_path / "server.db")  # no migration
    backend, artifacts = f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "artifacts"
    port, log = free_port(), tmp_path / "server.log"
    server, uri = start_mlflow_server(backend, artifacts, log, port, workers=1)
    # the record is sent to the server; short client retries, so the outage shows at once
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
    mlflow.set_registry_uri(uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    recorded = MlflowTracker.trial_finished
    stopped: list[int] = []

    def stop_after_trial_0(self, record):  # the fault point: trial 0 recorded, then stop
        recorded(self, record)
        if record.number == 0 and not stopped:
            kill_group(server)
            stopped.append(server.pid)

    monkeypatch.setattr(MlflowTracker, "trial_finished", stop_after_trial_0)
    config, out = _small_factory(tmp_path, monkeypatch), tmp_path / "out"
    try:
        first = main(["tune", str(config), "-o", str(out)])
        told = capsys.readouterr()

        assert stopped, "the server was never stopped"
        assert first == EXIT_UNRECORDED, told.err
        assert "the MLflow record is incomplete: not recorded: trial 1" in told.err
        assert "the best model (logged model and registered version)" in told.err
        assert "the result is kept locally (Optuna study, saved model)" in told.err
        assert f"MLflow ({uri}) failed while recording trial 1" in told.out
        # the local result: both trials in the study, the model saved
        trials = _optuna_trials(tmp_path)
        assert [state for state, _ in trials.values()] == ["COMPLETE", "COMPLETE"]
        assert (out / "best_configure.yaml").is_file()

        # the server is back (same store, same port); a killed upload left a PENDING model
        server, _ = start_mlflow_server(backend, artifacts, log, port, workers=1)
        client = MlflowClient(uri)
        (parent,) = client.search_runs(
            [client.get_experiment_by_name("sleepy").experiment_id],
            keys.tag_is(keys.TAG_ROLE, keys.ROLE_STUDY),
        )
        pending = client.create_logged_model(
            parent.info.experiment_id,
            name="killed",
            source_run_id=parent.info.run_id,
            tags={keys.MODEL_OWNER: f"{this_process().rpartition(':')[0]}:{_gone_pid()}"},
        ).model_id

        assert main(["tune", str(config), "-o", str(out)]) == 0, capsys.readouterr().err
        again = capsys.readouterr().out
        assert "2 trials resumed" in again
        assert _optuna_trials(tmp_path) == trials  # no trial ran again
        runs = client.search_runs([parent.info.experiment_id])
        trial_runs = {
            r.data.tags[keys.TAG_TRIAL]: r.info.status
            for r in runs
            if r.data.tags.get(keys.TAG_ROLE) == keys.ROLE_TRIAL
        }
        assert trial_runs == {"0": "FINISHED", "1": "FINISHED"}
        (parent,) = [r for r in runs if r.data.tags.get(keys.TAG_ROLE) == keys.ROLE_STUDY]
        assert parent.info.status == "FINISHED"
        assert parent.data.tags[keys.TAG_REGISTERED_VERSION] == "1"
        assert client.get_model_version_by_alias(f"{STUDY}-int8", "champion").version == "1"
        assert client.get_logged_model(pending).status == LoggedModelStatus.FAILED
    finally:
        kill_group(server)
