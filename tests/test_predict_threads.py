"""The logged model's ``predict`` threads: torch's default unless the config
(``tracking.predict_threads``), ``log_model(threads=...)`` or ``INC_FLOW_NUM_THREADS`` says
otherwise; bad values are refused by name. No timing here (benchmarks/bench_runtimes.py)."""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
import yaml
from mlflow import MlflowClient
from torch import nn

from inc_flow import quantize
from inc_flow.config.sections import Config
from inc_flow.errors import ConfigError, SaveLoadError
from inc_flow.model import pyfunc as flavor
from inc_flow.model import signature
from inc_flow.model.output import QuantizedModel
from inc_flow.model.pyfunc import DATA_DIR, Int8PyfuncModel
from inc_flow.model.threads import ENV_THREADS, intra_op_threads, predict_threads
from inc_flow.quant.evaluate import LatencyBenchmark
from tests.toys import SHAPE, TinyNet


class ThreadRecorder(nn.Module):
    """Records torch's intra-op thread count at each forward call, then runs ``inner``."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.seen: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(torch.get_num_threads())
        return self.inner(x)


@pytest.fixture
def process_threads():
    """The process runs with 3 intra-op threads (a count no setting here asks for), restored
    afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(3)
    yield 3
    torch.set_num_threads(previous)


def _x(n: int = 2) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, *SHAPE), dtype=np.float32)


# --- resolution: env var > logged > torch's default ---------------------------------------
@pytest.mark.no_mlflow
@pytest.mark.parametrize(
    ("logged", "env", "expected"),
    [
        (None, None, None),  # torch's default: predict leaves the count alone
        (4, None, 4),  # the logged count (tracking.predict_threads / log_model(threads=))
        (None, "2", 2),  # the environment variable...
        (4, "2", 2),  # ...wins over the logged count
        (4, " 2 ", 2),
        (4, "auto", None),  # torch's default, whatever was logged
        (4, "AUTO", None),
        (4, "", 4),  # empty counts as unset
    ],
)
def test_predict_threads_resolution(logged, env, expected):
    environ = {} if env is None else {ENV_THREADS: env}
    assert predict_threads(logged, environ) == expected


@pytest.mark.no_mlflow
@pytest.mark.parametrize("bad", ["0", "-1", "two", "1.5", "2 threads"])
def test_a_bad_env_value_is_refused_by_name(bad):
    with pytest.raises(SaveLoadError, match=f"{ENV_THREADS} must be a positive integer.*"
                       f"got '{bad}'"):  # fmt: skip
        predict_threads(4, {ENV_THREADS: bad})


@pytest.mark.no_mlflow
@pytest.mark.parametrize("bad", [0, -2, True, 1.5, "2"])
def test_a_bad_thread_count_is_refused_by_name(bad):
    with pytest.raises(SaveLoadError, match=r"`threads` must be a positive integer"):
        Int8PyfuncModel(nn.Identity(), SHAPE, bad, "x86")
    with pytest.raises(SaveLoadError, match=r"`threads` must be a positive integer"):
        predict_threads(bad, {})


@pytest.mark.no_mlflow
@pytest.mark.parametrize(
    ("value", "problem"),
    [(0, "must be >= 1, got 0"), ("2", "must be an int, got '2'"), (True, "must be an int")],
)
def test_config_key_is_validated(value, problem):
    with pytest.raises(ConfigError, match=f"tracking.predict_threads` {problem}"):
        Config.from_kwargs(model={"name": "m"}, tracking={"predict_threads": value})
    cfg = Config.from_kwargs(model={"name": "m"}, tracking={"predict_threads": 2})
    assert cfg.tracking.predict_threads == 2 and Config.from_dict(cfg.to_dict()) == cfg
    assert Config.from_kwargs(model={"name": "m"}).tracking.predict_threads is None


