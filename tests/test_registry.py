"""The registry is idempotent: one version per distinct model, whatever the reruns.

Each version carries a content digest (the plan part of ``best_configure.yaml`` and the int8
weights); a model whose digest is registered is neither logged nor registered again, and a
version left without an alias gets it on the next attempt. Real tunes of a TinyNet (its
class is the factory, so the model is logged and registered) into the per-test store; the
real ``kill -9`` at each publishing step is in tests/test_publish_kill.py.
"""

from __future__ import annotations

import logging
import re
import signal
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow import MlflowClient

from inc_flow import quantize
from inc_flow.model import registry
from inc_flow.model.output import QuantizedModel
from inc_flow.quant.graph import calibrate, convert, list_ops, prepare
from inc_flow.record import keys
from inc_flow.search.plan import default_plan
from inc_flow.vocab import Approach
from tests.toys import TinyNet

NAME = "tiny-int8"


class Killed(BaseException):  # like SIGKILL: no handler may swallow it
    """Stands for the SIGKILL of the fault hook, in process."""


def _tune(workspace: Path, study: str = "inc_flow", max_trials: int = 1, seed: int = 0):
    torch.manual_seed(seed)  # the TinyNet's weights: another seed, another model
    model = TinyNet().eval()
    x = torch.randn(32, 1, 20, 20)
    config = {
        "model": {"name": "tiny"},
        "tuning": {
            "workspace": {"path": str(workspace)},
            "study_name": study,
            "exit_policy": {"timeout": 600, "max_trials": max_trials},
            "accuracy_criterion": {"absolute": 0.5},
        },
    }
    return quantize(config, model=model, calib_dataloader=[x], eval_func=lambda m: 0.9)


def _registry_state() -> tuple[list[str], dict[str, str], int]:
    """(versions, aliases, logged models in the experiment) of the ``tiny`` study."""
    client = MlflowClient()
    versions = sorted(str(v.version) for v in client.search_model_versions(f"name = '{NAME}'"))
    aliases = {a: str(v) for a, v in client.get_registered_model(NAME).aliases.items()}
    return versions, aliases, len(_logged_models())


def _logged_models() -> list:
    experiment = MlflowClient().get_experiment_by_name("tiny").experiment_id
    return mlflow.search_logged_models(experiment_ids=[experiment], output_format="list")


def _parent_versions() -> list[str | None]:
    client = MlflowClient()
    experiment = client.get_experiment_by_name("tiny").experiment_id
    parents = client.search_runs([experiment], keys.tag_is(keys.TAG_ROLE, keys.ROLE_STUDY))
    return [p.data.tags.get(keys.TAG_REGISTERED_VERSION) for p in parents]


# --- the digest ----------------------------------------------------------------------------
def _int8(fallback: set[str] = frozenset(), scale: float = 1.0) -> QuantizedModel:
    torch.manual_seed(0)
    model = TinyNet().eval()
    with torch.no_grad():
        model.fc2.weight.mul_(scale)
    x = torch.randn(8, 1, 20, 20)
    plan = default_plan(list_ops(model, Approach.STATIC.value), approach=Approach.STATIC.value)
    plan = plan.with_fallback(set(fallback))
    prepared = prepare(model, plan.calibration_plan(), (x,))
    calibrate(prepared, [x], 8, lambda m, b: (m(b), b.shape[0])[1])
    return QuantizedModel(convert(prepared, plan), plan, (x,), calibration_size=8)


def test_content_digest_covers_plan_and_weights_not_scores(tmp_path):
    model = _int8()
    model.save(tmp_path / "a")
    digest = registry.content_digest(tmp_path / "a")
    assert digest.startswith("sha256:") and len(digest) == len("sha256:") + 64
    model.info = {"accuracy": 0.5, "latency_ms": 9.9}  # measured again: the same model
    model.save(tmp_path / "b")
    assert registry.content_digest(tmp_path / "b") == digest
    _int8(scale=2.0).save(tmp_path / "weights")  # other weights, the same plan
    assert registry.content_digest(tmp_path / "weights") != digest
    _int8({"fc2"}).save(tmp_path / "plan")
    assert registry.content_digest(tmp_path / "plan") != digest


# --- publishing twice ------------------------------------------------------------------------
def test_the_same_tuned_model_twice_is_one_version_and_the_log_names_it(tmp_path, caplog):
    first = _tune(tmp_path / "ws1", study="first")
    with caplog.at_level(logging.INFO, logger="inc_flow"):
        second = _tune(tmp_path / "ws2", study="second")  # another study, the same model
    assert first.q_model is not None and second.q_model is not None
    versions, aliases, logged = _registry_state()
    assert versions == ["1"] and aliases == {"champion": "1"}
    assert logged == 1, "the second study logged the same model again"
    assert f"{NAME} version 1 holds this model already" in caplog.text
    assert "not registered again" in caplog.text
    assert sorted(_parent_versions()) == ["1", "1"]  # both studies name the version
    tags = MlflowClient().get_model_version(NAME, "1").tags
    assert tags[keys.VERSION_DIGEST].startswith("sha256:")
    (logged_model,) = _logged_models()
    assert logged_model.tags[keys.VERSION_DIGEST] == tags[keys.VERSION_DIGEST]


