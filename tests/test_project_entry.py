"""The MLproject entry point names the interpreter and the fix when the environment is missing."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.no_mlflow

ROOT = Path(__file__).resolve().parents[1]
ENTRY = ROOT / "scripts" / "project_entry.py"


def run(python: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python, str(ENTRY), *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_the_mlproject_runs_the_entry_point():
    text = (ROOT / "MLproject").read_text()
    assert "python scripts/project_entry.py tune {config}" in text
    assert "python -m inc_flow.cli" not in text


@pytest.mark.skipif(
    not shutil.which("python3", path="/usr/bin"), reason="no system python3 to play the bare PATH"
)
def test_a_python_without_the_environment_gets_a_hint_and_exit_2():
    probe = subprocess.run(["/usr/bin/python3", "-c", "import torch"], capture_output=True)
    if probe.returncode == 0:
        pytest.skip("the system python3 has torch: it cannot play the missing environment")
    done = run("/usr/bin/python3", "tune", "conf/lenet_static.yaml")
    assert done.returncode == 2
    assert "torch" in done.stderr and "/usr/bin/python3" in done.stderr
    assert "scripts/setup.sh" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_environment_runs_the_cli():
    done = run(sys.executable, "--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("inc-flow ")