@pytest.mark.no_mlflow
def test_config_key_without_tracking_is_refused_not_ignored():
    with pytest.raises(ConfigError, match="predict_threads` sets the logged model's threads"):
        Config.from_kwargs(model={"name": "m"}, tracking={"predict_threads": 2, "enabled": False})


# --- what predict does with the count ---------------------------------------------------
@pytest.mark.no_mlflow
def test_predict_uses_the_callers_threads_by_default(process_threads):
    model = ThreadRecorder(nn.Flatten())
    out = Int8PyfuncModel(model, SHAPE, None, "x86").predict(_x())
    assert out.shape == (2, int(np.prod(SHAPE)))
    assert model.seen == [process_threads] and torch.get_num_threads() == process_threads


@pytest.mark.no_mlflow
@pytest.mark.parametrize("count", [1, 2])
def test_predict_runs_with_its_count_and_restores_the_callers(process_threads, count):
    model = ThreadRecorder(nn.Flatten())
    pyfunc = Int8PyfuncModel(model, SHAPE, count, "x86")
    pyfunc.predict(_x())
    pyfunc.predict(_x(1))
    assert model.seen == [count, count]
    assert torch.get_num_threads() == process_threads  # the caller's count is back


@pytest.mark.no_mlflow
def test_the_count_is_restored_when_the_model_raises(process_threads):
    def boom(x: torch.Tensor) -> torch.Tensor:
        assert torch.get_num_threads() == 1
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"), intra_op_threads(1):
        boom(torch.zeros(1))
    assert torch.get_num_threads() == process_threads


@pytest.mark.no_mlflow
def test_sidecar_leaves_out_a_default_count(tmp_path):
    specs = signature.as_specs(SHAPE)
    for threads in (None, 3):
        data = signature.sidecar_data("a.b:C", specs, threads)
        assert ("threads" in data) is (threads is not None)
        (tmp_path / signature.SIDECAR_FILE).write_text(yaml.safe_dump(data))
        assert signature.read_sidecar(tmp_path)["threads"] == threads
    (tmp_path / signature.SIDECAR_FILE).write_text(yaml.safe_dump({**data, "threads": 0}))
    with pytest.raises(SaveLoadError, match="malformed.*threads"):
        signature.read_sidecar(tmp_path)


# --- end to end: config -> logged model -> mlflow.pyfunc.load_model -----------------------
def _tune_and_register(tmp_path: Path, monkeypatch, **tracking) -> QuantizedModel:
    def side_by_side(self, candidates):  # no timing: int8 "faster", so it is registered
        ms = {"fp32": 4.0}
        return {c.name: dict.fromkeys((1, self.batch_size), [ms.get(c.kind, 2.0)] * 3)
                for c in candidates}  # fmt: skip

    monkeypatch.setattr(LatencyBenchmark, "side_by_side", side_by_side)
    torch.manual_seed(0)
    x = torch.randn(16, *SHAPE)
    config = {
        "model": {"name": "tiny"},
        "tuning": {
            "workspace": {"path": str(tmp_path / "ws")},
            "exit_policy": {"max_trials": 1},
            "accuracy_criterion": {"absolute": 0.5},
        },
        "tracking": tracking,
    }
    outcome = quantize(
        config, model=TinyNet().eval(), calib_dataloader=[x], eval_func=lambda m: 0.9
    )
    assert outcome.q_model is not None
    return outcome.q_model


