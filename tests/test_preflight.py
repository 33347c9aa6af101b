"""`check` OK means `tune` does not fail on the config: names, dataset roots, the workspace and
the output folder are checked by both, before any work; and the best model is saved locally
before MLflow logs and registers it.

The name rules of ``inc_flow.config.naming`` are copies of MLflow's (config/ imports no
mlflow); the first tests run MLflow's own validators and filter parser on the same names, so
a drift fails here.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml

from inc_flow import api, quantize
from inc_flow.cli import main as cli_main
from inc_flow.config import naming
from inc_flow.errors import ConfigError
from inc_flow.record import keys
from tests.helpers.stores import mlflow_template, prepare_mlflow, sleepy_config

NAMES = [
    "lenet", "lenet-int8", "team/lenet", "a:b", "../../x", "..x", ".x", "x.", "a//b", "./a",
    "a/.", "it's", 'say "hi"', "it's \"x\"", "a\\b", "ends\\", "50%", "a b", " lead", "trail ",
    "   ", "ü-名前", "a\tb", "semi;colon", "x' or '1'='1", "a" * 256, "a" * 257, "a" * 501,
]  # fmt: skip


def _mlflow_registry_ok(name: str) -> bool:
    from mlflow.exceptions import MlflowException
    from mlflow.store.model_registry import file_store
    from mlflow.utils import validation

    try:
        validation._validate_model_name(name)  # the SQL / REST stores
        file_store._validate_model_name(name)  # the file store adds its own
    except MlflowException:
        return False
    return True


def _mlflow_filter_ok(value: str) -> bool:
    """The value survives MLflow's run and model-version filter parsers, quoted as inc_flow
    quotes it, with a second clause after it."""
    from mlflow.utils.search_utils import SearchModelVersionUtils, SearchUtils

    try:
        runs = SearchUtils.parse_search_filter(f"{keys.tag_is('s', value)} and tags.r = 'x'")
        versions = SearchModelVersionUtils.parse_search_filter(
            f"name = {keys.quoted(value)} AND tags.`d` = 'x'"
        )
    except Exception:  # noqa: BLE001 - ValueError from quoted, MlflowException from the parser
        return False
    return [c["value"] for c in runs] == [value, "x"] and versions[0]["value"] == value


@pytest.mark.parametrize("name", NAMES, ids=range(len(NAMES)))
def test_registered_model_name_rule_is_mlflows_plus_the_column_and_the_filter(name):
    ours = naming.registered_name_problem(name) is None
    expected = _mlflow_registry_ok(name) and _mlflow_filter_ok(name) and len(name) <= 256
    assert ours == expected, naming.registered_name_problem(name)


@pytest.mark.parametrize("name", NAMES, ids=range(len(NAMES)))
def test_experiment_name_rule_is_mlflows_within_the_column(name):
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_experiment_name

    try:
        _validate_experiment_name(name)
        mlflow_ok = True
    except MlflowException:
        mlflow_ok = False
    assert (naming.experiment_problem(name) is None) == (mlflow_ok and len(name) <= 256)


@pytest.mark.parametrize("name", NAMES, ids=range(len(NAMES)))
def test_study_names_the_config_accepts_are_exactly_those_mlflow_filters_can_hold(name):
    within = len(name) <= naming.MAX_STUDY_NAME
    assert (naming.study_problem(name) is None) == (within and _mlflow_filter_ok(name))


def test_a_quoted_study_name_finds_its_runs_and_versions_in_a_real_store(
    tmp_path, tmp_path_factory, mlflow_tracking
):
    """`study_name: "it's"` once broke the filter string; now the lookups find it."""
    from mlflow import MlflowClient

    from inc_flow.model import registry
    from inc_flow.record import fetch

    template = mlflow_template(tmp_path_factory)
    experiment = prepare_mlflow(mlflow_tracking, template, "quotes", tmp_path)
    client = MlflowClient()
    tags = {keys.TAG_STUDY: "it's", keys.TAG_ROLE: keys.ROLE_STUDY}
    run = client.create_run(experiment, tags=tags)
    client.set_terminated(run.info.run_id)
    assert fetch.latest_parent(client, experiment, "it's") == run.info.run_id
    assert fetch.latest_parent(client, experiment, "it") is None
    name = 'say "hi"-int8'
    client.create_registered_model(name)
    version = client.create_model_version(name, "file:///nowhere", tags={"d": "1"})
    client.set_model_version_tag(name, version.version, registry.TAG_DIGEST, "sha256:1")
    assert registry.find_version(name, "sha256:1").version == version.version
    assert registry.find_version(name, "sha256:2") is None


# --- every bad input: `check` exits 2, `tune` refuses before any work ------------------------
def _conf(tmp: Path, **sections) -> dict:
    conf = {
        "model": {"name": "toy", "factory": "tests.toys:TinyNet"},
        "tuning": {"workspace": {"path": str(tmp / "ws")}},
    }
    for section, values in sections.items():
        conf[section] = {**conf.get(section, {}), **values}
    return conf


def _file(tmp: Path, name: str = "plain.txt") -> Path:
    path = tmp / name
    path.write_text("a regular file\n")
    return path


MNIST_ROOT = "/usr/share/datasets/mnist"
MNIST = {"calibration": {"dataloader": {"dataset": {"MNIST": {"train": False}}}}}
CASES = {
    # id: (sections of the config (given tmp), output (given tmp), key, value in the message)
    "output-under-a-file": (lambda t: {}, lambda t: _file(t) / "out", "--output", "plain.txt"),
    "output-is-a-file": (lambda t: {}, lambda t: _file(t), "--output", "plain.txt"),
    "workspace-under-a-file": (
        lambda t: {"tuning": {"workspace": {"path": str(_file(t) / "ws")}}},
        lambda t: None,
        "tuning.workspace.path",
        "plain.txt",
    ),
    "mnist-default-root": (
        lambda t: {"quantization": MNIST},
        lambda t: None,
        "quantization.calibration.dataloader.dataset.MNIST.root",
        MNIST_ROOT,
    ),
    "model-name-with-slash": (
        lambda t: {"model": {"name": "team/lenet"}},
        lambda t: None,
        "model.name",
        "team/lenet",
    ),
    "model-name-up-and-out": (
        lambda t: {"model": {"name": "../../x"}},
        lambda t: None,
        "model.name",
        "../../x",
    ),
    "model-name-with-colon": (
        lambda t: {"model": {"name": "team:lenet"}},
        lambda t: None,
        "model.name",
        "team:lenet-int8",
    ),
    "registered-name": (
        lambda t: {"tracking": {"registered_model_name": "team/lenet"}},
        lambda t: None,
        "tracking.registered_model_name",
        "team/lenet",
    ),
    "experiment-too-long": (
        lambda t: {"tracking": {"experiment": "e" * 300}},
        lambda t: None,
        "tracking.experiment",
        "300",
    ),
    "study-name-with-both-quotes": (
        lambda t: {"tuning": {"study_name": 'it\'s "x"'}},
        lambda t: None,
        "tuning.study_name",
        '"x"',
    ),
}


def _case(tmp: Path, case: str) -> tuple[dict, Path | None, str, str]:
    if case == "mnist-default-root" and os.path.isdir(MNIST_ROOT):
        pytest.skip(f"{MNIST_ROOT} exists on this machine")
    sections, output, key, value = CASES[case]
    conf = _conf(tmp)
    for section, values in sections(tmp).items():
        conf[section] = {**conf.get(section, {}), **values}
    return conf, output(tmp), key, value


@pytest.fixture
def no_work(monkeypatch):
    """Fails the test if tuning got as far as building the model (before any baseline)."""

    def assemble(*args, **kwargs):
        raise AssertionError("the model was built: the bad input was found too late")

    monkeypatch.setattr(api, "assemble", assemble)


@pytest.mark.no_mlflow
@pytest.mark.parametrize("case", list(CASES))
def test_check_and_tune_refuse_the_same_input_before_any_work(
    case, tmp_path, monkeypatch, capsys, no_work
):
    monkeypatch.chdir(tmp_path)
    conf, output, key, value = _case(tmp_path, case)
    path = tmp_path / "conf.yaml"
    path.write_text(yaml.safe_dump(conf))
    out_args = ["-o", str(output)] if output is not None else []

    assert cli_main(["check", str(path), *out_args]) == 2
    checked = capsys.readouterr().err
    assert f"`{key}`" in checked and value in checked, checked

    assert cli_main(["tune", str(path), *out_args]) == 2
    assert capsys.readouterr().err == checked  # the same lines: the same checks

    with pytest.raises(ConfigError) as e:
        quantize(conf, output=output)
    assert key.lstrip("-") in e.value.path and value in str(e.value)
    assert not (tmp_path / "ws").exists() and not (tmp_path / "outputs").exists()


@pytest.mark.no_mlflow
def test_the_default_output_is_checked_when_no_output_is_given(
    tmp_path, monkeypatch, capsys, no_work
):
    monkeypatch.chdir(tmp_path)
    _file(tmp_path, "outputs")  # outputs/<model.name> cannot be made
    path = tmp_path / "conf.yaml"
    path.write_text(yaml.safe_dump(_conf(tmp_path)))
    assert cli_main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "`--output`" in err and "'outputs/toy'" in err and "is a file" in err, err
    assert cli_main(["tune", str(path)]) == 2


@pytest.mark.no_mlflow
def test_a_good_config_passes_check_with_its_output(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "conf.yaml"
    path.write_text(yaml.safe_dump(_conf(tmp_path, tuning={"study_name": "it's"})))
    assert cli_main(["check", str(path), "-o", str(tmp_path / "new" / "out")]) == 0
    assert "OK" in capsys.readouterr().out
    assert not (tmp_path / "new").exists() and not (tmp_path / "ws").exists()


# --- order of publishing: saved locally first, then logged and registered --------------------
def _failing_register(expect: Path):
    def register(*args, **kwargs):
        assert (expect / "best_configure.yaml").is_file(), "registered before the local save"
        raise RuntimeError("the registry is down")

    return register


def test_a_registration_failure_leaves_the_saved_output_and_says_where(
    tmp_path, tmp_path_factory, mlflow_tracking, monkeypatch, capsys
):
    from inc_flow import load
    from inc_flow.model import registry
    from tests.toys import SleepyNet

    prepare_mlflow(mlflow_tracking, mlflow_template(tmp_path_factory), "sleepy", tmp_path / "a")
    config = sleepy_config(tmp_path, "order", 1, "sleepy")
    out = tmp_path / "out"
    monkeypatch.setattr(registry, "register", _failing_register(out))

    # a registry that fails is a tracking failure: exit 4, the model saved, the log says so
    assert cli_main(["tune", str(config), "-o", str(out)]) == 4
    captured = capsys.readouterr()
    assert "the registry is down" in captured.out, captured.out
    assert f"saved best_configure.yaml and weights to {out}" in captured.out
    assert "not recorded: the best model" in captured.err, captured.err
    model = load(out, SleepyNet())  # best_configure.yaml + weights, complete
    assert model(torch.zeros(2, 1, 20, 20)).shape == (2, 10)


def test_the_python_api_keeps_the_model_in_the_workspace_when_registration_fails(
    tmp_path, tmp_path_factory, mlflow_tracking, monkeypatch
):
    from inc_flow.model import registry
    from tests.toys import TinyNet

    prepare_mlflow(mlflow_tracking, mlflow_template(tmp_path_factory), "tiny", tmp_path / "a")
    kept = tmp_path / "ws" / "best_model"
    monkeypatch.setattr(registry, "register", _failing_register(kept))
    conf = _conf(tmp_path, tuning={"accuracy_criterion": {"absolute": 0.5}})
    torch.manual_seed(0)
    x = torch.randn(32, 1, 20, 20)
    outcome = quantize(conf, model=TinyNet().eval(), calib_dataloader=[x], eval_func=lambda m: 0.9)
    assert outcome.q_model is not None
    assert any("best model" in what for what in outcome.unrecorded), outcome.unrecorded
    assert (kept / "best_configure.yaml").is_file()
