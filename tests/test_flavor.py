"""The registry flavor: pyfunc round trip, champion/challenger aliases, bad inputs, serving."""

from __future__ import annotations

import importlib.metadata
import inspect
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from mlflow.exceptions import MlflowException

from inc_flow.errors import IncFlowError, SaveLoadError
from inc_flow.model import pyfunc as flavor
from inc_flow.model import registry, requirements, serving, signature
from inc_flow.model.factory import build_model
from inc_flow.model.output import QuantizedModel, load
from inc_flow.quant.ao import quiet
from inc_flow.quant.graph import calibrate, convert, list_ops, prepare
from inc_flow.search.plan import default_plan
from inc_flow.vocab import Approach
from tests import toys
from tests.helpers.http import free_port, post_json

pytestmark = [
    # SQLAlchemy 2.1 deprecates a loader strategy MLflow's SQL store still configures.
    pytest.mark.filterwarnings(
        "ignore:The ``noload`` loader strategy is deprecated:DeprecationWarning"
    ),
]

ROOT = Path(__file__).resolve().parents[1]
TOY_PACKAGE = "inc_flow_flavor_toys"  # written to a tmp dir: importable only via code_paths
FACTORY = f"{TOY_PACKAGE}.net:TinyNet"
SHAPE = toys.SHAPE
NAME = "toy-int8"
# TinyNet as a package of its own: the class of tests/toys.py, with the imports it needs.
TOY_SOURCE = (
    "import torch\nimport torch.nn.functional as F\nfrom torch import nn\n\n\n"
    + inspect.getsource(toys.TinyNet)
)


MULTI_FACTORY = f"{TOY_PACKAGE}.multi:build"
MULTI_NAME = "toy-multi-int8"
MULTI_SOURCE = """
import torch
from torch import nn


class TwoInputNet(nn.Module):
    \"\"\"Token ids (int64 [N, 6]) and features (float32 [N, 3]) -> 4 scores.\"\"\"

    def __init__(self) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(50, 8, mode="mean")
        self.fc1 = nn.Linear(8 + 3, 16)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, token_ids, features):
        h = torch.cat([self.bag(token_ids), features], dim=1)
        return self.fc2(torch.relu(self.fc1(h)))


def build():
    import packaging  # noqa: F401 - an extra requirement, found by reading this module

    return TwoInputNet()
"""


# --- fixtures ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A toy package outside the repository, and an int8 TinyNet (conv2 kept fp32)."""
    root = tmp_path_factory.mktemp("toys")
    (root / TOY_PACKAGE).mkdir()
    (root / TOY_PACKAGE / "__init__.py").write_text("")
    (root / TOY_PACKAGE / "net.py").write_text(TOY_SOURCE)
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(root))
        torch.manual_seed(0)
        model = build_model(FACTORY)
        x = torch.randn(8, *SHAPE)
        plan = default_plan(
            list_ops(model, Approach.STATIC.value), approach=Approach.STATIC.value, backend="x86"
        )
        plan = plan.with_fallback({"conv2"})
        prepared = prepare(model, plan.calibration_plan(), (x,))
        calibrate(prepared, [x], 8, lambda m, b: (m(b), b.shape[0])[1])
        q = QuantizedModel(convert(prepared, plan), plan, (x,), calibration_size=8)
        yield SimpleNamespace(q=q, package=root / TOY_PACKAGE, example=x.numpy())


@pytest.fixture(scope="module")
def multi(toy):
    """A dynamic int8 two-input model (int64 token ids + float32 features) in the toy
    package."""
    (toy.package / "multi.py").write_text(MULTI_SOURCE)
    torch.manual_seed(0)
    model = build_model(MULTI_FACTORY)
    x = (torch.randint(0, 50, (8, 6)), torch.randn(8, 3))
    plan = default_plan(
        list_ops(model, Approach.DYNAMIC.value), approach=Approach.DYNAMIC.value, backend="x86"
    )
    q = QuantizedModel(convert(prepare(model, plan, x), plan), plan, x)
    return SimpleNamespace(q=q, ids=x[0].numpy(), features=x[1].numpy())


def _multi_outputs(multi, ids: np.ndarray, features: np.ndarray) -> np.ndarray:
    with torch.no_grad(), quiet():
        return multi.q.model(torch.from_numpy(ids), torch.from_numpy(features)).numpy()


@pytest.fixture(scope="session")
def template_db(tmp_path_factory):
    """An empty MLflow SQLite store, created once (creating one takes seconds)."""
    db = tmp_path_factory.mktemp("template") / "mlflow.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture(autouse=True)
