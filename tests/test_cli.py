"""The command line for users (issue 17): ``--version``, global flags after the command, the
help text, and a PostgreSQL URL whose driver is missing (the ``[postgres]`` extra). In process.
"""

from __future__ import annotations

import importlib.metadata
import logging
import sys
from pathlib import Path

import pytest
import yaml

from inc_flow import api, cli
from inc_flow.config.drivers import missing_driver
from inc_flow.errors import TrackingError

PG = "postgresql+psycopg2://postgres@127.0.0.1:1/optuna"
COMMANDS = ("tune", "finalize", "check", "stats", "report", "compare")


def _conf(tmp: Path, **tuning) -> Path:
    conf = {
        "model": {"name": "toy", "factory": "tests.toys:TinyNet"},
        "tuning": {"workspace": {"path": str(tmp / "ws")}, **tuning},
    }
    path = tmp / "conf.yaml"
    path.write_text(yaml.safe_dump(conf))
    return path


@pytest.fixture
def no_psycopg2(monkeypatch):
    """psycopg2 as if not installed: importing it fails, as without the [postgres] extra."""
    monkeypatch.setitem(sys.modules, "psycopg2", None)


@pytest.fixture
def no_tuning(monkeypatch):
    def quantize(*args, **kwargs):
        raise AssertionError("tuning started: the bad input was found too late")

    monkeypatch.setattr(api, "quantize", quantize)


@pytest.fixture(autouse=True)
def inc_flow_logger():
    """main() configures the `inc_flow` logger; put it back afterwards."""
    logger = logging.getLogger("inc_flow")
    saved = logger.handlers[:], logger.level, logger.propagate
    yield logger
    logger.handlers[:], logger.level, logger.propagate = saved


# --- --version, --help -----------------------------------------------------------------------
@pytest.mark.no_mlflow
def test_version_prints_the_installed_versions(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"inc-flow {importlib.metadata.version('inc-flow')} (torch ")
    assert f"mlflow {importlib.metadata.version('mlflow')}" in out and "Python 3." in out


@pytest.mark.no_mlflow
def test_help_is_written_for_users(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "only module" not in text and "sys.exit" not in text  # no developer note
    assert text.startswith("usage: inc-flow [-h] [--version] [--log-level LEVEL] COMMAND")
    lines = text.splitlines()
    for command in COMMANDS:  # each command listed with a short description
        (line,) = [x for x in lines if x.strip().startswith(command + " ")]
        assert len(line.split()) > 3, line
    codes = lines[lines.index("exit codes:") + 1 :]
    assert [c.split()[0] for c in codes if c.startswith("  ") and c.split()[0].isdigit()] == [
        "0",
        "1",
        "2",
        "3",
        "4",
    ]


@pytest.mark.no_mlflow
@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_the_global_options(command, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([command, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "--log-level LEVEL" in text and "exit codes: see `inc-flow --help`" in text


# --- global flags before or after the command ------------------------------------------------
@pytest.mark.no_mlflow
@pytest.mark.parametrize(
    ("argv", "level"),
    [
        (["tune", "c.yaml"], "INFO"),
        (["--log-level", "DEBUG", "tune", "c.yaml"], "DEBUG"),
        (["tune", "c.yaml", "--log-level", "DEBUG"], "DEBUG"),
        (["tune", "--log-level", "warning", "c.yaml"], "WARNING"),
        (["--log-level", "ERROR", "tune", "c.yaml", "--log-level", "DEBUG"], "DEBUG"),
        (["report", "--experiment", "x", "--log-level", "error"], "ERROR"),
    ],
)
def test_log_level_is_taken_before_and_after_the_command(argv, level):
    assert cli.build_parser().parse_args(argv).log_level == level


@pytest.mark.no_mlflow
def test_log_level_after_the_command_sets_the_logger(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["check", str(_conf(tmp_path)), "--log-level", "DEBUG"]) == 0
    assert logging.getLogger("inc_flow").level == logging.DEBUG
    assert "OK" in capsys.readouterr().out


@pytest.mark.no_mlflow
def test_a_bad_log_level_is_a_usage_error_naming_it(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["check", "c.yaml", "--log-level", "LOUD"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--log-level" in err and "'LOUD'" in err and "DEBUG" in err, err


# --- PostgreSQL without its driver -----------------------------------------------------------
@pytest.mark.no_mlflow
def test_missing_driver_names_the_extra(no_psycopg2, monkeypatch):
    problem = missing_driver(PG)
    assert "'psycopg2'" in problem and "pip install 'inc-flow[postgres]'" in problem
    monkeypatch.setitem(sys.modules, "psycopg", None)
    plain = missing_driver("postgresql://postgres@127.0.0.1:1/optuna")
    assert "'psycopg'" in plain and "postgresql+psycopg2://" in plain and "[postgres]" in plain
    for url in ("sqlite:///x.db", "mysql://h/db", "http://127.0.0.1:5000", ":memory:"):
        assert missing_driver(url) is None


@pytest.mark.no_mlflow
def test_an_installed_driver_is_not_a_problem(monkeypatch):
    monkeypatch.setattr("inc_flow.config.drivers._installed", lambda module: True)
    assert missing_driver(PG) is None


@pytest.mark.no_mlflow
def test_tune_with_a_postgres_storage_and_no_driver_exits_2_naming_the_extra(
    tmp_path, monkeypatch, capsys, no_psycopg2, no_tuning
):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["tune", str(_conf(tmp_path)), "--storage", PG]) == 2
    err = capsys.readouterr().err
    assert "`--storage`" in err and PG in err and "inc-flow[postgres]" in err, err
    assert not (tmp_path / "ws").exists() and not (tmp_path / "outputs").exists()


@pytest.mark.no_mlflow
def test_check_names_a_postgres_storage_and_tracking_uri_without_driver(
    tmp_path, monkeypatch, capsys, no_psycopg2
):
    monkeypatch.chdir(tmp_path)
    path = _conf(tmp_path, storage=PG)
    conf = yaml.safe_load(path.read_text())
    conf["tracking"] = {"uri": PG.replace("optuna", "mlflow")}
    path.write_text(yaml.safe_dump(conf))
    assert cli.main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "`tuning.storage`" in err and "`tracking.uri`" in err, err
    assert err.count("inc-flow[postgres]") == 2, err


def test_a_postgres_tracking_store_without_driver_is_a_tracking_error(no_psycopg2):
    from inc_flow.record.store import reach

    with pytest.raises(TrackingError, match=r"inc-flow\[postgres\]") as e:
        reach("postgresql+psycopg2://postgres@127.0.0.1:1/mlflow")
    assert "postgresql+psycopg2://postgres@127.0.0.1:1/mlflow" in str(e.value)
