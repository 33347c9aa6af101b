"""The OpenVINO runtime (``quantization.runtime``): the search dimension (pure), the NNCF
build with an fp32 fallback, the IR saved and loaded, and a registered OpenVINO champion
predicting through ``mlflow.pyfunc.load_model``.

Tests that build with OpenVINO skip when the ``[openvino]`` extra is not installed (CI
installs it: scripts/setup.sh); the search-space and config tests need no OpenVINO.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from dataclasses import replace
from importlib.metadata import version as version_of
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from inc_flow.config.sections import Config
from inc_flow.errors import ConfigError, PlanError, QuantizationError, SaveLoadError
from inc_flow.search.plan import Plan, default_plan
from inc_flow.search.runtimes import RuntimeSpace, runtime_seeds
from inc_flow.vocab import Approach
from tests import toys

HAS_OPENVINO = all(importlib.util.find_spec(m) for m in ("openvino", "nncf"))
needs_openvino = pytest.mark.skipif(
    not HAS_OPENVINO,
    reason="the [openvino] extra is not installed (pip install 'inc_flow[openvino]')",
)
OPS = (("conv1", "Conv2d"), ("conv2", "Conv2d"), ("fc1", "Linear"), ("fc2", "Linear"))
TOY_PACKAGE = "inc_flow_ov_toys"  # written to a tmp dir: the pyfunc's factory
FACTORY = f"{TOY_PACKAGE}.net:TinyNet"
TOY_SOURCE = (
    "import torch\nimport torch.nn.functional as F\nfrom torch import nn\n\n\n"
    + inspect.getsource(toys.TinyNet)
)


# --- the search dimension: pure --------------------------------------------------------------
@pytest.mark.no_mlflow
def test_runtime_is_a_search_parameter_with_canonical_openvino_plans():
    space = RuntimeSpace(ops=OPS, backends=("x86", "onednn"), runtimes=("torch_fx", "openvino"))
    assert next(iter(space.choices().items())) == ("runtime", ("torch_fx", "openvino"))
    params = {"runtime": "openvino", "backend": "onednn", "act_algorithm": "kl"}
    plan = space.plan_from_params(params)
    # OpenVINO: NNCF has no KL observer and torch's kernels are not used -> one canonical plan
    assert plan.runtime == "openvino" and plan.backend == "x86"
    assert {op.act_algorithm for op in plan.ops} == {"minmax"}
    assert space.plan_from_params({**params, "act_algorithm": "minmax"}) == plan
    assert space.plan_from_params(space.params_for(plan)) == plan
    # `output: fp32` has no meaning in OpenVINO either: the same canonical plan
    assert space.canonical(replace(plan, fp32_output=True)) == plan
    fx = space.plan_from_params({"backend": "onednn", "act_algorithm": "kl"})
    assert (fx.runtime, fx.backend, fx.ops[0].act_algorithm) == ("torch_fx", "onednn", "kl")
    # torch_fx, and openvino with each of NNCF's three bias corrections
    assert space.n_plans() == 4 * RuntimeSpace(ops=OPS, backends=("x86", "onednn")).n_plans()
    seeds = [p for _, p in runtime_seeds(space)]
    assert seeds[0] == replace(space.default_plan(), runtime="openvino")
    assert [s.bias_correction for s in seeds] == ["fast", "off", "full", None]
    assert {s.int8_ops for s in seeds[:3]} == {space.default_plan().int8_ops}
    assert seeds[3].runtime == "openvino" and not seeds[3].int8_ops  # fp32 compiled by OV, last
    assert (
        not seeds[3].is_baseline
        and space.default_plan().with_fallback({n for n, _ in OPS}).is_baseline
    )
    assert list(runtime_seeds(RuntimeSpace(ops=OPS))) == []


@pytest.mark.no_mlflow
def test_torch_plans_keep_incs_keys_and_bad_runtimes_are_refused():
    plan = default_plan(list(OPS))
    assert "runtime" not in plan.to_dict()
    ov = replace(plan, runtime="openvino")
    assert ov.to_dict()["runtime"] == "openvino" and Plan.from_dict(ov.to_dict()) == ov
    with pytest.raises(PlanError, match=r"`runtime` must be one of .*runtime='tensorrt'"):
        Plan.from_dict({**plan.to_dict(), "runtime": "tensorrt"})
    with pytest.raises(ConfigError, match=r"quantization\.runtime.*tensorrt"):
        Config.from_dict({"model": {"name": "x"}, "quantization": {"runtime": ["tensorrt"]}})
    with pytest.raises(PlanError, match=r"`runtimes` values must be in .*tensorrt"):
        RuntimeSpace(ops=OPS, runtimes=("torch_fx", "tensorrt"))


@pytest.mark.no_mlflow
def test_openvino_without_the_extra_or_for_dynamic_is_a_config_error(monkeypatch):
    from inc_flow.quant.runtimes import check_runtimes

    with pytest.raises(ConfigError, match=r"quantization\.runtime.*static post-training"):
        check_runtimes(("openvino",), Approach.DYNAMIC.value)
    check_runtimes(("torch_fx",), Approach.DYNAMIC.value)  # nothing to check
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    with pytest.raises(ConfigError, match=r"pip install 'inc_flow\[openvino\]'"):
        check_runtimes(("torch_fx", "openvino"), Approach.STATIC.value)


# --- the build, save and load ------------------------------------------------------------------
@pytest.fixture(scope="module")
def built():
    """TinyNet built in OpenVINO by NNCF with conv2 kept fp32."""
    if not HAS_OPENVINO:
        pytest.skip("the [openvino] extra is not installed (pip install 'inc_flow[openvino]')")
    from inc_flow.quant.runtimes import RuntimeEngine

    torch.manual_seed(0)
    model = toys.TinyNet().eval()
    calib = [torch.randn(8, *toys.SHAPE) for _ in range(4)]
    engine = RuntimeEngine(model, calib[0], calib_loader=calib, sampling_size=32)
    plan = replace(default_plan(engine.ops()), runtime="openvino").with_fallback({"conv2"})
    return SimpleNamespace(engine=engine, plan=plan, model=engine.build(plan), example=calib[0])


def _weight_source(ov_model, module: str) -> tuple[str, str]:
    """Type and element type of what feeds ``module``'s convolution its weights."""
    (conv,) = [
        op
        for op in ov_model.get_ordered_ops()
        if op.get_type_name() == "Convolution"
        and op.get_friendly_name().startswith(f"__module.{module}/")
    ]
    source = conv.input_value(1).get_node()
    return source.get_type_name(), str(source.get_output_element_type(0))


