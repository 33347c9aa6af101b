"""Packaging (issue 17): ruff pinned to the installed version and run by CI before the tests,
on Python files only; the PostgreSQL driver is the ``[postgres]`` extra."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.no_mlflow

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_ruff_is_pinned_to_the_installed_version():
    dev = PROJECT["project"]["optional-dependencies"]["dev"]
    (ruff,) = [r for r in dev if r.startswith("ruff")]
    assert ruff == f"ruff=={importlib.metadata.version('ruff')}"


def test_psycopg2_is_the_postgres_extra_and_setup_installs_it():
    assert not [d for d in PROJECT["project"]["dependencies"] if "psycopg" in d]
    assert PROJECT["project"]["optional-dependencies"]["postgres"] == ["psycopg2-binary>=2.9"]
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    (install,) = re.findall(r'pip install -q -e "\.\[([a-z,]+)\]"', setup)
    assert {"dev", "postgres"} <= set(install.split(","))


def test_ci_runs_lint_before_the_tests():
    commands = [
        line.split("#")[0].strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.startswith("make ")
    ]
    assert commands == ["make lint", "make test"]
    lint = (ROOT / "Makefile").read_text().split("\nlint:")[1].split("\n\n")[0]
    assert "ruff check ." in lint and "ruff format --check ." in lint


def test_ruff_reads_python_files_only(tmp_path):
    """A Markdown file with a badly formatted Python block is not formatted (what failed
    `make lint` with a newer ruff), while a badly formatted .py file is."""
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    block = "```python\nx = {  'a':1 }\n```\n"
    (tmp_path / "README.md").write_text(f"# t\n\n{block}")
    (tmp_path / "bad.py").write_text("x = {  'a':1 }\n")
    ruff = Path(sys.executable).parent / "ruff"
    done = subprocess.run(
        [str(ruff), "format", "--check", "."], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "bad.py" in done.stdout and "README.md" not in done.stdout + done.stderr
    assert "1 file would be reformatted" in done.stdout
