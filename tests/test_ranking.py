"""The default strategy (``search.ranking``) against the fake engine: it ranks on the samples
all-int8 gets wrong, confirms with full evaluations, accumulates, and records what it cost."""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest

from inc_flow.errors import PlanError
from inc_flow.search.plan import Plan
from inc_flow.search.probe import Probe, restrict, select
from inc_flow.search.ranking import REFUTED_MAX
from inc_flow.search.space import SearchSpace
from tests.fakes import OPS, FakeEngine, FakeEvaluator, FakeModel, run

pytestmark = pytest.mark.no_mlflow


def full_evaluations(evaluator: FakeEvaluator) -> int:
    """Trials' evaluations (the first call is the fp32 baseline)."""
    return len(evaluator.calls) - 1


def test_a_planted_sensitive_op_is_found_in_three_evaluations() -> None:
    damage = {"conv1": 0.001, "conv2": 0.3, "conv3": 0.001, "fc1": 0.002, "fc2": 0.001}
    engine = FakeEngine(damage)
    evaluator = FakeEvaluator(engine)
    result, _, _ = run({}, engine=engine, evaluator=evaluator, timeout=0)
    assert result.best is not None and result.best.plan.fp32_ops == ("conv2",)
    assert full_evaluations(evaluator) <= 3
    assert [r.phase for r in result.records] == ["default", "ranked"]
    # the INC order needs all-int8, kl, three op types before it gets there
    inc, _, _ = run(damage, strategy="inc", timeout=0)
    assert inc.n_trials > result.n_trials


def test_two_fallbacks_that_only_pass_together_are_found_by_accumulation() -> None:
    damage = {"conv2": 0.02, "fc1": 0.03}  # each alone still misses 1 % of 0.9 by far
    engine = FakeEngine(damage)
    evaluator = FakeEvaluator(engine)
    result, _, _ = run({}, engine=engine, evaluator=evaluator, timeout=0)
    assert result.best is not None and set(result.best.plan.fp32_ops) == {"conv2", "fc1"}
    assert [r.phase for r in result.records] == ["default", "ranked", "accumulated"]
    assert result.records[1].plan.fp32_ops == ("fc1",)  # the larger damage ranks first
    assert full_evaluations(evaluator) == 3


def test_every_passing_verdict_comes_from_a_full_evaluation() -> None:
    damage = {"conv1": 0.004, "conv2": 0.02, "fc1": 0.03, "add1": 0.006}
    engine = FakeEngine(damage)
    evaluator = FakeEvaluator(engine, early_stop=True)
    result, _, _ = run({}, engine=engine, evaluator=evaluator, timeout=60, max_trials=12)
    passed = [r for r in result.records if r.passed]
    assert passed
    for record in passed:
        assert record.eval_samples == record.eval_total == evaluator.total
        assert record.plan in evaluator.calls  # evaluated, not only probed
        assert record.accuracy == pytest.approx(engine.accuracy(record.plan, evaluator.base))
    probed = {plan for plan, n in evaluator.probes if n < evaluator.total}
    assert probed - set(evaluator.calls)  # plans only probed never got a verdict
    assert all(r.plan not in probed - set(evaluator.calls) for r in result.records)


def test_an_observer_change_of_one_op_beats_its_fallback() -> None:
    engine = FakeEngine({"conv2": 0.05}, fixes={"conv2": ("act_algorithm", "kl")})
    evaluator = FakeEvaluator(engine)
    result, _, _ = run({}, engine=engine, evaluator=evaluator, timeout=0)
    best = result.best
    assert best is not None and best.plan.fp32_ops == () and best.phase == "ranked"
    assert best.plan.op("conv2").act_algorithm == "kl"
    assert {best.plan.op(n).act_algorithm for n, _ in OPS if n != "conv2"} == {"minmax"}
    assert full_evaluations(evaluator) == 2