@pytest.mark.no_mlflow
@needs_openvino
def test_fallback_op_stays_fp32_and_the_rest_is_int8(built):
    assert built.engine.op_counts(built.model, built.plan) == (3, 1)
    assert _weight_source(built.model.ov_model, "conv2") == ("Constant", "<Type: 'float32'>")
    assert _weight_source(built.model.ov_model, "conv1") != ("Constant", "<Type: 'float32'>")
    fp32 = built.engine.build(built.plan.with_fallback(built.plan.int8_ops))
    x = torch.randn(3, *toys.SHAPE)
    with torch.no_grad():
        close = torch.allclose(fp32(x), built.engine.fp32_model(x), atol=1e-4)
    assert close and not torch.equal(fp32(x), built.model(x))


class ConvBnNet(torch.nn.Module):
    """conv -> BatchNorm twice: ``ov.convert_model`` folds each BatchNorm into its conv and
    renames the conv (``Multiply_<n>``), so no node carries the conv's module name."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = torch.nn.Conv2d(1, 8, 3), torch.nn.BatchNorm2d(8)
        self.conv2, self.bn2 = torch.nn.Conv2d(8, 8, 3), torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1))


@pytest.mark.no_mlflow
@needs_openvino
def test_a_conv_whose_batchnorm_openvino_folded_stays_fp32():
    from inc_flow.quant.openvino import ignored_scope
    from inc_flow.quant.runtimes import RuntimeEngine

    torch.manual_seed(0)
    model = ConvBnNet().eval()
    for bn in (model.bn1, model.bn2):  # not the identity: the fold changes the weights
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    calib = [torch.randn(8, *toys.SHAPE) for _ in range(2)]
    engine = RuntimeEngine(model, calib[0], calib_loader=calib, sampling_size=16)
    plan = replace(default_plan(engine.ops()), runtime="openvino").with_fallback({"conv1"})
    base = engine.openvino.fp32_ov()
    assert not any(n.get_friendly_name().startswith("__module.conv1/")
                   for n in base.get_ordered_ops())  # fmt: skip
    scope = ignored_scope(model, base.get_ordered_ops(), plan)
    assert scope["patterns"] == [] and len(scope["names"]) == 1
    built = engine.build(plan)
    convs = {op.get_friendly_name(): op for op in built.ov_model.get_ordered_ops()
             if op.get_type_name() == "Convolution"}  # fmt: skip
    kept = convs.pop(scope["names"][0])  # conv1: its weights a float32 constant, no quantizer
    source = kept.input_value(1).get_node()
    assert (source.get_type_name(), str(source.get_output_element_type(0))) == (
        "Constant", "<Type: 'float32'>")  # fmt: skip
    assert kept.input_value(0).get_node().get_type_name() != "FakeQuantize"
    (other,) = convs.values()  # conv2: int8 (fed by a FakeQuantize / converted int8 weights)
    assert other.input_value(0).get_node().get_type_name() == "FakeQuantize"


@pytest.mark.no_mlflow
@needs_openvino
def test_openvino_refuses_what_nncf_cannot_honour(built):
    from inc_flow.quant.openvino import ignored_scope, nncf_parameters

    kl = replace(built.plan, ops=tuple(replace(op, act_algorithm="kl") for op in built.plan.ops))
    with pytest.raises(QuantizationError, match="act_algorithm 'minmax' only.*'kl'"):
        nncf_parameters(kl)
    mixed = replace(built.plan, ops=(replace(built.plan.ops[0], act_scheme="sym"),
                                     *built.plan.ops[1:]))  # fmt: skip
    with pytest.raises(QuantizationError, match="one observer setting"):
        nncf_parameters(mixed)
    with pytest.raises(QuantizationError, match="does not map `output: fp32`"):
        nncf_parameters(replace(built.plan, fp32_output=True))
    int8 = built.plan.calibration_plan().ops  # all int8: only `add` falls back
    functional = Plan(ops=(*int8, replace(int8[0], name="add")))
    node = SimpleNamespace(get_friendly_name=lambda: "__module.conv1/x")
    with pytest.raises(QuantizationError, match="cannot keep op 'add' in fp32"):
        ignored_scope(built.engine.fp32_model, [node], functional.with_fallback({"add"}))


@pytest.mark.no_mlflow
@needs_openvino
def test_openvino_plan_saves_ir_and_loads_with_equal_outputs(built, tmp_path):
    from inc_flow.model.output import QuantizedModel, load

    out = QuantizedModel(built.model, built.plan, built.example, 32).save(tmp_path / "out")
    assert sorted(p.name for p in out.iterdir()) == [
        "best_configure.yaml",
        "model.bin",
        "model.xml",
    ]
    saved = yaml.safe_load((out / "best_configure.yaml").read_text())
    assert saved["runtime"] == "openvino" and saved["op"][1]["weight"] == {"dtype": "fp32"}
    loaded = load(out)  # no fp32 model needed
    x = torch.randn(5, *toys.SHAPE)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        assert torch.equal(loaded(x), built.model(x))
    (out / "model.bin").write_bytes((out / "model.bin").read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(SaveLoadError, match=r"model\.bin.*sha256"):
        load(out)


@pytest.mark.no_mlflow
def test_bias_correction_is_an_openvino_option_refused_on_torch_plans():
    fx = default_plan(list(OPS))
    assert fx.bias_correction is None and "bias_correction" not in fx.to_dict()
    with pytest.raises(PlanError, match=r"OpenVINO \(NNCF\) option.*'off'.*'torch_fx'"):
        replace(fx, bias_correction="off")
    with pytest.raises(PlanError, match=r"OpenVINO \(NNCF\) option.*'full'.*'torch_fx'"):
        Plan.from_dict({**fx.to_dict(), "bias_correction": "full"})
    ov = replace(fx, runtime="openvino")
    assert ov.bias_correction == "fast"  # NNCF's default: what OpenVINO plans always had
    with pytest.raises(PlanError, match=r"`bias_correction` must be one of .*'slow'"):
        replace(ov, bias_correction="slow")
    off = replace(ov, bias_correction="off")
    assert Plan.from_dict(off.to_dict()) == off and "bc=off" in off.summary()
    space = RuntimeSpace(ops=OPS, runtimes=("torch_fx", "openvino"))
    assert space.plan_from_params(space.params_for(off)) == off
    # a torch plan ignores the parameter (one trial): it has no bias correction
    assert space.plan_from_params({"bias_correction": "off"}).bias_correction is None
    with pytest.raises(PlanError, match=r"bias_correction.*'slow'"):
        space.plan_from_params({"runtime": "openvino", "bias_correction": "slow"})
    assert "bias_correction" not in RuntimeSpace(ops=OPS).choices()


@pytest.mark.no_mlflow
@needs_openvino
def test_bias_correction_reaches_nncf_and_is_saved_and_reloaded(built, tmp_path, monkeypatch):
    import nncf

    from inc_flow.model.configure import plan_from_configure
    from inc_flow.model.output import QuantizedModel, load

    seen = []
    quantize = nncf.quantize

    def spy(model, dataset, **kwargs):
        seen.append(kwargs)
        return quantize(model, dataset, **kwargs)

    monkeypatch.setattr(nncf, "quantize", spy)
    plans = {b: replace(built.plan, bias_correction=b) for b in ("off", "full")}
    models = {b: built.engine.build(p) for b, p in plans.items()}
    got = [(kw["fast_bias_correction"], kw["advanced_parameters"].disable_bias_correction)
           for kw in seen]  # fmt: skip
    assert got == [(True, True), (False, False)]  # off; full (fast: (True, False), the rest)
    out = QuantizedModel(models["off"], plans["off"], built.example, 32).save(tmp_path / "o")
    saved = yaml.safe_load((out / "best_configure.yaml").read_text())
    assert saved["bias_correction"] == "off" and plan_from_configure(saved) == plans["off"]
    loaded = load(out)
    x = torch.randn(5, *toys.SHAPE)
    assert torch.equal(loaded(x), models["off"](x))
    assert loaded.plan == plans["off"]


@needs_openvino
def test_registered_openvino_champion_predicts_through_pyfunc(built, tmp_path, monkeypatch):
    import mlflow

    from inc_flow.model import pyfunc, registry
    from inc_flow.model.output import QuantizedModel

    (tmp_path / TOY_PACKAGE).mkdir()
    (tmp_path / TOY_PACKAGE / "__init__.py").write_text("")
    (tmp_path / TOY_PACKAGE / "net.py").write_text(TOY_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    q = QuantizedModel(built.model, built.plan, built.example, 32)
    with mlflow.start_run():
        info = pyfunc.log_model(q, FACTORY)
    tags = {"backend": "x86", "runtime": "openvino", "approach": Approach.STATIC.value,
            "study": "ov"}  # fmt: skip
    version = registry.register(
        info.model_uri, "ov-int8", {"accuracy": 0.9, "relative_drop": 0.0, "latency_ms": 1.0},
        tags, eval_data="d", criterion="c", meets_target=True,
    )  # fmt: skip
    assert version.aliases == ["champion"]
    served = mlflow.pyfunc.load_model("models:/ov-int8@champion")
    x = np.random.default_rng(0).standard_normal((4, *toys.SHAPE), dtype=np.float32)
    torch.set_num_threads(1)
    with torch.no_grad():
        expected = built.model(torch.from_numpy(x)).numpy()
    assert np.array_equal(served.predict(x), expected)
    assert type(served.get_raw_model()).__name__ == "OpenVinoModel"
    requirements = tmp_path / "req.txt"
    local = Path(mlflow.artifacts.download_artifacts(info.model_uri))
    data = {p.name for p in (local / "data" / pyfunc.DATA_DIR).iterdir()}
    assert {"model.xml", "model.bin", "best_configure.yaml"} <= data
    assert "best_model_weights.pt" not in data
    assert f"openvino=={version_of('openvino')}" in (local / "requirements.txt").read_text(), (
        requirements
    )


@pytest.mark.no_mlflow
def test_search_tries_each_runtime_after_the_default_and_may_choose_openvino_fp32():
    from tests import fakes

    def in_round(model, batch):  # OpenVINO fp32 is the fastest of all here
        if model.plan is not None and model.plan.runtime == "openvino":
            return 1.0 if not model.plan.int8_ops else 3.0
        return bench.latency(model)

    bench = fakes.FakeBenchmark(in_round=in_round)
    ops = tuple(fakes.OPS)
    space = RuntimeSpace(ops=ops, runtimes=("torch_fx", "openvino"))
    result, engine, tracker = fakes.run(
        dict.fromkeys(dict(ops), 0.001), space=space, benchmark=bench, max_trials=5,
        relative=0.5, finalists=5, timeout=600.0,
    )  # fmt: skip
    runs = [(r.phase, r.plan.runtime, len(r.plan.int8_ops), r.plan.bias_correction)
            for r in tracker.records]  # fmt: skip
    assert runs == [
        ("default", "torch_fx", 6, None),
        ("runtime", "openvino", 6, "fast"),
        ("runtime", "openvino", 6, "off"),
        ("runtime", "openvino", 6, "full"),
        ("runtime", "openvino", 0, None),
    ]
    assert all(r.state == "passed" for r in tracker.records)  # OpenVINO fp32 is an answer
    assert result.best.plan.runtime == "openvino" and not result.best.plan.int8_ops


@needs_openvino
@pytest.mark.slow
def test_mlflow_models_serve_serves_a_registered_openvino_model(built, tmp_path, monkeypatch):
    """A real `mlflow models serve` of the registered OpenVINO champion (conv2 fp32) answers
    with the outputs of the evaluated model; a bad request gets a 400."""
    import json
    import os
    import signal
    import subprocess
    import time
    import urllib.request

    import mlflow

    from inc_flow.model import pyfunc, registry
    from inc_flow.model.output import QuantizedModel
    from tests.helpers.http import free_port, post_json

    (tmp_path / TOY_PACKAGE).mkdir()
    (tmp_path / TOY_PACKAGE / "__init__.py").write_text("")
    (tmp_path / TOY_PACKAGE / "net.py").write_text(TOY_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    experiment = mlflow.MlflowClient().create_experiment(
        "ov-serve", artifact_location=(tmp_path / "mlruns").as_uri()
    )  # artifacts at an absolute place the server (another cwd) finds
    q = QuantizedModel(built.model, built.plan, built.example, 32)
    with mlflow.start_run(experiment_id=experiment):
        info = pyfunc.log_model(q, FACTORY)
    tags = {"backend": "x86", "runtime": "openvino", "approach": Approach.STATIC.value,
            "study": "ov"}  # fmt: skip
    registry.register(
        info.model_uri, "ov-serve", {"accuracy": 0.9, "relative_drop": 0.0, "latency_ms": 1.0},
        tags, eval_data="d", criterion="c", meets_target=True,
    )  # fmt: skip
    elsewhere = tmp_path / "elsewhere"  # neither the repository nor the toy package is here
    elsewhere.mkdir()
    venv_bin = Path(sys.executable).parent
    root = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri(),
        "MLFLOW_REGISTRY_URI": mlflow.get_registry_uri(),
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",  # serve runs `uvicorn`
        "PYTHONPATH": str(root),  # inc_flow installed (a requirement of the model)
    }
    port = free_port()
    command = [str(venv_bin / "mlflow"), "models", "serve", "-m", "models:/ov-serve@champion"]
    command += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            command, cwd=elsewhere, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        start = time.monotonic()
        try:
            while True:
                assert server.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() - start < 90, "the server did not answer /ping in 90 s"
                try:
                    with urllib.request.urlopen(f"{base}/ping", timeout=2) as response:
                        if response.status == 200:
                            break
                except OSError:
                    time.sleep(0.25)
            x = np.random.default_rng(2).standard_normal((3, *toys.SHAPE), dtype=np.float32)
            status, body = post_json(
                f"{base}/invocations", json.dumps({"inputs": x.tolist()}).encode()
            )
            assert status == 200, body
            with torch.no_grad():
                expected = built.model(torch.from_numpy(x)).numpy()
            # float32 -> JSON -> float32 is exact both ways
            assert np.array_equal(np.array(body["predictions"], np.float32), expected)
            status, body = post_json(f"{base}/invocations", b'{"inputs": [[1.0, 2.0]]}')
            assert status == 400 and body["error_code"] == "INVALID_PARAMETER_VALUE", body
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(timeout=15)
