"""The FX engine on toy models: op listing, plans, backends, approaches, rebuild, statistics."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from inc_flow.errors import QuantizationError
from inc_flow.quant.ao import set_backend
from inc_flow.quant.graph import calibrate, convert, list_ops, prepare, trace_targets
from inc_flow.quant.mapping import plan_to_mapping, qconfig_for
from inc_flow.quant.state import rebuild
from inc_flow.quant.stats import op_counts, op_statistics, statistics_frame
from inc_flow.search.plan import OpPlan, Plan, default_plan
from inc_flow.vocab import Approach
from tests.toys import NoOps, TinyNet, Untraceable

pytestmark = pytest.mark.no_mlflow

BACKENDS = ["x86", "onednn", "fbgemm"]
STATIC, DYNAMIC, QAT = Approach.STATIC.value, Approach.DYNAMIC.value, Approach.QAT.value


def _calibrated(model: nn.Module, plan: Plan, x: torch.Tensor) -> nn.Module:
    prepared = prepare(model, plan.calibration_plan(), (x,))
    seen = calibrate(prepared, [x, x], 2 * x.shape[0], lambda m, b: (m(b), b.shape[0])[1])
    assert seen == 2 * x.shape[0]
    return prepared


@pytest.fixture
def x() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(8, 1, 20, 20)


@pytest.fixture
def tiny() -> nn.Module:
    torch.manual_seed(0)
    return TinyNet().eval()


def test_list_ops_in_execution_order(tiny):
    assert list_ops(tiny) == [
        ("conv1", "Conv2d"),
        ("conv2", "Conv2d"),
        ("fc1", "Linear"),
        ("fc2", "Linear"),
    ]
    assert list_ops(tiny, DYNAMIC) == [("fc1", "Linear"), ("fc2", "Linear")]
    assert [n for n, _ in list_ops(tiny, STATIC, "pytorch")] == ["conv1", "conv2", "fc1", "fc2"]


def test_no_quantizable_op_is_a_clear_error():
    with pytest.raises(QuantizationError, match="no quantizable op"):
        list_ops(NoOps())


def test_untraceable_model_uses_traceable_submodules(x):
    model = Untraceable().eval()
    assert trace_targets(model) == ["body", "head"]
    ops = list_ops(model)
    assert [n for n, _ in ops] == ["body.conv1", "body.conv2", "body.fc1", "body.fc2", "head"]
    plan = default_plan(ops)
    prepared = _calibrated(model, plan, x)
    for p in (plan, plan.with_fallback({"body.fc1", "head"})):
        q = convert(prepared, p)
        y = q(x)
        assert torch.allclose(y, model(x), atol=0.2)
        assert torch.equal(rebuild(model, p, q.state_dict(), (x[:1],))(x), y)


def test_nothing_traceable_names_the_module_and_reason():
    class Bad(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(2, 2)

        def forward(self, x):
            return self.fc(x) if x.sum() > 0 else x

    class Outer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = Bad()

        def forward(self, x):
            return self.inner(x) if x.mean() > 0 else x

    # the Linear leaf still traces, so the model quantizes around the Python control flow
    assert trace_targets(Outer()) == ["inner.fc"]

    class Leafless(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    with pytest.raises(QuantizationError, match=r"<root> \(Leafless\).*TraceError"):
        trace_targets(Leafless())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("framework", ["pytorch_fx", "pytorch"])
@pytest.mark.parametrize("approach", [STATIC, DYNAMIC])
def test_plans_convert_and_rebuild_exactly(tiny, x, backend, framework, approach):
    ops = list_ops(tiny, approach, framework)
    plan = default_plan(ops, approach=approach, backend=backend, framework=framework)
    prepared = _calibrated(tiny, plan, x)
    fallback = plan.with_fallback({ops[0][0]})
    for p in (plan, fallback):
        q = convert(prepared, p)
        y = q(x)
        assert (y - tiny(x)).abs().max() < 0.1
        rebuilt = rebuild(tiny, p, q.state_dict(), (x[:1],))
        assert torch.equal(rebuilt(x), y)
    rows = op_statistics(convert(prepared, fallback), approach)
    assert op_counts(statistics_frame(rows)) == (len(ops) - 1, 1)
    assert {r["Op Type"]: r["FP32"] for r in rows}[ops[0][1]] == 1


def test_observer_settings_change_the_model(tiny, x):
    ops = list_ops(tiny)
    outs = []
    for settings in (
        {},
        {"act_algorithm": "kl"},
        {"weight_granularity": "per_tensor"},
        {"act_scheme": "sym"},
    ):
        plan = default_plan(ops, backend="onednn", **settings)
        q = convert(_calibrated(tiny, plan, x), plan)
        y = q(x)
        assert torch.equal(rebuild(tiny, plan, q.state_dict(), (x[:1],))(x), y)
        outs.append(y)
    assert not torch.equal(outs[0], outs[1])
    assert not torch.equal(outs[0], outs[2])


def test_qconfig_translation_is_pure():
    op = OpPlan("conv", "Conv2d", act_algorithm="kl", weight_granularity="per_tensor")
    qc = qconfig_for(op, "x86", STATIC)
    act, weight = qc.activation(), qc.weight()
    assert type(act).__name__ == "HistogramObserver"
    assert (act.quant_min, act.quant_max) == (0, 127)  # x86: 7-bit activations
    assert weight.qscheme == torch.per_tensor_symmetric
    assert qconfig_for(OpPlan("c", "Conv2d", dtype="fp32"), "x86", STATIC) is None
    onednn = qconfig_for(OpPlan("c", "Conv2d"), "onednn", STATIC).activation()
    assert (onednn.quant_min, onednn.quant_max) == (0, 255)
    mapping = plan_to_mapping(
        default_plan([("a", "Conv2d"), ("b", "Linear")]).with_fallback({"b"})
    )
    assert mapping.module_name_qconfigs["b"] is None
    assert mapping.module_name_qconfigs["a"] is not None


@pytest.mark.parametrize("framework", ["pytorch_fx", "pytorch"])
def test_qat_trains_then_converts_with_fallbacks(x, framework):
    class ConvBn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)
            self.bn = nn.BatchNorm2d(4)
            self.fc = nn.Linear(4 * 18 * 18, 5)

        def forward(self, x):
            return self.fc(torch.flatten(F.relu(self.bn(self.conv(x))), 1))

    model = ConvBn().eval()
    ops = list_ops(model, QAT, framework)
    plan = default_plan(ops, approach=QAT, framework=framework)
    prepared = prepare(model, plan, (x,))
    assert prepared.training
    opt = torch.optim.SGD(prepared.parameters(), lr=0.01)
    for _ in range(3):
        loss = prepared(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    prepared.eval()
    for p in (plan, plan.with_fallback({"conv"})):
        q = convert(prepared, p)
        y = q(x)
        assert torch.equal(rebuild(model, p, q.state_dict(), (x[:1],))(x), y)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_resnet18_on_each_backend(backend):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    ops = list_ops(model)
    assert len(ops) == 21 and ops[0] == ("conv1", "Conv2d") and ops[-1] == ("fc", "Linear")
    plan = default_plan(ops, backend=backend)
    prepared = _calibrated(model, plan, x)
    q = convert(prepared, plan.with_fallback({"layer1.0.conv1"}))
    y = q(x)
    assert torch.equal(
        rebuild(model, plan.with_fallback({"layer1.0.conv1"}), q.state_dict(), (x[:1],))(x), y
    )
    stats = {r["Op Type"]: r for r in op_statistics(q)}
    assert stats["ConvReLU2d"]["INT8"] + stats["Conv2d"]["INT8"] == 19
    assert stats["Conv2d"]["FP32"] == 1


def test_mismatched_state_dict_is_refused(tiny, x):
    ops = list_ops(tiny)
    plan = default_plan(ops)
    q = convert(_calibrated(tiny, plan, x), plan)
    state = q.state_dict()
    other = plan.with_fallback({"fc2"})
    with pytest.raises(QuantizationError, match="do not match"):
        rebuild(tiny, other, state, (x[:1],))


def test_unsupported_engine_is_named():
    with pytest.raises(QuantizationError, match="qnnpackx"):
        set_backend("qnnpackx")
