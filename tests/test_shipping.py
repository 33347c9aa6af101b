"""What the logged model ships (issue 17): the factory's module and its local imports only,
inc_flow as a pinned requirement, and the model's size recorded on the logged model and its
registry version."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
import yaml

from inc_flow.errors import SaveLoadError
from inc_flow.model import pyfunc as flavor
from inc_flow.model import registry, requirements, shipping
from inc_flow.model.factory import build_model
from inc_flow.model.output import QuantizedModel
from inc_flow.quant.ao import quiet
from inc_flow.quant.graph import calibrate, convert, list_ops, prepare
from inc_flow.record.keys import MODEL_SIZE_BYTES
from inc_flow.search.plan import default_plan
from inc_flow.vocab import Approach
from tests.helpers.stores import mlflow_template, prepare_mlflow

ROOT = Path(__file__).resolve().parents[1]
LENET = "examples.lenet.model:LeNet"
LENET_CODE = {"examples/__init__.py", "examples/lenet/__init__.py", "examples/lenet/model.py"}
MAX_BYTES = 200 * 1024


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


# --- the walk (pure) -------------------------------------------------------------------------
@pytest.mark.no_mlflow
@pytest.mark.parametrize(
    ("factory", "files"),
    [
        (LENET, LENET_CODE),
        (  # a module of the same package, imported at the top
            "examples.lstm.model:LSTMClassifier",
            {"examples/__init__.py", "examples/lstm/__init__.py"}
            | {"examples/lstm/model.py", "examples/lstm/data.py"},
        ),
        (  # another sub-package's module; its train.py and checkpoints stay behind
            "examples.mobilenetv2.model:build_mobilenetv2",
            {"examples/__init__.py", "examples/mobilenetv2/__init__.py"}
            | {"examples/mobilenetv2/model.py", "examples/resnet18/__init__.py"}
            | {"examples/resnet18/model.py"},
        ),
    ],
)
def test_walk_finds_the_factory_module_and_its_local_imports_only(factory, files):
    found = shipping.walk_factory(factory)
    assert found.root == ROOT
    assert {str(p) for p in found.files()} == files
    assert "torch" in found.external and "inc_flow" not in found.local


@pytest.mark.no_mlflow
def test_walk_follows_project_modules_and_lazy_relative_imports(tmp_path, monkeypatch):
    """Another top-level module of the project root, a relative import inside a function and
    a namespace package are shipped; inc_flow, the stdlib and a data file are not."""
    (tmp_path / "shipproj" / "nets").mkdir(parents=True)
    (tmp_path / "shipproj" / "__init__.py").write_text("")
    (tmp_path / "shipproj" / "unused.py").write_text("import json\n")
    (tmp_path / "shipproj" / "weights.pt").write_bytes(b"\0" * 1000)
    (tmp_path / "shipproj" / "nets" / "blocks.py").write_text("import shiphelpers\n")
    (tmp_path / "shipproj" / "nets" / "net.py").write_text(
        "import json\nfrom inc_flow.errors import IncFlowError\n\n"
        "def build():\n    from . import blocks\n    import torch\n"
        "    return torch.nn.Linear(2, 2)\n"
    )
    (tmp_path / "shiphelpers.py").write_text("from shipproj import nets\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = shipping.walk_factory("shipproj.nets.net:build")
    assert found.root == tmp_path
    assert {str(p) for p in found.files()} == {
        "shipproj/__init__.py",
        "shipproj/nets/net.py",
        "shipproj/nets/blocks.py",
        "shiphelpers.py",
    }  # shipproj/nets is a namespace package: no __init__.py to ship
    assert {"json", "torch", "inc_flow"} <= found.external
    staged = shipping.stage_code("shipproj.nets.net:build", tmp_path / "stage")
    assert staged == [tmp_path / "stage" / "shiphelpers.py", tmp_path / "stage" / "shipproj"]
    assert _files(tmp_path / "stage") == {str(p) for p in found.files()}


@pytest.mark.no_mlflow
def test_a_factory_in_an_installed_package_ships_its_own_package_only(tmp_path, monkeypatch):
    site = tmp_path / "site-packages"
    (site / "shipinstalled").mkdir(parents=True)
    (site / "shipinstalled" / "__init__.py").write_text("")
    (site / "shipinstalled" / "net.py").write_text(
        "import shipother\nfrom . import parts\n\ndef build():\n    return None\n"
    )
    (site / "shipinstalled" / "parts.py").write_text("")
    (site / "shipother.py").write_text("")  # another distribution's module beside it
    monkeypatch.syspath_prepend(str(site))
    found = shipping.walk_factory("shipinstalled.net:build")
    assert {str(p) for p in found.files()} == {
        "shipinstalled/__init__.py",
        "shipinstalled/net.py",
        "shipinstalled/parts.py",
    }
    assert "shipother" in found.external


@pytest.mark.no_mlflow
def test_inc_flow_is_a_pinned_requirement_not_code():
    version = requirements.importlib.metadata.version("inc-flow")
    assert requirements.pip_requirements()[0] == f"inc-flow=={version}"
    replaced = requirements.pip_requirements(["inc-flow>=0.1"])
    assert [p for p in replaced if p.startswith("inc-flow")] == ["inc-flow>=0.1"]


@pytest.mark.no_mlflow
def test_a_factory_without_python_source_is_refused():
    with pytest.raises(SaveLoadError, match="code_paths"):
        shipping.walk_factory("math:sqrt")  # a built-in module: nothing to read or ship


# --- the logged LeNet ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lenet_int8() -> QuantizedModel:
    """All-int8 static LeNet with its committed fp32 weights, calibrated on random images."""
    torch.manual_seed(0)
    model = build_model(LENET, str(ROOT / "examples" / "lenet" / "lenet_fmnist.pt"))
    x = torch.randn(8, 1, 28, 28)
    approach = Approach.STATIC.value
    plan = default_plan(list_ops(model, approach), approach=approach, backend="x86")
    prepared = prepare(model, plan.calibration_plan(), (x,))
    calibrate(prepared, [x], 8, lambda m, b: (m(b), b.shape[0])[1])
    return QuantizedModel(convert(prepared, plan), plan, (x,), calibration_size=8)


@pytest.mark.slow
def test_logged_lenet_ships_only_its_modules_is_small_and_loads_in_a_fresh_process(
    lenet_int8, mlflow_tracking, tmp_path, tmp_path_factory
):
    experiment = prepare_mlflow(
        mlflow_tracking, mlflow_template(tmp_path_factory), "ship", tmp_path / "art"
    )
    with mlflow.start_run(experiment_id=experiment):
        info = flavor.log_model(lenet_int8, LENET)
    local = Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=tmp_path / "dl"))
    assert _files(local / "code") == LENET_CODE  # no checkpoint, no train.py, no inc_flow
    assert (local / "code" / "examples" / "lenet" / "model.py").read_bytes() == (
        ROOT / "examples" / "lenet" / "model.py"
    ).read_bytes()
    # registered_model_meta: written by the download of a models:/ URI, not logged
    size = sum(
        p.stat().st_size
        for p in local.rglob("*")
        if p.is_file() and p.name != "registered_model_meta"
    )
    assert size < MAX_BYTES, f"the logged LeNet is {size} bytes"
    reqs = (local / "requirements.txt").read_text().split()
    assert requirements.inc_flow_requirement() in reqs and "inc-flow==" in "".join(reqs)

    # the size is recorded on the logged model and on its registry version
    assert mlflow.get_logged_model(info.model_id).tags[MODEL_SIZE_BYTES] == str(size)
    scores = {"accuracy": 0.8, "relative_drop": 0.01, "latency_ms": 1.0}
    version = registry.register(
        info.model_uri,
        "lenet-ship",
        scores,
        {"backend": "x86", "approach": "static", "study": "s"},
        eval_data="d",
        criterion="c",
    )
    assert version.tags[MODEL_SIZE_BYTES] == str(size)
    # a model logged without the tag (an older inc_flow, a kill before tagging): measured
    mlflow.delete_logged_model_tag(info.model_id, MODEL_SIZE_BYTES)
    again = registry.register(
        info.model_uri,
        "lenet-ship-again",
        scores,
        {"backend": "x86", "approach": "static", "study": "s"},
        eval_data="d",
        criterion="c",
    )
    assert again.tags[MODEL_SIZE_BYTES] == str(size)

    # a fresh process: inc_flow importable (installed), the repository's examples not
    only_inc_flow = tmp_path / "site"
    only_inc_flow.mkdir()
    (only_inc_flow / "inc_flow").symlink_to(ROOT / "inc_flow")
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    script = (
        "import sys, mlflow, numpy as np\n"
        "m = mlflow.pyfunc.load_model(sys.argv[1])\n"
        "np.save(sys.argv[3], m.predict(np.load(sys.argv[2])))\n"
        "import examples\n"
        "print(examples.__file__)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(only_inc_flow)}
    done = subprocess.run(
        [sys.executable, "-c", script, str(local), str(tmp_path / "x.npy"), "out.npy"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert Path(done.stdout.strip()).is_relative_to(local / "code")  # from the shipped code
    with torch.no_grad(), quiet():
        expected = lenet_int8.model(torch.from_numpy(x)).numpy()
    assert np.array_equal(np.load(tmp_path / "out.npy"), expected)
    assert (
        yaml.safe_load((local / "MLmodel").read_text())["flavors"]["python_function"][
            "loader_module"
        ]
        == "inc_flow.model.pyfunc"
    )
