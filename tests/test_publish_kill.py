"""`kill -9` of `inc-flow tune` at each publishing step, then the same command again.

A real subprocess tunes ``tests.toys:sleepy_net`` (no sleep) and SIGKILLs itself at the step
named by the test hook ``INC_FLOW_TEST_KILL_AT`` (:func:`inc_flow.model.registry.fault_point`):
after the pyfunc is logged, after the version is registered (before its alias), after the
alias is set. The rerun, without the hook, must leave exactly one version, the champion,
one logged model, and the parent run naming the version.
"""

from __future__ import annotations

import mlflow
import pytest
from mlflow import MlflowClient

from inc_flow.model import registry
from inc_flow.record import keys
from tests.helpers.stores import mlflow_template, prepare_mlflow, sleepy_config, start_tune
from tests.toys import SLEEP_ENV

pytestmark = pytest.mark.slow
STUDY = "publish"


@pytest.mark.parametrize(
    "step", [registry.AFTER_LOG_MODEL, registry.AFTER_REGISTER, registry.AFTER_ALIAS]
)
def test_kill_9_at_a_publishing_step_then_rerun_leaves_one_version_and_one_champion(
    tmp_path, tmp_path_factory, mlflow_tracking, step
):
    experiment = prepare_mlflow(
        mlflow_tracking, mlflow_template(tmp_path_factory), "sleepy", tmp_path / "art"
    )
    config = sleepy_config(tmp_path, STUDY, 2, "sleepy")
    out = tmp_path / "out"
    first = start_tune(
        config, out, tmp_path / "first.log", **{SLEEP_ENV: "0", registry.KILL_AT_ENV: step}
    )
    assert first.wait(timeout=300) == -9, (tmp_path / "first.log").read_text()[-3000:]
    client = MlflowClient(mlflow_tracking)
    name = f"{STUDY}-int8"
    killed_with = client.search_model_versions(f"name = '{name}'")
    assert len(killed_with) == (0 if step == registry.AFTER_LOG_MODEL else 1)

    second = start_tune(config, out, tmp_path / "second.log", **{SLEEP_ENV: "0"})
    assert second.wait(timeout=300) == 0, (tmp_path / "second.log").read_text()[-3000:]
    log = (tmp_path / "second.log").read_text()

    versions = client.search_model_versions(f"name = '{name}'")
    assert [str(v.version) for v in versions] == ["1"]
    assert {a: str(v) for a, v in client.get_registered_model(name).aliases.items()} == {
        "champion": "1"
    }
    assert versions[0].tags[keys.VERSION_DIGEST].startswith("sha256:")
    logged = mlflow.search_logged_models(experiment_ids=[experiment], output_format="list")
    assert len(logged) == 1, "the rerun logged the model again"
    if step != registry.AFTER_LOG_MODEL:
        assert f"{name} version 1 holds this model already" in log
    parents = client.search_runs([experiment], keys.tag_is(keys.TAG_ROLE, keys.ROLE_STUDY))
    assert [p.data.tags.get(keys.TAG_REGISTERED_VERSION) for p in parents] == ["1"]
    assert [p.info.status for p in parents] == ["FINISHED"]
    assert (out / "best_configure.yaml").is_file()