def store(tmp_path, monkeypatch, template_db):
    """Every test gets its own tracking + registry store and fails if it leaves a run open."""
    db = tmp_path / "mlflow.db"
    shutil.copy(template_db, db)  # the database exists before anything can race to create it
    uri = f"sqlite:///{db}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    experiment_id = mlflow.MlflowClient().create_experiment(
        "flavor", artifact_location=(tmp_path / "mlruns").as_uri()
    )
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", experiment_id)
    yield SimpleNamespace(uri=uri, db=db, experiment_id=experiment_id)
    left_open = mlflow.active_run()
    while mlflow.active_run() is not None:
        mlflow.end_run()
    assert left_open is None, f"test left run {left_open.info.run_id} open"


def _int8_outputs(q: QuantizedModel, x: np.ndarray) -> np.ndarray:
    with torch.no_grad(), quiet():  # the pyfunc's threads: the caller's (torch's default)
        return q.model(torch.from_numpy(x)).numpy()


def _log(toy, **kwargs) -> mlflow.models.model.ModelInfo:
    with mlflow.start_run():
        return flavor.log_model(toy.q, FACTORY, **kwargs)


SCORES = {"accuracy": 0.9, "relative_drop": 0.004, "latency_ms": 2.0, "speedup": 1.5}
TAGS = {"backend": "x86", "approach": "post_training_static_quant", "study": "toy-study"}


def _register(
    uri: str, latency_ms: float, eval_data: str = "data-A", meets_target=True, digest=None
):
    return registry.register(
        uri,
        NAME,
        {**SCORES, "latency_ms": latency_ms},
        TAGS,
        eval_data=eval_data,
        criterion=registry.canonical({"relative": 0.01, "higher_is_better": True}),
        meets_target=meets_target,
        digest=digest,
    )


def _champion_version() -> str:
    return str(mlflow.MlflowClient().get_model_version_by_alias(NAME, registry.CHAMPION).version)


# --- decide_alias: a table -----------------------------------------------------------------
A = {"eval_data": "d1", "criterion": "c1", "latency_ms": 2.0, "meets_target": True}


@pytest.mark.parametrize(
    ("new", "current", "alias"),
    [
        (A, None, "champion"),
        ({**A, "meets_target": False}, None, "challenger"),
        ({**A, "latency_ms": 1.0}, A, "champion"),  # same data and criterion, faster
        ({**A, "latency_ms": 3.0}, A, "challenger"),  # slower
        (A, A, "challenger"),  # a tie is not faster
        ({**A, "latency_ms": 1.0, "meets_target": False}, A, "challenger"),
        ({**A, "latency_ms": 3.0, "eval_data": "d2"}, A, "champion"),  # not comparable
        ({**A, "latency_ms": 3.0, "criterion": "c2"}, A, "champion"),
        ({**A, "eval_data": "d2", "meets_target": False}, A, "challenger"),
        ({**A, "latency_ms": 3.0}, {**A, "eval_data": None}, "champion"),  # not ours
        ({**A, "latency_ms": 3.0}, {**A, "latency_ms": None}, "champion"),
        ({**A, "latency_ms": 3.0}, {**A, "meets_target": False}, "champion"),
        ({**A, "latency_ms": 3.0}, {**A, "meets_target": None}, "challenger"),  # unknown
        ({**A, "latency_ms": None}, A, "challenger"),
    ],
)
def test_decide_alias(new, current, alias):
    assert registry.decide_alias(new, current) == alias


def test_fingerprint_and_names_are_stable():
    a = registry.fingerprint({"dataset": {"FashionMNIST": {"train": False}}, "iteration": -1})
    b = registry.fingerprint({"iteration": -1, "dataset": {"FashionMNIST": {"train": False}}})
    assert a == b and a.startswith("sha256:") and len(a) == len("sha256:") + 16
    assert a != registry.fingerprint({"dataset": {"FashionMNIST": {"train": True}}})
    assert registry.registered_model_name("lenet") == "lenet-int8"
    assert registry.registered_model_name("lenet", "fashion") == "fashion"