def test_rerunning_a_finished_study_twice_adds_no_version(tmp_path):
    for _ in range(3):
        _tune(tmp_path / "ws", max_trials=2)
    versions, aliases, logged = _registry_state()
    assert versions == ["1"] and aliases == {"champion": "1"} and logged == 1
    assert _parent_versions() == ["1"]


@pytest.mark.parametrize(
    "step", [registry.AFTER_LOG_MODEL, registry.AFTER_REGISTER, registry.AFTER_ALIAS]
)
def test_a_publish_cut_short_at_any_step_heals_on_the_rerun(tmp_path, monkeypatch, step):
    def cut(at: str) -> None:
        if at == step:
            raise Killed(at)

    monkeypatch.setattr(registry, "fault_point", cut)
    with pytest.raises(Killed):
        _tune(tmp_path / "ws")
    client = MlflowClient()
    cut_short = client.search_model_versions(f"name = '{NAME}'")
    assert len(cut_short) == (0 if step == registry.AFTER_LOG_MODEL else 1)
    if step == registry.AFTER_REGISTER:  # registered, no alias yet
        assert client.get_registered_model(NAME).aliases == {}
    monkeypatch.undo()
    _tune(tmp_path / "ws")  # the same command again: the finished study is published again
    versions, aliases, logged = _registry_state()
    assert versions == ["1"] and aliases == {"champion": "1"}
    assert logged == 1, "the model logged before the cut was logged again"
    reason = client.get_model_version(NAME, "1").tags[keys.VERSION_ALIAS_REASON]
    assert reason == "there is no champion yet"


def test_a_version_left_without_alias_is_judged_against_the_champion(tmp_path, monkeypatch):
    _tune(tmp_path / "ws1", study="first")
    client = MlflowClient()
    # Make version 1 a slow champion, then cut the next model's publish after registering.
    client.set_model_version_tag(NAME, "1", keys.VERSION_LATENCY_MS, "1000.0")
    monkeypatch.setattr(registry, "fault_point", _raise_at(registry.AFTER_REGISTER))
    with pytest.raises(Killed):
        _tune(tmp_path / "ws2", study="second", seed=1)  # another model
    assert client.get_model_version(NAME, "2").aliases == []
    client.delete_model_version_tag(NAME, "2", keys.VERSION_ALIAS_REASON)
    monkeypatch.undo()
    _tune(tmp_path / "ws2", study="second", seed=1)
    versions, aliases, _ = _registry_state()
    assert versions == ["1", "2"] and aliases == {"champion": "2"}
    reason = client.get_model_version(NAME, "2").tags[keys.VERSION_ALIAS_REASON]
    both = re.fullmatch(r"it is faster \(\d+\.(\d+) ms < 1000\.(\d+) ms\)", reason)
    assert both and len(both[1]) == len(both[2]), reason  # both numbers alike


def _raise_at(step: str):
    def cut(at: str) -> None:
        if at == step:
            raise Killed(at)

    return cut


# --- the reason texts --------------------------------------------------------------------------
FACTS = {"eval_data": "d", "criterion": "c", "meets_target": True}


@pytest.mark.parametrize(
    ("new_ms", "current_ms", "reason"),
    [
        (1.5498779999916223, 1.55, "it is faster (1.5499 ms < 1.5500 ms)"),
        (1.55, 1.55, "it is not faster than the champion (1.55 ms vs 1.55 ms)"),
        (
            1.5498779999916223,
            1.5498779999916223,
            "it is not faster than the champion (1.55 ms vs 1.55 ms)",
        ),
        (2.5, 2.0, "it is not faster than the champion (2.50 ms vs 2.00 ms)"),
        (0.0123456, 11.9, "it is faster (0.0123 ms < 11.9000 ms)"),
        (850.25, 1234.5, "it is faster (850 ms < 1234 ms)"),
    ],
)
def test_reason_texts_print_both_numbers_alike(new_ms, current_ms, reason):
    new = {**FACTS, "latency_ms": new_ms}
    current = {**FACTS, "latency_ms": current_ms}
    assert registry.alias_reason(new, current) == reason


def test_the_kill_hook_only_fires_at_its_step(monkeypatch):
    killed = []
    monkeypatch.setattr(registry.os, "kill", lambda pid, sig: killed.append((pid, sig)))
    monkeypatch.setenv(registry.KILL_AT_ENV, registry.AFTER_REGISTER)
    registry.fault_point(registry.AFTER_LOG_MODEL)
    assert killed == []
    registry.fault_point(registry.AFTER_REGISTER)
    assert killed == [(registry.os.getpid(), signal.SIGKILL)]