def test_the_registered_pyfunc_uses_the_config_count_the_env_var_or_the_callers(
    tmp_path, monkeypatch, process_threads
):
    q_model = _tune_and_register(tmp_path, monkeypatch, predict_threads=2)
    source = MlflowClient().get_model_version_by_alias("tiny-int8", "champion").source
    local = Path(mlflow.artifacts.download_artifacts(source))  # the registered model, once
    uri = str(local)
    side = yaml.safe_load((local / "data" / DATA_DIR / signature.SIDECAR_FILE).read_text())
    assert side["threads"] == 2

    for env, expected in ((None, 2), ("1", 1), ("auto", process_threads)):
        if env is None:
            monkeypatch.delenv(ENV_THREADS, raising=False)
        else:
            monkeypatch.setenv(ENV_THREADS, env)
        impl = mlflow.pyfunc.load_model(uri)._model_impl
        recorder = ThreadRecorder(impl.model)
        impl.model = recorder
        impl.predict(_x())
        assert recorder.seen == [expected], env
        assert torch.get_num_threads() == process_threads
    monkeypatch.setenv(ENV_THREADS, "0")
    with pytest.raises(SaveLoadError, match=f"{ENV_THREADS} must be a positive integer.*'0'"):
        mlflow.pyfunc.load_model(uri)

    # logged without a count (the default): the caller's threads, through MLflow's wrapper
    monkeypatch.delenv(ENV_THREADS)
    with mlflow.start_run():
        info = flavor.log_model(q_model, "tests.toys:TinyNet")
    model = mlflow.pyfunc.load_model(info.model_uri)
    impl = model._model_impl
    assert impl.threads is None
    recorder = ThreadRecorder(impl.model)
    impl.model = recorder
    model.predict(_x())
    assert recorder.seen == [process_threads]


# --- per-call settings are applied only when they differ (predict's fixed cost) -----------
@pytest.mark.no_mlflow
def test_a_count_already_in_force_is_not_set_again(process_threads, monkeypatch):
    calls: list[int] = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (calls.append(n), real(n))[1])
    model = ThreadRecorder(nn.Flatten())
    Int8PyfuncModel(model, SHAPE, process_threads, "x86").predict(_x())
    assert calls == [] and model.seen == [process_threads]
    Int8PyfuncModel(model, SHAPE, 1, "x86").predict(_x())
    assert calls == [1, process_threads]  # set for the call, the caller's count restored
    assert model.seen == [process_threads, 1] and torch.get_num_threads() == process_threads


@pytest.mark.no_mlflow
def test_the_engine_is_set_when_it_differs_and_warnings_silenced_on_the_first_call(
    monkeypatch,
):
    from inc_flow.model import predict as module

    other = [e for e in torch.backends.quantized.supported_engines if e not in ("x86", "none")]
    if not other or "x86" not in torch.backends.quantized.supported_engines:
        pytest.skip("needs the x86 engine and another one")
    engines: list[str] = []
    real_set = module.set_backend
    monkeypatch.setattr(module, "set_backend", lambda b: (engines.append(b), real_set(b)))
    quiets: list[int] = []
    real_quiet = module.quiet

    @contextlib.contextmanager
    def counted():
        quiets.append(1)
        with real_quiet():
            yield

    monkeypatch.setattr(module, "quiet", counted)
    previous = torch.backends.quantized.engine
    try:
        torch.backends.quantized.engine = other[0]
        pyfunc = Int8PyfuncModel(nn.Flatten(), SHAPE, None, "x86")
        for _ in range(3):
            pyfunc.predict(_x())
        assert engines == ["x86"] and torch.backends.quantized.engine == "x86"
        torch.backends.quantized.engine = other[0]  # changed by someone between calls
        pyfunc.predict(_x())
        assert engines == ["x86", "x86"] and torch.backends.quantized.engine == "x86"
        assert quiets == [1]  # the first call only
    finally:
        torch.backends.quantized.engine = previous


@pytest.mark.no_mlflow
def test_torch_ao_warnings_of_the_first_call_do_not_escape():
    class WarnsOnce(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if not getattr(self, "warned", False):
                self.warned = True
                warnings.warn(
                    "torch.quantize_per_tensor, torch.quantize_per_channel and other ...",
                    UserWarning,
                    stacklevel=1,
                )
            return x.flatten(1)

    pyfunc = Int8PyfuncModel(WarnsOnce(), SHAPE, None, "x86")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        out = pyfunc.predict(_x())
    assert seen == [] and out.shape == (2, int(np.prod(SHAPE)))