# --- the pyfunc ----------------------------------------------------------------------------
def test_pyfunc_from_registry_returns_the_int8_outputs_exactly(toy, tmp_path):
    info = _log(toy)
    version = _register(info.model_uri, latency_ms=2.0)
    assert version.aliases == ["champion"]
    tags = version.tags
    assert {k: tags[k] for k in ("backend", "approach", "study")} == TAGS
    assert float(tags["accuracy"]) == 0.9 and float(tags["drop"]) == 0.004
    assert float(tags["speedup"]) == 1.5 and tags["eval_data"] == "data-A"

    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    x = np.random.default_rng(0).standard_normal((5, *SHAPE), dtype=np.float32)
    out = model.predict(x)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (5, 10)
    assert np.array_equal(out, _int8_outputs(toy.q, x))
    toy.q.save(tmp_path / "output")
    reloaded = load(tmp_path / "output", build_model(FACTORY))
    with torch.no_grad(), quiet():
        assert np.array_equal(out, reloaded(torch.from_numpy(x)).numpy())

    sig = model.metadata.signature
    (spec,) = sig.inputs.inputs
    assert spec.name is None and spec.type == np.float32 and spec.shape == (-1, *SHAPE)
    assert sig.outputs.inputs[0].shape == (-1, 10)


def test_logged_model_ships_code_sidecar_and_exact_requirements(toy):
    info = _log(toy)
    local = Path(mlflow.artifacts.download_artifacts(info.model_uri))
    # the factory's module and its package's __init__.py; not inc_flow (a requirement)
    code = local / "code"
    assert {str(p.relative_to(code)) for p in code.rglob("*") if p.is_file()} == {
        f"{TOY_PACKAGE}/__init__.py",
        f"{TOY_PACKAGE}/net.py",
    }
    assert (code / TOY_PACKAGE / "net.py").read_text() == TOY_SOURCE
    data = local / "data" / flavor.DATA_DIR
    assert {p.name for p in data.iterdir()} == {
        "best_configure.yaml",
        "best_model_weights.pt",
        signature.SIDECAR_FILE,
    }
    side = yaml.safe_load((data / signature.SIDECAR_FILE).read_text())
    assert side["factory"] == FACTORY and side["input"] == {
        "shape": list(SHAPE),
        "dtype": "float32",
    }
    assert side["output"] == {"type": "tensor", "shape": [10], "dtype": "float32"}
    reqs = (local / "requirements.txt").read_text().split()
    assert f"torch=={torch.__version__.split('+')[0]}" in reqs
    assert f"inc-flow=={importlib.metadata.version('inc-flow')}" in reqs
    assert all("==" in r for r in reqs), reqs
    mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    assert mlmodel["flavors"]["python_function"]["loader_module"] == "inc_flow.model.pyfunc"
    assert mlmodel["flavors"]["python_function"]["config"] == serving.DEFAULTS  # input limits


def test_log_model_from_an_output_directory(toy, tmp_path):
    toy.q.save(tmp_path / "output")
    with mlflow.start_run():
        with pytest.raises(SaveLoadError, match="example_input"):
            flavor.log_model(tmp_path / "output", FACTORY)
        info = flavor.log_model(tmp_path / "output", FACTORY, toy.example)
    assert sorted(p.name for p in (tmp_path / "output").iterdir()) == [
        "best_configure.yaml",
        "best_model_weights.pt",
    ]  # the user's directory is not written to
    x = toy.example[:3]
    assert np.array_equal(
        mlflow.pyfunc.load_model(info.model_uri).predict(x), _int8_outputs(toy.q, x)
    )


def test_log_model_refuses_bad_arguments(toy, tmp_path):
    with pytest.raises(SaveLoadError, match="float32"):
        flavor.log_model(toy.q, FACTORY, toy.example.astype(np.float64))
    with pytest.raises(SaveLoadError, match=f"package '{TOY_PACKAGE}'"):
        flavor.log_model(toy.q, FACTORY, code_paths=[str(ROOT / "examples")])
    with pytest.raises(SaveLoadError, match="threads"):
        flavor.log_model(toy.q, FACTORY, threads=0)
    assert not mlflow.search_logged_models(output_format="list")  # refused before logging


def _staged(toy, tmp_path) -> flavor.Int8PyfuncModel:
    toy.q.save(tmp_path / "data")
    side = {"format_version": 1, "factory": FACTORY, "input": {"shape": list(SHAPE)}}
    (tmp_path / "data" / signature.SIDECAR_FILE).write_text(yaml.safe_dump(side))
    return flavor._load_pyfunc(str(tmp_path / "data"))


