"""Package boundaries (ARCHITECTURE.md), checked on the import graph of the whole package.

Every ``import`` statement counts, at any depth: lazy imports inside functions too. The rules:
mlflow only in record/, model/, publish, scaleout and cli; optuna only in search/ and scaleout;
torch.ao only in quant/; config/ and search/ import no torch; inc_flow never imports
``dashboards``; the dashboards import no mlflow; no import cycle inside inc_flow.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.importgraph import Rule, check, cycles, import_graph, line_counts, read_sources

pytestmark = pytest.mark.no_mlflow

ROOT = Path(__file__).resolve().parents[1]
RULES = (
    Rule("mlflow", allowed=("record", "model", "publish", "scaleout", "cli")),
    Rule("optuna", allowed=("search", "scaleout")),
    Rule("torch.ao", allowed=("quant",)),
    Rule("torch", forbidden_in=("config", "search")),
    Rule("dashboards", allowed=()),
    Rule("inc_flow_dashboards", allowed=()),
)
DASHBOARD_RULES = (Rule("mlflow", allowed=()),)


@pytest.fixture(scope="module")
def sources() -> dict[str, str]:
    return read_sources(ROOT / "inc_flow", "inc_flow")


def test_the_package_keeps_its_boundaries(sources):
    assert check(import_graph(sources), RULES) == []


def test_the_dashboards_render_only(sources):
    dashboards = read_sources(ROOT / "dashboards", "inc_flow_dashboards")
    assert check(import_graph(dashboards), DASHBOARD_RULES) == []


@pytest.mark.parametrize(
    ("module", "line", "expected"),
    [
        ("inc_flow.search.loop", "import mlflow", "mlflow"),
        ("inc_flow.search.loop", "from mlflow.tracking import MlflowClient", "mlflow"),
        ("inc_flow.config.sections", "import torch", "torch"),
        ("inc_flow.search.plan", "import optuna.trial", None),  # search/ may use optuna
        ("inc_flow.model.output", "from torch.ao.quantization import QConfig", "torch.ao"),
        ("inc_flow.api", "from dashboards import report", "dashboards"),
        ("inc_flow.record.rows", "import optuna", "optuna"),
    ],
)
def test_an_added_import_breaks_the_contract(sources, module, line, expected):
    """The check sees a new import at module level and inside a function (lazy)."""
    for code in (f"{line}\n", f"def _late():\n    {line}\n"):
        changed = dict(sources)
        changed[module] = sources[module] + "\n" + code
        broken = check(import_graph(changed), RULES)
        if expected is None:
            assert broken == []
        else:
            assert len(broken) == 1 and broken[0].startswith(f"{module} imports {expected}")


def test_there_is_no_import_cycle(sources):
    assert cycles(import_graph(sources)) == []


def test_a_lazy_cycle_is_found(sources):
    changed = dict(sources)
    changed["inc_flow.search.plan"] += "\ndef _late():\n    from inc_flow.search import space\n"
    assert any("inc_flow.search.plan" in c for c in cycles(import_graph(changed)))


def test_no_module_is_over_400_lines():
    assert {m: n for m, n in line_counts(ROOT / "inc_flow").items() if n > 400} == {}


def test_config_and_search_load_without_torch():
    code = (
        "import sys, inc_flow.config, inc_flow.search.plan, inc_flow.search.space; "
        "import inc_flow.search.accuracy; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_every_sub_package_is_packaged():
    """pyproject lists packages by name (dashboards/ installs under another name), so a new
    sub-package must be added there or wheels leave it out."""
    import tomllib

    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "inc_flow").rglob("__init__.py")
    }
    assert found | {"inc_flow_dashboards"} == listed
