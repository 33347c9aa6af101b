"""The bad config corpus (tests/bad_configs/): each file is rejected before any work.

Every file starts with ``# expect: <key path>`` (``(file)`` for problems of the file itself:
yaml syntax, an empty file), optionally ``# match: <regex>`` for the message,
``# xfail: <why>`` for a known gap (a strict xfail: it fails once fixed) and
``# stage: run`` for configs that are well-formed but name something unusable (a factory, a
weights file, a data directory): ``Config.from_yaml`` accepts those, ``inc-flow tune`` must
still reject them before any work. Each file goes through ``Config.from_yaml`` and through
``inc-flow tune`` (in-process); the CLI must exit 2, name the key path, and write nothing:
no MLflow experiment or run, no Optuna study, no workspace, no output directory. Only the
``inc-flow tune`` tests get an MLflow store (tests/conftest.py); the others are ``no_mlflow``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from inc_flow.cli import main as cli_main
from inc_flow.config.sections import Config
from inc_flow.errors import ConfigError

CORPUS = Path(__file__).resolve().parent / "bad_configs"
FILES = sorted(CORPUS.glob("*.yaml"))
# Files that cannot carry a header comment.
HEADERLESS = {"empty.yaml": {"expect": "(file)", "match": "is empty"}}
MISSING = CORPUS / "does_not_exist.yaml"


def _expectation(path: Path) -> dict[str, str]:
    if path.name in HEADERLESS:
        return HEADERLESS[path.name]
    if not path.exists():
        return {"expect": "(file)", "match": "config file not found"}
    head = dict(re.findall(r"^# (expect|match|stage|xfail): (.*)$", path.read_text(), re.M))
    assert "expect" in head, f"{path.name} has no '# expect: <key path>' header"
    return head


def _check_message(message: str, problems: list[str], want: dict[str, str]) -> None:
    if want["expect"] == "(file)":
        assert problems in ([], [""]), problems
    else:
        assert f"`{want['expect']}`" in message, message
    if "match" in want:
        assert re.search(want["match"], message, re.S), message


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """An empty working directory holding only the files the `run` stage configs name."""
    monkeypatch.chdir(tmp_path)
    torch.save({"other.weight": torch.zeros(3)}, tmp_path / "other_model.pt")
    (tmp_path / "notes.txt").write_text("not a state dict\n")
    return tmp_path


@pytest.fixture
def restore_logging():
    """The CLI configures the `inc_flow` logger; later tests expect it untouched."""
    log = logging.getLogger("inc_flow")
    saved = (log.handlers[:], log.level, log.propagate)
    yield
    log.handlers[:], log.level, log.propagate = saved


@pytest.mark.no_mlflow
def test_the_corpus_is_large_and_covers_each_section():
    assert len(FILES) >= 50
    paths = [_expectation(f)["expect"] for f in FILES]
    for section in ("model", "quantization", "evaluation", "tuning", "tracking", "(file)"):
        assert sum(p.startswith(section) for p in paths) >= 2, section


@pytest.mark.no_mlflow
@pytest.mark.parametrize("path", [*FILES, MISSING], ids=lambda p: p.stem)
def test_config_from_yaml_names_the_key_path(path, workdir):
    want = _expectation(path)
    if want.get("stage") == "run":
        Config.from_yaml(path)  # well-formed: the CLI test below rejects it at run start
        return
    with pytest.raises(ConfigError) as e:
        Config.from_yaml(path)
    problems = [p for p, _ in getattr(e.value, "problems", [(e.value.path, "")])]
    _check_message(str(e.value), problems, want)
    if want["expect"] != "(file)":
        assert want["expect"] in problems
        assert str(path) in str(e.value)  # which file


def _cases() -> list:
    """Every file, the known failures (``# xfail: why``) marked strict xfail."""
    cases = []
    for path in [*FILES, MISSING]:
        why = _expectation(path).get("xfail")
        marks = [pytest.mark.xfail(reason=why, strict=True)] if why else []
        cases.append(pytest.param(path, marks=marks, id=path.stem))
    return cases


@pytest.mark.parametrize("path", _cases())
def test_cli_tune_rejects_before_any_work(path, workdir, mlflow_tracking, capsys, restore_logging):
    want = _expectation(path)
    before = sorted(p.name for p in workdir.iterdir())
    code = cli_main(["tune", str(path), "-o", "out"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("inc-flow: error: ")
    _check_message(err, [] if want["expect"] == "(file)" else [want["expect"]], want)
    assert "Traceback" not in err
    # Nothing written: no workspace, optuna.db, output or mlruns directory here ...
    assert sorted(p.name for p in workdir.iterdir()) == before
    # ... and no MLflow experiment or run.
    db = Path(mlflow_tracking.removeprefix("sqlite:///"))
    if db.exists():
        client = MlflowClient(mlflow_tracking)
        experiments = client.search_experiments()
        assert [x.name for x in experiments] in ([], ["Default"])
        assert not client.search_runs([x.experiment_id for x in experiments])
