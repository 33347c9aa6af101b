"""A Python script that configures no logging sees INC's lines on stderr; one that does, or
that silences inc_flow with a NullHandler, sees nothing from us (inc_flow/logs.py)."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from inc_flow.errors import ConfigError
from inc_flow.logs import LEVEL_ENV, default_handler

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import logging, sys, torch
from inc_flow import Quantization
from tests.toys import TinyNet
{setup}
torch.manual_seed(0)
q = Quantization({{
    "model": {{"name": "tiny"}},
    "tracking": {{"enabled": False}},
    "tuning": {{"workspace": {{"path": sys.argv[1]}}, "exit_policy": {{"max_trials": 1}},
                "accuracy_criterion": {{"absolute": 0.5}}}},
}})
q.model = TinyNet().eval()
q.calib_dataloader = [torch.randn(8, 1, 20, 20)]
q.eval_func = lambda m: 0.9
assert q() is not None
"""


def _run(tmp_path: Path, setup: str = "", env: dict | None = None) -> str:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(SCRIPT.format(setup=setup)))
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "ws")],
        cwd=ROOT,
        env={**_env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


def _env() -> dict:
    import os

    env = {k: v for k, v in os.environ.items() if k != LEVEL_ENV}
    env["PYTHONPATH"] = str(ROOT)
    return env


def test_an_unconfigured_script_prints_the_trial_lines_and_the_statistics(tmp_path):
    err = _run(tmp_path)
    assert "[INFO]" in err
    assert "Mixed Precision Statistics" in err
    assert "fp32 fallbacks" in err


def test_a_null_handler_silences_it(tmp_path):
    quiet = 'logging.getLogger("inc_flow").addHandler(logging.NullHandler())'
    err = _run(tmp_path, quiet)
    assert "Mixed Precision Statistics" not in err and "[INFO]" not in err


def _fresh() -> tuple[logging.Logger, logging.Logger]:
    """An ``inc_flow`` logger and a root logger as a plain script has them: no handlers."""
    return logging.Logger("inc_flow"), logging.RootLogger(logging.WARNING)


def test_the_level_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(LEVEL_ENV, "warning")
    log, root = _fresh()
    handler = default_handler(log, root)
    assert handler is not None and log.handlers == [handler]
    assert log.level == logging.WARNING
    assert default_handler(log, root) is None  # once attached, never twice


def test_a_bad_level_names_the_variable(monkeypatch):
    monkeypatch.setenv(LEVEL_ENV, "LOUD")
    log, root = _fresh()
    with pytest.raises(ConfigError, match=f"{LEVEL_ENV}` must be one of .* got 'LOUD'"):
        default_handler(log, root)
    assert log.handlers == []  # nothing attached on a bad level


def test_an_application_that_configured_logging_keeps_its_own():
    log, root = _fresh()
    root.addHandler(logging.StreamHandler())  # as logging.basicConfig() does
    assert default_handler(log, root) is None and log.handlers == []
    log, root = _fresh()
    log.addHandler(logging.NullHandler())  # the documented way to silence inc_flow
    assert default_handler(log, root) is None and len(log.handlers) == 1