@pytest.mark.parametrize(
    ("bad", "what"),
    [
        (np.zeros((2, *SHAPE), np.float64), "dtype float64"),
        (np.zeros((2, 1, 20, 19), np.float32), r"shape \(2, 1, 20, 19\)"),
        (np.zeros(SHAPE, np.float32), r"shape \(1, 20, 20\)"),  # a sample, not a batch
        (np.zeros((0, *SHAPE), np.float32), r"shape \(0, 1, 20, 20\)"),
        ([["a", "b"]], "non-numeric"),
        (pd.DataFrame({"x": ["a"] * 2}), "non-numeric"),
        (pd.DataFrame(np.zeros((2, 5), np.float32)), "5 columns"),
        ({"x": 1}, "got dict"),
        ("abc", "got str"),
    ],
)
def test_bad_input_is_an_invalid_parameter_value(toy, tmp_path, bad, what):
    with pytest.raises(MlflowException, match=what) as e:
        _staged(toy, tmp_path).predict(bad)
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"
    assert isinstance(e.value, IncFlowError)
    assert "(-1, 1, 20, 20)" in e.value.message  # names the expected shape


def test_lists_and_dataframes_give_the_same_outputs(toy, tmp_path):
    pyfunc = _staged(toy, tmp_path)
    x = toy.example[:3]
    expected = _int8_outputs(toy.q, x)
    assert np.array_equal(pyfunc.predict(x), expected)
    assert np.array_equal(pyfunc.predict(x.tolist()), expected)
    assert np.array_equal(pyfunc.predict(pd.DataFrame(x.reshape(3, -1))), expected)
    readonly = x.copy()
    readonly.flags.writeable = False
    assert np.array_equal(pyfunc.predict(readonly), expected)
    # not C-contiguous: converted (a C-contiguous float32 ndarray is taken as it is)
    assert np.array_equal(pyfunc.predict(np.asfortranarray(x)), expected)


def test_registry_pyfunc_rejects_a_wrong_shape(toy):
    model = mlflow.pyfunc.load_model(_log(toy).model_uri)
    with pytest.raises(MlflowException, match=r"\(-1, 1, 20, 20\)") as e:
        model.predict(np.zeros((1, 3), np.float32))
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"


# --- several inputs ------------------------------------------------------------------------
def test_multi_input_model_from_the_registry(multi):
    """Named int64 + float32 inputs: signature, sidecar format 2, requirements, registry
    round trip with a dict, and bad inputs refused naming the input."""
    with mlflow.start_run():
        info = flavor.log_model(multi.q, MULTI_FACTORY, extra_pip=["pyyaml>=6"])
    _register_as(MULTI_NAME, info.model_uri)
    model = mlflow.pyfunc.load_model(f"models:/{MULTI_NAME}@champion")
    ids, features = multi.ids[:5], multi.features[:5]
    out = model.predict({"token_ids": ids, "features": features})
    assert out.shape == (5, 4) and np.array_equal(out, _multi_outputs(multi, ids, features))
    with torch.no_grad(), quiet():  # the int8 module itself, as rebuilt by the loader
        raw = model.get_raw_model()(torch.from_numpy(ids), torch.from_numpy(features))
    assert np.array_equal(raw.numpy(), out)

    ids_spec, features_spec = model.metadata.signature.inputs.inputs
    assert (ids_spec.name, ids_spec.type, ids_spec.shape) == ("token_ids", np.int64, (-1, 6))
    assert (features_spec.name, features_spec.type, features_spec.shape) == (
        "features",
        np.float32,
        (-1, 3),
    )
    local = Path(mlflow.artifacts.download_artifacts(info.model_uri))
    side = yaml.safe_load((local / "data" / flavor.DATA_DIR / signature.SIDECAR_FILE).read_text())
    assert side["format_version"] == 2 and "input" not in side
    assert side["inputs"] == [
        {"name": "token_ids", "shape": [6], "dtype": "int64"},
        {"name": "features", "shape": [3], "dtype": "float32"},
    ]
    reqs = (local / "requirements.txt").read_text().split()
    assert f"packaging=={importlib.metadata.version('packaging')}" in reqs  # read, not given
    assert "pyyaml>=6" in reqs and not [r for r in reqs if r.startswith("pyyaml==")]
    assert requirements.factory_requirements(MULTI_FACTORY) == [
        f"packaging=={importlib.metadata.version('packaging')}"
    ]
    example = json.loads((local / "serving_input_example.json").read_text())
    assert set(example["inputs"]) == {"token_ids", "features"}

    with pytest.raises(flavor.InvalidInputError, match="batch sizes differ") as e:
        model.predict({"token_ids": ids, "features": features[:2]})
    assert "'token_ids': 5, 'features': 2" in e.value.message
    with pytest.raises(MlflowException, match=r"missing inputs \['features'\]") as e:
        model.predict({"token_ids": ids})  # MLflow's schema enforcement comes first
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"


