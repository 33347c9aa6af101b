"""Module boundaries from STYLE.md, checked on the source text."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "inc_flow"


def _importers(pattern: str) -> set[str]:
    rx = re.compile(rf"^\s*(from|import)\s+{pattern}", re.M)
    return {p.name for p in PACKAGE.rglob("*.py") if rx.search(p.read_text())}


def test_only_fx_imports_torch_ao_quantization():
    assert _importers(r"torch\.ao") == {"graph.py"}


def test_mlflow_stays_out_of_the_core():
    allowed = {"tracking.py", "fetch.py", "pyfunc.py", "cli.py"}
    assert _importers(r"mlflow") <= allowed


def test_config_plan_and_space_do_not_need_torch():
    code = (
        "import sys, inc_flow.config, inc_flow.search.plan, inc_flow.search.space; "
        "import inc_flow.search.accuracy; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
