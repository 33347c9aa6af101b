"""MLflow record of a study: parent and child runs, artifacts, failures, orphans, resume."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
import yaml
from mlflow import MlflowClient

from inc_flow import quantize
from inc_flow.config.sections import Config
from inc_flow.quant.evaluate import LatencyBenchmark
from inc_flow.record.keys import TAG_ROLE, TAG_STUDY, TAG_TRIAL, safe_key
from inc_flow.record.tracking import MlflowTracker
from inc_flow.record.values import plan_params
from inc_flow.search.plan import default_plan
from inc_flow.search.records import StudyInfo
from inc_flow.search.settings import TuneSettings
from inc_flow.search.speed import CHAMPION, FP32, TRIAL
from tests.toys import TinyNet

ROOT = Path(__file__).resolve().parents[1]
FMNIST = Path("/usr/share/datasets/fashion-mnist")


def test_safe_key_maps_what_mlflow_rejects():
    assert safe_key("op.layers[0].attn#1") == "op.layers_0_.attn_1"
    long = safe_key("op." + "block." * 80 + "conv")
    assert len(long) <= 250 and long.endswith("block.conv")


def test_plan_params_have_the_same_keys_for_every_plan():
    plan = default_plan([("a[0]", "Conv2d"), ("b", "Linear")])
    keys = set(plan_params(plan))
    assert set(plan_params(plan.with_fallback({"b"}))) == keys
    assert set(plan_params(plan.with_fallback({"a[0]", "b"}))) == keys
    assert plan_params(plan.with_fallback({"b"}))["op.b"] == "fp32"
    assert "op.a_0_" in keys


def _toy_run(tmp_path: Path, eval_func, max_trials: int = 3, seed: int = 0, **conf):
    torch.manual_seed(seed)
    model = TinyNet().eval()
    x = torch.randn(32, 1, 20, 20)
    config = {
        "model": {"name": "tiny"},
        "tuning": {
            "workspace": {"path": str(tmp_path / "ws")},
            "exit_policy": {"timeout": 600, "max_trials": max_trials},
            "accuracy_criterion": {"absolute": 0.5},
        },
        **conf,
    }
    return quantize(config, model=model, calib_dataloader=[x], eval_func=eval_func)


def _runs(experiment: str = "tiny"):
    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get(TAG_ROLE) == "study"]
    children = [r for r in runs if r.data.tags.get(TAG_ROLE) == "trial"]
    return client, parents, children


def _fake_round(monkeypatch, fp32_ms: float, int8_ms: float, champion_ms: float = 0.0) -> list:
    """The side-by-side round with fixed timings per kind of candidate (no timed assertion);
    the candidates of each round are appended to the list returned."""
    seen: list = []
    ms = {FP32: fp32_ms, TRIAL: int8_ms, CHAMPION: champion_ms}

    def side_by_side(self, candidates):
        seen.append(list(candidates))
        return {c.name: dict.fromkeys((1, self.batch_size), [ms[c.kind]] * 3) for c in candidates}

    monkeypatch.setattr(LatencyBenchmark, "side_by_side", side_by_side)
    return seen


def _aliases(client: MlflowClient, name: str = "tiny-int8") -> dict[str, str]:
    return {k: str(v) for k, v in client.get_registered_model(name).aliases.items()}


def test_one_parent_and_one_child_per_trial(tmp_path, monkeypatch):
    _fake_round(monkeypatch, fp32_ms=4.0, int8_ms=2.0)
    outcome = _toy_run(tmp_path, lambda m: 0.9)
    assert outcome.q_model is not None
    client, parents, children = _runs()
    assert len(parents) == 1 and len(children) == 3
    parent = parents[0]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    names = sorted(c.info.run_name for c in children)  # trial-<n>-<backend>-int8-<k>/<ops>...
    assert [n[:14] for n in names] == ["trial-000-x86-", "trial-001-x86-", "trial-002-x86-"]
    assert all("-int8-" in n for n in names)
    keys = {frozenset(c.data.params) for c in children}
    assert len(keys) == 1  # the compare view lines trials up
    for child in children:
        assert child.info.status == "FINISHED"
        assert {"accuracy", "latency_ms", "latency_ms_b1", "int8_ops"} <= set(child.data.metrics)
        files = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"plan.yaml", "op_statistics.json"} <= files
    assert parent.info.status == "FINISHED"
    assert {"fp32_latency_ms", "best_latency_ms", "n_trials", "time_calibration_s"} <= set(
        parent.data.metrics
    )
    files = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"config.yaml", "best_configure.yaml", "mixed_precision_statistics.txt"} <= files
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert "plots/optimization_history.png" in plots
    assert "plots/accuracy_vs_latency.png" in plots
    # TinyNet builds without arguments, so it is logged and registered as the champion
    version = client.get_model_version_by_alias("tiny-int8", "champion")
    assert version.tags["approach"] == "post_training_static_quant"
    model = mlflow.pyfunc.load_model("models:/tiny-int8@champion")
    x = torch.randn(2, 1, 20, 20)
    expected = outcome.q_model.model(x).numpy()
    assert np.array_equal(model.predict(x.numpy()), expected)


def test_int8_slower_than_fp32_is_registered_but_never_champion(tmp_path, monkeypatch, caplog):
    _fake_round(monkeypatch, fp32_ms=1.0, int8_ms=2.0)
    with caplog.at_level("INFO", logger="inc_flow"):
        outcome = _toy_run(tmp_path, lambda m: 0.9)
    result = outcome.result
    verdict = result.verdict
    assert outcome.q_model is not None and not result.faster_than_fp32
    assert verdict.startswith("fp32 is faster at batch 32: int8 (trial ")
    assert outcome.q_model.info["speed_verdict"] == verdict
    assert f"the model may not be @champion: {verdict}" in caplog.text
    client, parents, _ = _runs()
    tags, metrics = parents[0].data.tags, parents[0].data.metrics
    assert tags["inc_flow.faster_than_fp32"] == "False"
    assert tags["inc_flow.speed_verdict"] == verdict
    assert metrics["speedup"] == 0.5 and metrics["round_latency_ms"] == 2.0
    assert _aliases(client) == {"challenger": "1"}
    version = client.get_model_version("tiny-int8", "1")
    assert version.tags["alias_reason"] == verdict == version.tags["speed_verdict"]
    assert float(version.tags["latency_ms"]) == 2.0 and float(version.tags["speedup"]) == 0.5


def test_the_champion_is_timed_beside_the_new_model(tmp_path, monkeypatch):
    rounds = _fake_round(monkeypatch, fp32_ms=4.0, int8_ms=2.0, champion_ms=1.0)
    _toy_run(tmp_path / "a", lambda m: 0.9, max_trials=1)
    assert [c.kind for c in rounds[0]] == [FP32, TRIAL]  # no champion yet
    _toy_run(tmp_path / "b", lambda m: 0.9, max_trials=1, seed=1)  # other weights
    assert [(c.kind, c.name) for c in rounds[1]][-1] == (CHAMPION, "champion v1")
    client = MlflowClient()
    assert _aliases(client) == {"champion": "1", "challenger": "2"}
    reason = client.get_model_version("tiny-int8", "2").tags["alias_reason"]
    assert "is not faster in enough rounds than the champion v1 at batch 32" in reason


def test_a_trial_that_raises_is_a_failed_child_run_and_the_study_goes_on(tmp_path):
    calls = []

    def flaky(model):
        calls.append(1)
        if len(calls) == 2:  # the first trial (call 1 is the fp32 baseline)
            raise RuntimeError("sensor offline")
        return 0.9

    outcome = _toy_run(tmp_path, flaky)
    assert outcome.q_model is not None
    _, _, children = _runs()
    failed = [c for c in children if c.info.status == "FAILED"]
    assert len(failed) == 1
    assert "sensor offline" in failed[0].data.tags["inc_flow.failure_reason"]
    assert failed[0].data.tags["inc_flow.state"] == "error"


def test_rerun_resumes_into_the_same_parent_without_new_trials(tmp_path):
    _toy_run(tmp_path, lambda m: 0.9, max_trials=2)
    _toy_run(tmp_path, lambda m: 0.9, max_trials=2)
    _, parents, children = _runs()
    assert len(parents) == 1 and len(children) == 2


def _study_info() -> StudyInfo:
    """A one-op study ``s1`` as the tuner announces it to the trackers."""
    return StudyInfo(
        settings=TuneSettings(study_name="s1"),
        study_name="s1",
        storage=":memory:",
        baseline_accuracy=0.9,
        baseline_latency_ms=1.0,
        required_accuracy=0.89,
        ops=(("a", "Linear"),),
    )


def test_orphaned_child_runs_are_marked_killed(tmp_path):
    cfg = Config.from_dict({"model": {"name": "orphans"}})
    tracker = MlflowTracker(cfg)
    info = _study_info()
    tracker.study_started(info)
    tracker.trial_started(7, default_plan([("a", "Linear")]))
    tracker._children.clear()  # the process "dies": the run stays RUNNING
    tracker.close()
    again = MlflowTracker(cfg)
    again.study_started(StudyInfo(**{**info.__dict__, "stale_trials": (7,)}))
    again.close()
    _, _, children = _runs("orphans")
    assert [(c.data.tags[TAG_TRIAL], c.info.status) for c in children] == [("7", "KILLED")]


def test_a_worker_that_loses_the_race_to_log_the_study_params_logs_what_is_missing(
    monkeypatch,
):
    """Two workers read the parent's params, both find them missing and both write: the
    store refuses the second write (a duplicate key on PostgreSQL). The loser re-reads and
    logs only what is still missing, instead of failing the worker."""
    from mlflow.exceptions import MlflowException

    from inc_flow.record.values import study_params
    from inc_flow.vocab import Role

    cfg = Config.from_dict({"model": {"name": "race"}})
    client = MlflowClient()
    experiment = client.create_experiment("race")
    parent = client.create_run(experiment).info.run_id
    info = _study_info()
    worker = MlflowTracker(cfg, role=Role.WORKER, parent_id=parent)
    real = worker.client.log_batch
    calls = []

    def racing(run_id, metrics=(), params=(), tags=()):
        calls.append([p.key for p in params])
        if params and len(calls) == 1:  # the other worker wins between read and write
            client.log_batch(run_id, params=list(params)[:3])
            raise MlflowException("duplicate key value violates unique constraint param_pk")
        return real(run_id, metrics=metrics, params=params, tags=tags)

    monkeypatch.setattr(worker.client, "log_batch", racing)
    worker.study_started(info)
    worker.close()
    expected = study_params("race", info)
    assert len(calls[0]) == len(expected) and len(calls[1]) == len(expected) - 3
    logged = client.get_run(parent).data.params
    assert {key: logged[key] for key in expected} == {k: str(v) for k, v in expected.items()}
    client.set_terminated(parent)  # the worker never ends the study's parent run


def test_tracking_can_be_switched_off(tmp_path):
    _toy_run(tmp_path, lambda m: 0.9, max_trials=1, tracking={"enabled": False})
    assert MlflowClient().get_experiment_by_name("tiny") is None


@pytest.mark.slow
@pytest.mark.skipif(not FMNIST.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_mlflow_run_of_the_project(tmp_path, mlflow_tracking):
    conf = yaml.safe_load((ROOT / "conf" / "lenet_static.yaml").read_text())
    conf["tuning"]["workspace"]["path"] = str(tmp_path / "ws")
    conf["tuning"]["exit_policy"].update(timeout=600, max_trials=2)
    conf["evaluation"]["accuracy"]["iteration"] = 4
    conf["evaluation"]["performance"]["iteration"] = 5
    conf_path = tmp_path / "conf.yaml"
    conf_path.write_text(yaml.safe_dump(conf))
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    cmd = [
        str(bin_dir / "mlflow"),
        "run",
        str(ROOT),
        "--env-manager",
        "local",
        "-P",
        f"config={conf_path}",
        "-P",
        f"output={tmp_path / 'out'}",
    ]  # fmt: skip (no --experiment-name, as the README writes it)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    client, parents, children = _runs("lenet")
    assert len(parents) == 1 and len(children) == 2
    assert parents[0].data.tags[TAG_STUDY] == children[0].data.tags[TAG_STUDY]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert str(client.get_model_version_by_alias("lenet-int8", "champion").version) == "1"
    # the project run MLflow made in "Default" only points at the study (config's experiment)
    (project,) = client.search_runs(["0"])
    assert project.data.tags["inc_flow.recorded_in"] == f"lenet/{parents[0].info.run_id}"
    assert project.info.status == "FINISHED" and "inc_flow.role" not in project.data.tags
    from examples.lenet.model import LeNet
    from inc_flow import load

    x = np.random.RandomState(0).randn(3, 1, 28, 28).astype(np.float32)
    served = mlflow.pyfunc.load_model("models:/lenet-int8@champion").predict(x)
    local = load(tmp_path / "out", LeNet())(torch.from_numpy(x)).numpy()
    assert np.array_equal(served, local)