def _register_as(name: str, uri: str):
    return registry.register(
        uri, name, SCORES, TAGS, eval_data="d", criterion="c", meets_target=True
    )


DROP = object()  # in a change: remove the input


@pytest.mark.parametrize(
    ("bad", "what"),
    [
        ({"features": DROP}, r"input\(s\) \['features'\] missing"),
        ({"ids": np.zeros((2, 6), np.int64)}, r"unknown input\(s\) \['ids'\]"),
        ({"token_ids": np.zeros((2, 6))}, "input 'token_ids': .*dtype float64"),
        ({"token_ids": np.zeros((2, 6), np.uint64)}, "input 'token_ids': .*dtype uint64"),
        ({"features": np.zeros((2, 3), np.float64)}, "input 'features': .*dtype float64"),
        ({"features": np.zeros((2, 4), np.float32)}, r"input 'features': .*shape \(2, 4\)"),
        ({"token_ids": [["a"] * 6] * 2}, "input 'token_ids': .*non-numeric"),
        ({"features": "abc"}, "input 'features': .*got str"),
        ({"features": np.zeros((3, 3), np.float32)}, "batch sizes differ"),
        ([np.zeros((2, 6), np.int64)], r"list of 1 items, not the 2 inputs"),
        (np.zeros((2, 6), np.int64), "got ndarray"),
    ],
)
def test_bad_multi_inputs_name_the_input(multi, tmp_path, bad, what):
    multi.q.save(tmp_path / "data")
    side = {
        "format_version": 2,
        "factory": MULTI_FACTORY,
        "inputs": [
            {"name": "token_ids", "shape": [6], "dtype": "int64"},
            {"name": "features", "shape": [3], "dtype": "float32"},
        ],
    }
    (tmp_path / "data" / signature.SIDECAR_FILE).write_text(yaml.safe_dump(side))
    pyfunc = flavor._load_pyfunc(str(tmp_path / "data"))
    good = {"token_ids": multi.ids[:2], "features": multi.features[:2]}
    if isinstance(bad, dict):
        bad = {k: v for k, v in {**good, **bad}.items() if v is not DROP}
    with pytest.raises(flavor.InvalidInputError, match=what) as e:
        pyfunc.predict(bad)
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"
    assert "'token_ids': an int64 array of shape (-1, 6)" in e.value.message  # what it takes

    expected = _multi_outputs(multi, good["token_ids"], good["features"])
    assert np.array_equal(pyfunc.predict(good), expected)
    assert np.array_equal(pyfunc.predict([good["token_ids"], good["features"]]), expected)
    as_lists = {"token_ids": good["token_ids"].tolist(), "features": good["features"].tolist()}
    assert np.array_equal(pyfunc.predict(as_lists), expected)
    int32 = {**good, "token_ids": good["token_ids"].astype(np.int32)}  # converts losslessly
    assert np.array_equal(pyfunc.predict(int32), expected)


# --- the registry --------------------------------------------------------------------------
def test_champion_moves_only_to_a_better_version(toy):
    uri = _log(toy).model_uri
    # one logged model stands for five distinct models: each gets a digest of its own
    assert _register(uri, latency_ms=2.0, digest="d1").aliases == ["champion"]
    worse = _register(uri, latency_ms=2.5, digest="d2")
    assert worse.aliases == ["challenger"] and _champion_version() == "1"
    assert worse.tags["alias_reason"] == "it is not faster than the champion (2.50 ms vs 2.00 ms)"
    failing = _register(uri, latency_ms=0.5, meets_target=False, digest="d3")
    assert failing.aliases == ["challenger"] and _champion_version() == "1"
    better = _register(uri, latency_ms=1.5, digest="d4")
    assert better.aliases == ["champion"] and _champion_version() == "4"
    assert better.tags["alias_reason"] == "it is faster (1.50 ms < 2.00 ms)"
    other_data = _register(uri, latency_ms=9.0, eval_data="data-B", digest="d5")
    assert other_data.aliases == ["champion"] and _champion_version() == "5"
    assert "another eval data" in other_data.tags["alias_reason"]
    client = mlflow.MlflowClient()
    assert str(client.get_model_version_by_alias(NAME, "challenger").version) == "3"
    assert mlflow.pyfunc.load_model(f"models:/{NAME}@champion").metadata.model_id


