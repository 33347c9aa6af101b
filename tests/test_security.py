"""Untrusted files run no code: weights (``weights_only=True``), yaml (safe loader), the model
factory (imports only its module), and the serving endpoint answers bad requests with 400.

Every payload would create a marker file if it ran; each test proves the marker is absent.
tests/test_flavor.py runs `mlflow models serve` and checks a wrong shape and truncated JSON;
the serving test here runs the same scoring app in-process and adds wrong dtypes and other
malformed bodies.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
import yaml

from inc_flow import load, quantize
from inc_flow.cli import main as cli_main
from inc_flow.config.sections import Config
from inc_flow.errors import ConfigError, SaveLoadError
from inc_flow.model import pyfunc as flavor
from inc_flow.model import signature
from inc_flow.model.factory import build_model, import_factory
from inc_flow.model.output import CONFIGURE_FILE, WEIGHTS_FILE, QuantizedModel
from inc_flow.quant.graph import calibrate, convert, list_ops, prepare
from inc_flow.search.plan import default_plan
from inc_flow.search.progress import LoggingTracker
from inc_flow.vocab import Approach
from tests.helpers.http import free_port, post_json
from tests.helpers.stores import mlflow_template, prepare_mlflow
from tests.toys import SHAPE, SleepyNet

FACTORY = "tests.toys:SleepyNet"


class Payload:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def marker(tmp_path) -> Path:
    path = tmp_path / "pwned"
    yield path
    assert not path.exists(), "a payload ran"


@pytest.fixture
def restore_logging():
    """The CLI configures the `inc_flow` logger; later tests expect it untouched."""
    log = logging.getLogger("inc_flow")
    saved = (log.handlers[:], log.level, log.propagate)
    yield
    log.handlers[:], log.level, log.propagate = saved


def _int8() -> QuantizedModel:
    torch.manual_seed(0)
    model = SleepyNet().eval()
    x = torch.randn(8, *SHAPE)
    plan = default_plan(
        list_ops(model, Approach.STATIC.value), approach=Approach.STATIC.value, backend="x86"
    )
    prepared = prepare(model, plan.calibration_plan(), (x,))
    calibrate(prepared, [x], 8, lambda m, b: (m(b), b.shape[0])[1])
    return QuantizedModel(convert(prepared, plan), plan, (x,), calibration_size=8)


def _write_payload(path: Path, marker: Path, kind: str) -> None:
    """A weights file whose unpickling runs code: a bare pickle or torch.save's zip format."""
    state = {"conv1.weight": Payload(marker)}
    if kind == "pickle":
        path.write_bytes(pickle.dumps(state, protocol=2))
    else:
        torch.save(state, path)


# --- weights --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["pickle", "torch.save"])
def test_crafted_int8_weights_are_refused_by_load_stats_and_the_pyfunc_loader(
    tmp_path, marker, kind, capsys, restore_logging
):
    out = tmp_path / "out"
    _int8().save(out)
    _write_payload(out / WEIGHTS_FILE, marker, kind)
    with pytest.raises(SaveLoadError, match="weights_only=True.*nothing from it was executed"):
        load(out, SleepyNet())
    sidecar = {"format_version": 1, "factory": FACTORY, "input": {"shape": list(SHAPE)}}
    (out / signature.SIDECAR_FILE).write_text(yaml.safe_dump(sidecar))
    with pytest.raises(SaveLoadError, match="weights_only=True"):
        flavor._load_pyfunc(str(out))  # what `mlflow.pyfunc.load_model` and serving call
    conf = tmp_path / "conf.yaml"
    conf.write_text(yaml.safe_dump({"model": {"name": "sleepy", "factory": FACTORY}}))
    assert cli_main(["stats", str(out), "--config", str(conf)]) == 2
    assert "weights_only=True" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["pickle", "torch.save"])
def test_crafted_fp32_model_weights_are_refused(tmp_path, marker, kind, capsys, restore_logging):
    weights = tmp_path / "fp32.pt"
    _write_payload(weights, marker, kind)
    conf = {"model": {"name": "sleepy", "factory": FACTORY, "weights": str(weights)}}
    with pytest.raises(SaveLoadError, match=r"`model\.weights` .*weights_only=True"):
        quantize(conf, calib_dataloader=[torch.zeros(1, *SHAPE)], tracker=LoggingTracker())
    path = tmp_path / "conf.yaml"
    path.write_text(yaml.safe_dump(conf))
    assert cli_main(["tune", str(path), "-o", str(tmp_path / "out")]) == 2
    assert "`model.weights`" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# --- yaml -----------------------------------------------------------------------------------
TAGS = [
    "!!python/object/apply:os.system ['touch {marker}']",
    "!!python/object/new:os.system ['touch {marker}']",
    "!!python/name:os.system",
]


@pytest.mark.parametrize("tag", TAGS, ids=["apply", "new", "name"])
def test_python_tags_in_a_config_are_refused_with_their_position(
    tmp_path, marker, tag, capsys, restore_logging
):
    path = tmp_path / "conf.yaml"
    path.write_text(f"model:\n  name: {tag.format(marker=marker)}\n")
    with pytest.raises(ConfigError, match=r"invalid YAML .* at line 2, column 9.*python"):
        Config.from_yaml(path)
    assert cli_main(["tune", str(path), "-o", str(tmp_path / "out")]) == 2
    assert "line 2, column 9" in capsys.readouterr().err


