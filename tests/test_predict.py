"""``Int8PyfuncModel.predict``'s per-call shortcuts keep its behaviour: the forward runs under
``inference_mode`` on every path, and MLflow reads ``predict``'s signature (on every call)
from an attribute. No timing here (benchmarks/bench_pyfunc_overhead.py)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from mlflow.models import Model
from mlflow.models.signature import ModelSignature
from mlflow.pyfunc import PyFuncModel
from mlflow.types import Schema, TensorSpec
from torch import nn

from inc_flow.model.predict import Int8PyfuncModel
from tests.toys import SHAPE

pytestmark = pytest.mark.no_mlflow


class Records(nn.Module):
    """Flattens, recording whether each forward ran under inference mode and with how many
    intra-op threads."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[bool, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append((torch.is_inference_mode_enabled(), torch.get_num_threads()))
        return x.flatten(1)


def _x(n: int = 2) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, *SHAPE), dtype=np.float32)


@pytest.mark.parametrize("count", [None, 1])
def test_every_call_runs_under_inference_mode_with_its_thread_count(count):
    model, caller = Records(), torch.get_num_threads()
    pyfunc = Int8PyfuncModel(model, SHAPE, count, "x86")
    outs = [pyfunc.predict(_x()) for _ in range(3)]  # the first call, then the usual one
    assert model.seen == [(True, count or caller)] * 3
    assert not torch.is_inference_mode_enabled() and torch.get_num_threads() == caller
    assert all(np.array_equal(o, _x().reshape(2, -1)) for o in outs)


def test_predicts_signature_is_an_attribute_mlflow_reads_as_it_is():
    pyfunc = Int8PyfuncModel(nn.Flatten(), SHAPE, None, "x86")
    sig = inspect.signature(pyfunc.predict)
    assert list(sig.parameters) == ["model_input", "params"]  # no `self`
    assert inspect.signature(pyfunc.predict) is sig  # looked up, not built again per call
    meta = Model(
        signature=ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *SHAPE))]))
    )
    wrapped = PyFuncModel(meta, pyfunc)  # MLflow's wrapper passes params by name
    assert np.array_equal(wrapped.predict(_x(), params=None), _x().reshape(2, -1))


def test_a_subclass_predict_is_the_one_called():
    class Doubled(Int8PyfuncModel):
        def predict(self, model_input, params=None):
            return 2 * super().predict(model_input, params)

    out = Doubled(nn.Flatten(), SHAPE, None, "x86").predict(_x())
    assert np.array_equal(out, 2 * _x().reshape(2, -1))


@pytest.mark.parametrize("openvino", [False, True], ids=["torch model", "OpenVINO model"])
def test_the_finite_check_sums_on_the_models_side(openvino, monkeypatch):
    # An OpenVINO model runs on its own threads: torch's sum (OpenMP threads from 32768
    # values on) must stay out of its way, numpy sums instead; a torch model keeps torch's.
    from inc_flow.quant.openvino import OpenVinoModel

    class FakeOpenVino(OpenVinoModel):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1)

    model = FakeOpenVino(None) if openvino else nn.Flatten()
    calls: list[tuple[int, ...]] = []
    real_sum = torch.Tensor.sum

    def counting_sum(self, *args, **kwargs):
        calls.append(tuple(self.shape))
        return real_sum(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "sum", counting_sum)
    pyfunc = Int8PyfuncModel(model, SHAPE, None, "x86")
    x = _x(3)
    assert np.array_equal(pyfunc.predict(x), x.reshape(3, -1))
    assert calls == ([] if openvino else [x.shape])
    x[1, 0, 2, 3] = np.nan
    with pytest.raises(
        Exception, match=r"NaN or infinite value\(s\), the first at index \(1, 0, 2, 3\)"
    ):
        pyfunc.predict(x)