def test_register_names_missing_scores():
    with pytest.raises(registry.RegistryError, match=r"\['latency_ms', 'study'\]"):
        registry.register(
            "models:/m-0",
            NAME,
            {"accuracy": 1.0, "relative_drop": 0.0},
            {"backend": "x86", "approach": "a"},
            eval_data="d",
            criterion="c",
        )


# --- serving -------------------------------------------------------------------------------
@pytest.mark.slow
def test_mlflow_models_serve_answers_good_and_bad_requests(toy, store, tmp_path, record_property):
    info = _log(toy)
    _register(info.model_uri, latency_ms=2.0)
    elsewhere = tmp_path / "elsewhere"  # neither the repository nor the toy package is here
    elsewhere.mkdir()
    port = free_port()
    venv_bin = Path(sys.executable).parent
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": store.uri,
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",  # serve runs `uvicorn`
    }
    # inc_flow installed (this checkout; a requirement of the model, not shipped); the toy
    # package is importable only from the model's code/
    env["PYTHONPATH"] = str(ROOT)
    log = (tmp_path / "serve.log").open("wb")
    command = [str(venv_bin / "mlflow"), "models", "serve", "-m", f"models:/{NAME}@champion"]
    command += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    start = time.monotonic()
    server = subprocess.Popen(
        command,
        cwd=elsewhere,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.monotonic() - start < 90, "the server did not answer /ping within 90 s"
            try:
                with urllib.request.urlopen(f"{base}/ping", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.25)
        record_property("serve_startup_s", round(time.monotonic() - start, 1))

        x = np.random.default_rng(1).standard_normal((3, *SHAPE), dtype=np.float32)
        good = json.dumps({"inputs": x.tolist()}).encode()
        status, body = post_json(f"{base}/invocations", good)
        assert status == 200, body
        # float32 -> JSON -> float32 is exact both ways
        assert np.array_equal(np.array(body["predictions"], np.float32), _int8_outputs(toy.q, x))

        bad = json.dumps({"inputs": [[1.0, 2.0]]}).encode()
        status, body = post_json(f"{base}/invocations", bad)
        assert status == 400 and body["error_code"] == "INVALID_PARAMETER_VALUE", body
        assert "(-1, 1, 20, 20)" in body["message"]
        status, body = post_json(f"{base}/invocations", good)
        assert status == 200, body  # still serving
        status, body = post_json(f"{base}/invocations", b'{"inputs": [[1, 2')
        assert status == 400, body
        # the loader guards this real server (inc_flow.model.serving): NaN and nesting deeper
        # than the recursion limit get 400, not 200 and 500
        nan = json.dumps({"inputs": np.full((1, *SHAPE), np.nan).tolist()}).encode()
        status, body = post_json(f"{base}/invocations", nan)
        assert status == 400 and "NaN" in body["message"], body
        deep = b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        status, body = post_json(f"{base}/invocations", deep)
        assert status == 400 and "nested too deeply" in body["message"], body
        assert post_json(f"{base}/invocations", good)[0] == 200
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=15)
        log.close()


def test_sidecar_format_is_checked(tmp_path):
    (tmp_path / signature.SIDECAR_FILE).write_text("format_version: 9\n")
    with pytest.raises(SaveLoadError, match="format_version 1"):
        signature.read_sidecar(tmp_path)
    (tmp_path / signature.SIDECAR_FILE).write_text(
        textwrap.dedent("""\
            format_version: 1
            factory: a.b:C
            """)
    )
    with pytest.raises(SaveLoadError, match="malformed"):
        signature.read_sidecar(tmp_path)
    two = [
        {"name": "x", "shape": [2], "dtype": "int64"},
        {"name": "m", "shape": [], "dtype": "bool"},
    ]
    side = {"format_version": 2, "factory": "a.b:C", "inputs": two}
    (tmp_path / signature.SIDECAR_FILE).write_text(yaml.safe_dump(side))
    assert signature.read_sidecar(tmp_path)["inputs"] == [
        signature.InputSpec("x", np.dtype(np.int64), (2,)),
        signature.InputSpec("m", np.dtype(bool), ()),
    ]
    for inputs, what in (([two[0], two[0]], "unique"), ([{**two[0], "dtype": "str"}], "dtypes")):
        (tmp_path / signature.SIDECAR_FILE).write_text(yaml.safe_dump({**side, "inputs": inputs}))
        with pytest.raises(SaveLoadError, match=f"malformed.*{what}"):
            signature.read_sidecar(tmp_path)