@pytest.mark.parametrize("tag", TAGS, ids=["apply", "new", "name"])
def test_python_tags_in_saved_yaml_files_are_refused(tmp_path, marker, tag):
    out = tmp_path / "out"
    _int8().save(out)
    configure = (out / CONFIGURE_FILE).read_text()
    (out / CONFIGURE_FILE).write_text(f"evil: {tag.format(marker=marker)}\n{configure}")
    with pytest.raises(SaveLoadError, match="not valid yaml"):
        load(out, SleepyNet())
    (out / signature.SIDECAR_FILE).write_text(f"format_version: {tag.format(marker=marker)}\n")
    with pytest.raises(SaveLoadError, match="cannot read"):
        signature.read_sidecar(out)


# --- model.factory --------------------------------------------------------------------------
def test_the_factory_imports_only_the_module_it_names(tmp_path, monkeypatch):
    package = tmp_path / "sidefx_pkg"
    package.mkdir()
    for name in ("__init__", "net", "other"):
        code = f"open({str(tmp_path / ('imported_' + name))!r}, 'w').close()\n"
        if name == "net":
            code += "from torch import nn\n\ndef Net():\n    return nn.Linear(2, 2)\n"
        (package / f"{name}.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    model = build_model("sidefx_pkg.net:Net")
    assert isinstance(model, torch.nn.Linear)
    imported = sorted(p.name for p in tmp_path.glob("imported_*"))
    assert imported == ["imported___init__", "imported_net"]  # the parent package, then net
    for name in list(sys.modules):
        if name.startswith("sidefx_pkg"):
            monkeypatch.delitem(sys.modules, name)


def test_a_factory_is_called_without_arguments_so_no_command_can_be_passed(tmp_path):
    with pytest.raises(ConfigError, match="package.module:callable"):
        Config.from_dict({"model": {"name": "x", "factory": "os:system('touch pwned')"}})
    with pytest.raises(ConfigError, match="must return a torch.nn.Module, got str"):
        build_model("os:getcwd")
    with pytest.raises(ConfigError, match="has no attribute"):
        import_factory("os:no_such_function")


@pytest.mark.parametrize("factory", ["os:system", "sys:exit"])
def test_a_factory_that_raises_is_a_config_error(factory):
    try:
        build_model(factory)
    except SystemExit as e:  # `inc-flow tune` would exit 0, "a model was saved"
        pytest.fail(f"the factory exited the process: {e!r}")
    except ConfigError as e:
        assert "model.factory" in str(e)
    else:
        pytest.fail("the factory's failure was not reported")


# --- serving --------------------------------------------------------------------------------
@pytest.mark.slow
def test_serving_answers_wrong_dtypes_and_malformed_bodies_with_400(
    tmp_path, tmp_path_factory, mlflow_tracking, monkeypatch
):
    """MLflow's scoring server app (what `mlflow models serve` runs) on the logged model,
    served by uvicorn in a thread of this process."""
    import threading

    import uvicorn
    from mlflow.environment_variables import _MLFLOW_IS_IN_SERVING_ENVIRONMENT
    from mlflow.pyfunc import scoring_server

    experiment = prepare_mlflow(
        mlflow_tracking, mlflow_template(tmp_path_factory), "serve", tmp_path / "art"
    )
    q = _int8()
    with mlflow.start_run(experiment_id=experiment):
        info = flavor.log_model(q, FACTORY)
    monkeypatch.delenv(_MLFLOW_IS_IN_SERVING_ENVIRONMENT.name, raising=False)  # init sets it
    monkeypatch.setattr(sys, "path", sys.path[:])  # load_model prepends the model's code dir
    app = scoring_server.init(mlflow.pyfunc.load_model(info.model_uri))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)

        x = np.random.default_rng(1).standard_normal((2, *SHAPE), dtype=np.float32)
        good = json.dumps({"inputs": x.tolist()}).encode()
        status, body = post_json(f"{base}/invocations", good)
        assert status == 200, body
        expected = q.model(torch.from_numpy(x)).numpy()
        assert np.allclose(np.array(body["predictions"], np.float32), expected, atol=1e-6)

        # JSON has numbers, not dtypes: integers are numbers, cast to the signature's float32
        # by MLflow (so are true/false, before the model sees them: not checked here)
        shaped = np.zeros((2, *SHAPE))
        status, body = post_json(
            f"{base}/invocations", json.dumps({"inputs": shaped.astype(int).tolist()}).encode()
        )
        zeros = q.model(torch.zeros(2, *SHAPE)).numpy()
        assert status == 200 and np.allclose(body["predictions"], zeros, atol=1e-6), body
        bad = {
            "strings": {"inputs": np.full((2, *SHAPE), "a").tolist()},
            "ragged": {"inputs": [[[1.0] * 20] * 20, [[1.0] * 19] * 20]},
            "null": {"inputs": None},
            "no inputs key": {"data": x.tolist()},
            "not an object": [1.0, 2.0],
        }
        raw_bodies = {"empty": b"", "not utf-8": b"\xff\xfe{", "not json": b"{inputs: x}"}
        bodies = {k: json.dumps(v).encode() for k, v in bad.items()} | raw_bodies
        answers = {what: post_json(f"{base}/invocations", body) for what, body in bodies.items()}
        statuses = {what: status for what, (status, _) in answers.items()}
        assert statuses == dict.fromkeys(bodies, 400), answers
        assert post_json(f"{base}/invocations", good)[0] == 200  # still serving
    finally:
        server.should_exit = True
        thread.join(timeout=15)
