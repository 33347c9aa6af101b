"""A plan's fp32 output (``Plan.fp32_output``): the plan field and its yaml, the search space's
``output`` parameter, the default strategy's ``last_op``/``output`` candidates (fake engine),
and the FX build, save and load on a real toy model ending in ``log_softmax``."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
import torch
import yaml

from inc_flow.errors import PlanError, QuantizationError, SaveLoadError
from inc_flow.model.configure import plan_from_configure, read_configure
from inc_flow.model.output import CONFIGURE_FILE, QuantizedModel, load
from inc_flow.quant.engine import FxEngine
from inc_flow.quant.graph import calibrate, convert, list_ops, prepare
from inc_flow.search.plan import Plan, default_plan
from inc_flow.search.space import SearchSpace
from tests.fakes import OPS, FakeEngine, FakeEvaluator, run
from tests.toys import LogSoftmaxNet, TinyNet, Untraceable

pytestmark = pytest.mark.no_mlflow

TIED = 0.05  # share of samples whose int8 outputs tie at the top (counted wrong)


# --- the plan field --------------------------------------------------------------------------
def test_the_plan_stores_its_output_only_when_fp32() -> None:
    plan = default_plan(OPS).with_fallback({"fc2"})
    assert "output" not in plan.to_dict()  # files written before the field read the same
    out = replace(plan, fp32_output=True)
    data = out.to_dict()
    assert data["output"] == "fp32" and Plan.from_dict(data) == out
    assert Plan.from_dict(plan.to_dict()).fp32_output is False
    assert out.summary().endswith(" out=fp32") and "out=" not in plan.summary()
    assert out.calibration_key() == plan.calibration_key()  # the convert step only
    with pytest.raises(PlanError, match=r"`output` must be one of \['int8', 'fp32'\].*'fp16'"):
        Plan.from_dict({**data, "output": "fp16"})


# --- the search space ------------------------------------------------------------------------
def small_space(**kw) -> SearchSpace:
    ops = (("conv1", "Conv2d"), ("fc1", "Linear"))
    return SearchSpace(ops, act_algorithms=("minmax",), **kw)


def test_the_space_searches_the_output_only_when_asked() -> None:
    assert "output" not in small_space().choices()
    space = small_space(fp32_outputs=True)
    assert space.choices()["output"] == ("int8", "fp32")
    plan = space.plan_from_params({"output": "fp32", "op:fc1": "fp32"})
    assert plan.fp32_output and plan.fp32_ops == ("fc1",)
    assert space.params_for(plan)["output"] == "fp32"
    assert space.plan_from_params(space.params_for(plan)) == plan
    all_fp32 = space.plan_from_params({"output": "fp32", "op:fc1": "fp32", "op:conv1": "fp32"})
    assert not all_fp32.fp32_output  # no int8 op: the fp32 model, whatever its output
    with pytest.raises(PlanError, match="has no fp32 output"):
        small_space().canonical(plan)


def test_the_plan_count_includes_the_output() -> None:
    for space in (
        small_space(fp32_outputs=True),
        small_space(fp32_outputs=True, op_observers=True),
    ):
        choices = space.choices()
        plans = {
            space.plan_from_params(dict(zip(choices, values, strict=True)))
            for values in itertools.product(*choices.values())
        }
        assert space.n_plans() >= len(plans)
        if not space.op_observers:  # exact without per-op observers
            assert space.n_plans() == len(plans) == 1 + 2 * 3 * 2  # int8 sets x granularities


# --- the default strategy (fake engine) ------------------------------------------------------
class TieEngine(FakeEngine):
    """All-int8 outputs tie on the last ``TIED`` of the samples (counted wrong) unless the
    plan keeps the last op (``add1``) in fp32 with an fp32 output."""

    supports_fp32_output = True

    def off_grid(self, plan: Plan | None) -> bool:
        return plan is None or (plan.fp32_output and not plan.op("add1").quantized)

    def accuracy(self, plan: Plan | None, base: float) -> float:
        return super().accuracy(plan, base) - (0.0 if self.off_grid(plan) else TIED)


class TieEvaluator(FakeEvaluator):
    def probe(self, model, reference, indices):
        probe = super().probe(model, reference, indices)
        tied = not self.engine.off_grid(model.plan)
        first = round(self.total * (1 - TIED))
        return replace(probe, tied=tuple(tied and i >= first for i in probe.indices))


def test_outputs_that_tie_are_fixed_by_the_last_op_in_fp32_with_an_fp32_output() -> None:
    engine = TieEngine({})
    evaluator = TieEvaluator(engine)
    result, _, _ = run({}, engine=engine, evaluator=evaluator, timeout=0)
    best = result.best
    assert best is not None and best.plan.fp32_output and best.plan.fp32_ops == ("add1",)
    assert [r.phase for r in result.records] == ["default", "fp32_output"]
    assert len(evaluator.calls) - 1 == 2  # two full evaluations: all-int8, then this plan
    # the output alone (add1 still int8) was ranked too, and did not help: never evaluated
    probed = {plan for plan, _ in evaluator.probes}
    assert any(p is not None and p.fp32_output and p.op("add1").quantized for p in probed)
    assert all(not (r.plan.fp32_output and r.plan.op("add1").quantized) for r in result.records)


def test_no_fp32_output_without_the_engine_or_without_ties() -> None:
    class CannotKeep(TieEngine):
        supports_fp32_output = False

    plain = CannotKeep({})
    result, _, _ = run({}, engine=plain, evaluator=TieEvaluator(plain), timeout=0, max_trials=6)
    assert result.best is None and len(result.records) == 6
    assert not any(r.plan.fp32_output for r in result.records)
    # ties rare (none here): the candidates are not even probed
    engine = FakeEngine({"conv2": 0.05})
    engine.supports_fp32_output = True  # type: ignore[attr-defined]
    quiet = FakeEvaluator(engine)
    result, _, _ = run({}, engine=engine, evaluator=quiet, timeout=0)
    assert result.best is not None and result.best.plan.fp32_ops == ("conv2",)
    assert not any(p is not None and p.fp32_output for p, _ in quiet.probes)


# --- the FX build, save and load (a real toy model) ------------------------------------------
@pytest.fixture(scope="module")
def built():
    torch.manual_seed(0)
    model = LogSoftmaxNet().eval()
    x = torch.randn(16, 1, 20, 20)
    plan = default_plan(list_ops(model)).with_fallback({"fc2"})
    prepared = prepare(model, plan.calibration_plan(), (x,))
    calibrate(prepared, [x], 16, lambda m, b: (m(b), b.shape[0])[1])
    return model, x, plan, prepared


def _requantized(model) -> int:
    return sum(n.target is torch.quantize_per_tensor for n in model.graph.nodes)


def test_the_fx_build_keeps_the_ops_after_the_last_one_fp32(built) -> None:
    model, x, plan, prepared = built
    on_grid = convert(prepared, plan)
    off_grid = convert(prepared, replace(plan, fp32_output=True))
    # fc2 is fp32 in both; only the plain plan requantizes its output for log_softmax
    assert _requantized(on_grid) == _requantized(off_grid) + 1
    last = next(n for n in off_grid.graph.nodes if n.op == "output").args[0]
    assert last.target is torch.nn.functional.log_softmax
    assert last.args[0].op == "call_module" and last.args[0].target == "fc2"
    with torch.no_grad():
        ref, a, b = model(x), on_grid(x), off_grid(x)
    assert (b - ref).abs().max() < (a - ref).abs().max()  # closer to fp32: off the grid
    # an inference model: fc2's fp32 output (and the loaded model's) tracks no grad
    assert not off_grid(x).requires_grad
    assert not any(p.requires_grad for p in off_grid.parameters())


def test_save_and_load_rebuild_the_fp32_output(built, tmp_path) -> None:
    model, x, plan, prepared = built
    plan = replace(plan, fp32_output=True)
    q = QuantizedModel(convert(prepared, plan), plan, (x,), calibration_size=16)
    q.save(tmp_path)
    data = yaml.safe_load((tmp_path / CONFIGURE_FILE).read_text())
    assert data["output"] == "fp32"
    loaded = load(tmp_path, LogSoftmaxNet())
    assert plan_from_configure(read_configure(tmp_path)) == plan
    assert _requantized(loaded) == _requantized(q.model)
    assert not loaded(x).requires_grad
    with torch.no_grad():
        assert torch.equal(loaded(x), q.model(x))
    (tmp_path / CONFIGURE_FILE).write_text(yaml.safe_dump({**data, "output": "fp16"}))
    with pytest.raises(SaveLoadError, match="output"):
        load(tmp_path, LogSoftmaxNet())


def test_only_a_model_fx_traces_whole_can_keep_its_output_fp32() -> None:
    x = torch.randn(4, 1, 20, 20)
    assert FxEngine(LogSoftmaxNet(), x, calib_loader=[x]).supports_fp32_output
    assert FxEngine(TinyNet(), x, calib_loader=[x]).supports_fp32_output
    engine = FxEngine(Untraceable().eval(), x, calib_loader=[x], sampling_size=4)
    assert not engine.supports_fp32_output
    plan = default_plan(engine.ops())
    with pytest.raises(QuantizationError, match="output fp32 needs a model that FX traces"):
        engine.build(replace(plan, fp32_output=True))