def test_each_trial_records_its_phase_and_ranking_cost(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    engine = FakeEngine({"conv2": 0.02, "fc1": 0.03})
    evaluator = FakeEvaluator(engine)
    result, _, _ = run({}, engine=engine, evaluator=evaluator, storage=storage, study_name="r")
    costs = [r.rank_samples for r in result.records]
    (default, everything), (_, selected) = evaluator.probes[:2]
    assert default == result.records[0].plan and everything == evaluator.total
    assert selected == 50 + 64  # int8's 50 wrong samples, fp32's 64 closest calls
    # all-int8's outputs were recorded by its evaluation: only candidates cost samples: six
    # fallbacks, kl and per_tensor for all ops, kl and per_tensor on each of the two ops whose
    # fallback scored best. fc1 in fp32 is confirmed better, so the candidates that beat
    # all-int8 (fc1 and conv2 in fp32) are ranked again on its samples (conv2's 20 wrong ones,
    # fp32's 64 closest calls; its outputs were recorded by its evaluation): conv2 in fp32
    (_, again), (plan, reselected) = evaluator.probes[13:15]
    assert again == evaluator.total and reselected == 20 + 64
    assert plan == result.records[2].plan and len(evaluator.probes) == 15
    assert costs == [0, (6 + 2 + 2 * 2) * selected, reselected]
    trials = optuna.load_study(study_name="r", storage=storage).trials
    assert [t.user_attrs.get("inc_flow.rank_samples", 0) for t in trials] == costs
    assert [t.user_attrs["inc_flow.phase"] for t in trials] == [r.phase for r in result.records]


def test_with_timeout_0_a_missed_plan_is_not_timed() -> None:
    engine = FakeEngine({"conv2": 0.02, "fc1": 0.03})
    result, _, _ = run({}, engine=engine, timeout=0)
    assert [r.latency_ms is None for r in result.records] == [True, True, False]
    assert [r.state for r in result.records] == ["failed", "failed", "passed"]
    timed, _, _ = run({"conv2": 0.02, "fc1": 0.03}, timeout=60, max_trials=3)
    assert all(r.latency_ms is not None for r in timed.records)


def test_without_per_sample_outputs_the_inc_order_follows(caplog) -> None:
    class Blind(FakeEvaluator):
        probe = None  # type: ignore[assignment]

    engine = FakeEngine({"conv2": 0.05})
    with caplog.at_level(logging.WARNING, logger="inc_flow"):
        result, _, _ = run({}, engine=engine, evaluator=Blind(engine), max_trials=4)
    assert [r.phase for r in result.records][:2] == ["default", "observer"]
    assert "no ranking (the evaluator gives no per-sample outputs)" in caplog.text


def test_selection_keeps_disagreements_and_closest_calls() -> None:
    full = Probe(
        indices=tuple(range(200)),
        preds=tuple((i + (i < 5)) % 10 for i in range(200)),
        ref_preds=tuple(i % 10 for i in range(200)),
        tied=tuple(i == 7 for i in range(200)),
        ref_margins=tuple(float(200 - i) for i in range(200)),
        errors=(0.0,) * 200,
    )
    chosen = select(full)
    assert set(range(5)) | {7} <= set(chosen) and set(range(136, 200)) <= set(chosen)
    assert len(chosen) == 6 + 64
    assert restrict(full, chosen).score() == 64  # ties count against, as disagreements do


def test_op_observer_params_round_trip() -> None:
    space = SearchSpace(OPS[:3], op_observers=True)
    assert space.choices()["op:conv1"] == (
        "int8", "fp32", "int8:minmax", "int8:kl", "int8:per_channel", "int8:per_tensor"
    )  # fmt: skip
    choices = space.choices()
    for combo in itertools.islice(itertools.product(*choices.values()), 0, None, 7):
        plan = space.plan_from_params(dict(zip(choices, combo, strict=True)))
        assert space.plan_from_params(space.params_for(plan)) == plan
    one = space.with_op_setting(space.default_plan(), "conv2", "weight_granularity", "per_tensor")
    assert space.params_for(one)["op:conv2"] == "int8:per_tensor"
    assert one.op("conv1").weight_granularity == "per_channel"


def test_op_observers_never_touch_what_the_config_constrains() -> None:
    space = SearchSpace(
        OPS[:3],
        op_settings={
            "conv2": {"act_algorithm": ("minmax",)},  # pinned: minmax also when the global is kl
            "conv3": {"act_algorithm": ("kl", "minmax")},  # its own parameter
        },
        op_observers=True,
    )
    choices = space.choices()
    assert choices["op:conv2"] == ("int8", "fp32", "int8:per_channel", "int8:per_tensor")
    assert choices["act_algorithm:conv3"] == ("kl", "minmax")
    default = space.default_plan()
    assert space.op_variants(default.op("conv2")) == [("weight_granularity", "per_tensor")]
    with pytest.raises(PlanError, match="'conv2' cannot hold act_algorithm='kl'"):
        space.with_op_setting(default, "conv2", "act_algorithm", "kl")
    own = space.with_op_setting(default, "conv2", "weight_granularity", "per_tensor")
    assert space.params_for(own)["op:conv2"] == "int8:per_tensor"
    for combo in itertools.islice(itertools.product(*choices.values()), 0, None, 5):
        plan = space.plan_from_params(dict(zip(choices, combo, strict=True)))
        assert space.plan_from_params(space.params_for(plan)) == plan
        assert Plan.from_dict(plan.to_dict()) == plan
        assert plan.op("conv2").act_algorithm == "minmax"
    assert space.n_plans() >= len(
        {
            space.plan_from_params(dict(zip(choices, c, strict=True)))
            for c in itertools.product(*choices.values())
        }
    )


def test_the_ranking_keeps_an_op_the_config_pins() -> None:
    engine = FakeEngine({"conv2": 0.05}, fixes={"conv2": ("act_algorithm", "kl")})
    space = SearchSpace(OPS, op_settings={"conv2": {"act_algorithm": ("minmax",)}})
    result, _, _ = run({}, engine=engine, space=space, timeout=0)
    assert {r.plan.op("conv2").act_algorithm for r in result.records} == {"minmax"}
    assert result.best is not None and result.best.plan.fp32_ops == ("conv2",)


@dataclass
class Misled(FakeEvaluator):
    """Its probe sees ``decoy``'s damage, not the engine's: every prediction is wrong."""

    decoy: FakeEngine | None = None

    def probe(self, model: FakeModel, reference: FakeModel, indices) -> Probe:
        real, self.engine = self.engine, self.decoy
        try:
            return super().probe(model, reference, indices)
        finally:
            self.engine = real


def test_a_ranking_refuted_again_and_again_is_cut_short(caplog) -> None:
    damage = {"conv2": 0.05}  # INC's order passes at its op-type step (every Conv2d fp32)
    decoy = FakeEngine({"conv1": 0.05, "conv3": 0.04, "fc1": 0.03, "fc2": 0.02, "add1": 0.01})
    assert REFUTED_MAX < len(decoy.damage)  # without the cut, a fifth refuted evaluation
    inc, _, _ = run(damage, strategy="inc", timeout=0)
    engine = FakeEngine(damage)
    evaluator = Misled(engine, decoy=decoy)
    with caplog.at_level(logging.WARNING, logger="inc_flow"):
        result, _, _ = run({}, engine=engine, evaluator=evaluator, timeout=0)
    phases = [r.phase for r in result.records]
    assert phases == ["default", *["ranked"] * REFUTED_MAX, "cut:observer", "cut:op_type"]
    refuted = result.records[1 : 1 + REFUTED_MAX]
    assert [r.plan.fp32_ops for r in refuted] == [("conv1",), ("conv3",), ("fc1",), ("fc2",)]
    assert all(r.accuracy == result.records[0].accuracy for r in refuted)
    assert result.best is not None and result.best.plan == inc.best.plan
    assert result.best.plan.fp32_ops == ("conv1", "conv2", "conv3")
    assert full_evaluations(evaluator) == 1 + REFUTED_MAX + 2  # all-int8 is not evaluated again
    assert "ranking cut short: 4 full evaluations in a row (trials 1, 2, 3, 4)" in caplog.text


def test_a_confirmed_step_resets_the_count_of_refutations() -> None:
    # the decoy's conv1 and conv3 are refuted, fc1 is confirmed (real damage); on top of it
    # conv1, conv3 and fc2 are refuted: five refutations, never REFUTED_MAX in a row, so the
    # ranking goes on to add1, which passes
    damage = {"fc1": 0.05, "add1": 0.02}
    decoy = FakeEngine({"conv1": 0.08, "conv3": 0.07, "fc1": 0.06, "fc2": 0.02, "add1": 0.01})
    engine = FakeEngine(damage)
    result, _, _ = run({}, engine=engine, evaluator=Misled(engine, decoy=decoy), timeout=0)
    assert [r.phase for r in result.records] == ["default", *["ranked"] * 3, *["accumulated"] * 4]
    assert [r.plan.fp32_ops for r in result.records[1:4]] == [("conv1",), ("conv3",), ("fc1",)]
    assert result.best is not None and set(result.best.plan.fp32_ops) == {"fc1", "add1"}
