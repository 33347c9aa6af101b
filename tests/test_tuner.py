"""The tuning loop against a fake engine (no torch): milliseconds per study."""

from __future__ import annotations

import itertools
import logging
import math
import re
from dataclasses import replace
from pathlib import Path

import optuna
import pytest

from inc_flow.errors import MetricError
from inc_flow.search.accuracy import shortfall
from inc_flow.search.loop import ALL_FP32, tune
from inc_flow.search.progress import LoggingTracker
from inc_flow.search.settings import TuneSettings
from inc_flow.search.space import SearchSpace
from tests.fakes import (
    MEMORY,
    OPS,
    FakeBenchmark,
    FakeEngine,
    FakeEvaluator,
    ListTracker,
    run,
)

pytestmark = pytest.mark.no_mlflow

N_TYPES = 3
HOPELESS = {n: 0.1 for n, _ in OPS}  # every int8 op misses the 1% target alone
INC = "inc"  # INC's order (the default strategy ranks: tests/test_ranking.py)


def test_enqueued_seed_order() -> None:
    damage = {**HOPELESS, "fc1": 0.3, "conv2": 0.2}
    result, engine, tracker = run(damage, strategy=INC, max_trials=14)
    phases = [r.phase for r in result.records]
    assert (
        phases
        == ["default", "observer"] + ["op_type"] * 3 + ["single_op"] * 5 + ["accumulated"] * 4
    )
    fp32 = [set(r.plan.fp32_ops) for r in result.records]
    assert fp32[:2] == [set(), set()] and result.records[1].plan.ops[0].act_algorithm == "kl"
    assert fp32[2:5] == [{"conv1", "conv2", "conv3"}, {"fc1", "fc2"}, {"add1"}]
    # single {add1} is the "add" op-type fallback and accumulated top-1 the first single:
    # seeds already evaluated are skipped
    assert fp32[5:10] == [{"fc1"}, {"conv2"}, {"conv1"}, {"conv3"}, {"fc2"}]
    top = ["fc1", "conv2", "conv1", "conv3", "fc2"]
    assert fp32[10:] == [set(top[:k]) for k in (2, 3, 4, 5)]
    assert engine.sensitivity_after == [5]  # asked once, after the op-type phase
    assert [r.number for r in tracker.records] == list(range(14))
    assert result.best is None and result.stop_reason == "max_trials"


def test_sensitivity_not_computed_when_an_op_type_fallback_passes() -> None:
    result, engine, _ = run({"conv2": 0.05}, strategy=INC)
    assert result.best is not None and result.best.phase == "op_type"
    assert set(result.best.plan.fp32_ops) == {"conv1", "conv2", "conv3"}
    assert engine.sensitivity_after == [] and result.stop_reason == "target met"
    assert len(result.records) == 3  # default, observer, Conv2d fallback: first pass wins


def test_planted_sensitive_op_found_within_budget() -> None:
    damage = {"conv1": 0.001, "conv2": 0.3, "conv3": 0.001, "fc1": 0.002, "fc2": 0.001}
    result, _, _ = run(damage, timeout=0)
    assert result.best is not None and "conv2" in result.best.plan.fp32_ops
    assert result.n_trials <= 1 + N_TYPES + 2


def test_constraint_values_match_the_accuracy_rule(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    result, _, _ = run({"conv2": 0.05}, storage=storage, study_name="c")
    required = result.required_accuracy
    assert required == pytest.approx(0.9 * 0.99)
    study = optuna.load_study(study_name="c", storage=storage)
    for trial, record in zip(study.trials, result.records, strict=True):
        constraint = trial.constraints["accuracy"]
        assert constraint == pytest.approx(required - record.accuracy)
        assert (constraint <= 0) is record.passed
        assert trial.user_attrs["inc_flow.record"]["state"] == record.state
    assert study.best_trial.number == result.best.number


def test_failing_build_is_recorded_and_the_study_goes_on() -> None:
    engine = FakeEngine({"conv2": 0.05}, fail=lambda p: p.ops[0].act_algorithm == "kl")
    result, _, _ = run({}, strategy=INC, engine=engine, study_name="f")
    err = result.records[1]
    assert err.state == "error" and "RuntimeError: convert failed" in err.failure_reason
    assert result.n_errors == 1 and result.best is not None and result.best.number == 2


def test_nan_accuracy_fails_the_trial_with_a_reason() -> None:
    engine = FakeEngine({"conv2": 0.05})
    evaluator = FakeEvaluator(engine, nan_for="conv1")
    result, _, _ = run({}, strategy=INC, engine=engine, evaluator=evaluator, max_trials=4)
    nan = [r for r in result.records if "conv1" in r.plan.fp32_ops][0]
    assert nan.state == "error" and "NaN" in nan.failure_reason


class Scripted(FakeEvaluator):
    """The fake's accuracies, with ``int8`` as the score of every int8 plan, and a chance
    level and tie count on each outcome."""

    def __init__(self, engine, int8=None, fp32=None, chance=None, tied=None) -> None:
        super().__init__(engine)
        self.int8, self.fp32, self.chance, self.tied = int8, fp32, chance, tied

    def evaluate(self, model, threshold):
        out = super().evaluate(model, threshold)
        value = self.fp32 if model.plan is None else self.int8
        value = out.value if value is None else value
        return replace(out, value=value, chance=self.chance, tied=self.tied)


@pytest.mark.parametrize(
    ("value", "hib", "words"), [(math.inf, True, "+inf"), (-math.inf, False, "-inf")]
)
def test_an_infinite_score_is_an_error_trial_not_a_pass(value, hib, words) -> None:
    engine = FakeEngine({"conv2": 0.05})
    evaluator = Scripted(engine, int8=value, fp32=0.5)
    result, _, _ = run({}, engine=engine, evaluator=evaluator, max_trials=3, higher_is_better=hib)
    assert result.best is None and result.n_errors == 3
    assert all(words in r.failure_reason for r in result.records)
    assert shortfall(0.5, value, hib) == math.inf  # never a pass, whoever asks


@pytest.mark.parametrize(
    ("fp32", "chance", "words"),
    [
        (0.1, 0.1, "is 0.1000 (the baseline), at or below chance 0.1000"),
        (0.05, 0.1, "is 0.0500 (the baseline), at or below chance 0.1000"),
        (math.inf, None, "is +inf (the baseline)"),
        (math.nan, 0.1, "is NaN (the baseline)"),
    ],
)
def test_a_degenerate_baseline_is_rejected_before_trial_0(fp32, chance, words) -> None:
    engine = FakeEngine({"conv2": 0.05})
    tracker = ListTracker()
    evaluator = Scripted(engine, fp32=fp32, chance=chance)
    with pytest.raises(MetricError, match=re.escape(f"the fp32 model's metric {words}")):
        run({}, engine=engine, evaluator=evaluator, tracker=tracker)
    assert engine.builds == [] and tracker.info is None  # no trial, no study started
    lower = Scripted(engine, fp32=0.1, chance=0.1)  # lower is better: chance means nothing
    assert (
        run({}, engine=engine, evaluator=lower, higher_is_better=False)[0].baseline_accuracy == 0.1
    )


def test_the_tie_count_is_recorded_and_frequent_ties_are_logged(caplog) -> None:
    engine = FakeEngine({"conv2": 0.05})
    evaluator = Scripted(engine, chance=0.1, tied=25)  # 25 of 1000 samples: 2.5 %
    with caplog.at_level(logging.INFO, logger="inc_flow"):
        result, _, _ = run(
            {}, engine=engine, evaluator=evaluator, max_trials=2, tracker=LoggingTracker()
        )
    assert [r.tied_outputs for r in result.records] == [25, 25]
    assert "[trial 0] 25 of 1000 outputs tie at the top: the verdict counts argmax's" in (
        caplog.text
    )
    caplog.clear()
    rare = Scripted(engine, chance=0.1, tied=10)  # 1 %: not frequent
    with caplog.at_level(logging.INFO, logger="inc_flow"):
        run({}, engine=FakeEngine({}), evaluator=rare, max_trials=1, tracker=LoggingTracker())
    assert "[trial 0 | 1/1]" in caplog.text and "tie at the top" not in caplog.text
    plain, _, _ = run({}, max_trials=1)  # no ranking metric: nothing counted
    assert plain.records[0].tied_outputs is None


def test_search_with_timeout_picks_the_fastest_passing_plan() -> None:
    damage = {"conv1": 0.002, "conv2": 0.05, "conv3": 0.003, "fc1": 0.004}
    result, _, _ = run(damage, timeout=60, max_trials=25)
    passed = [r for r in result.records if r.passed]
    assert len(passed) > 1 and result.stop_reason == "max_trials" and result.n_trials == 25
    assert result.best.latency_ms == min(r.latency_ms for r in passed)
    assert result.best_model.plan == result.best.plan


def test_a_timeout_spent_before_the_first_trial_still_runs_one() -> None:
    # The fp32 baseline alone can outlast a short timeout (ResNet18 at 1 thread: 176 s against
    # 60 s); the study then still evaluates a plan, as INC does, instead of ending empty.
    damage = {"conv1": 0.001}
    result, _, _ = run(damage, timeout=1e-6, max_trials=25)
    assert result.stop_reason == "timeout" and result.n_trials == 1
    assert result.best is not None and result.best.passed


def test_max_trials_bounds_seeds_too() -> None:
    result, _, _ = run(HOPELESS, timeout=60, max_trials=3)
    assert result.n_trials == 3 and result.stop_reason == "max_trials"


def test_pruned_trials_count_saved_samples() -> None:
    engine = FakeEngine({"conv2": 0.05})
    evaluator = FakeEvaluator(engine, early_stop=True)
    result, _, _ = run({}, strategy=INC, engine=engine, evaluator=evaluator, study_name="p")
    pruned = [r for r in result.records if r.state == "pruned"]
    assert len(pruned) == 2 and result.n_pruned == 2
    assert result.eval_samples_saved == 2 * 750
    assert pruned[0].latency_ms is None and pruned[0].eval_samples == 250


def test_pruned_trials_are_pruned_and_infeasible_in_optuna(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    engine = FakeEngine({"conv2": 0.05})
    run(
        {},
        strategy=INC,
        engine=engine,
        evaluator=FakeEvaluator(engine, early_stop=True),
        storage=storage,
    )
    trials = optuna.load_study(study_name="inc_flow", storage=storage).trials
    assert [t.state.name for t in trials] == ["PRUNED", "PRUNED", "COMPLETE"]
    assert trials[0].constraints["accuracy"] > 0


def test_nothing_passes_reports_the_closest_miss(caplog: pytest.LogCaptureFixture) -> None:
    damage = {**HOPELESS, "add1": 0.011}
    with caplog.at_level(logging.WARNING, logger="inc_flow"):
        result, _, _ = run(damage, max_trials=14)
    assert result.best is None and result.best_model is None
    assert set(result.closest.plan.int8_ops) == {"add1"}
    assert result.closest_miss == pytest.approx(0.011 - 0.009)
    assert "no plan met the accuracy target" in caplog.text


def test_resume_reuses_finished_trials(tmp_path: Path) -> None:
    first, engine1, _ = run(HOPELESS, strategy=INC, max_trials=5, workspace=str(tmp_path))
    assert (tmp_path / "optuna.db").exists() and first.storage.endswith("optuna.db")
    engine2 = FakeEngine(HOPELESS)
    evaluator2 = FakeEvaluator(engine2)
    second, _, tracker = run(
        HOPELESS,
        strategy=INC,
        engine=engine2,
        evaluator=evaluator2,
        max_trials=8,
        workspace=str(tmp_path),
    )
    assert len(engine2.builds) == 3 and second.n_trials == 8
    assert not set(engine2.builds) & set(engine1.builds)
    assert None not in evaluator2.calls  # the fp32 baseline is not evaluated again
    assert [r.number for r in tracker.info.resumed] == [0, 1, 2, 3, 4]
    assert [r.plan for r in second.records[:5]] == [r.plan for r in first.records]


def test_resume_after_a_pass_returns_it_without_new_trials(tmp_path: Path) -> None:
    first, _, _ = run({"conv2": 0.05}, workspace=str(tmp_path))
    engine2 = FakeEngine({"conv2": 0.05})
    second, _, _ = run({}, engine=engine2, workspace=str(tmp_path))
    assert second.best.number == first.best.number and engine2.builds == [first.best.plan]
    assert second.best_model.plan == first.best.plan and second.n_trials == first.n_trials


def test_stale_running_trials_are_failed_on_resume(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    run(HOPELESS, max_trials=2, storage=storage)
    study = optuna.load_study(study_name="inc_flow", storage=storage)
    killed = study.ask()  # as if the process died mid-trial
    result, _, tracker = run(HOPELESS, max_trials=4, storage=storage)
    assert result.stale_trials == (killed.number,) == tracker.info.stale_trials
    states = [
        t.state.name for t in optuna.load_study(study_name="inc_flow", storage=storage).trials
    ]
    assert states[killed.number] == "FAIL" and "RUNNING" not in states
    assert result.n_trials == 4 and len(result.records) == 3


def test_study_of_other_ops_is_refused(tmp_path: Path) -> None:
    run(HOPELESS, max_trials=1, workspace=str(tmp_path))
    engine = FakeEngine(HOPELESS, ops=OPS[:3])
    with pytest.raises(ValueError, match="set another `study_name`"):
        run({}, engine=engine, workspace=str(tmp_path))


@pytest.mark.parametrize("strategy", ["tpe", "random"])
def test_same_seed_gives_the_same_trial_sequence(strategy: str) -> None:
    plans = [
        [r.plan for r in run(HOPELESS, strategy=strategy, max_trials=15)[0].records]
        for _ in range(2)
    ]
    assert plans[0] == plans[1]
    other = run(HOPELESS, strategy=strategy, max_trials=15, random_seed=7)[0]
    assert [r.plan for r in other.records] != plans[0]
    assert plans[0][0] == SearchSpace(OPS).default_plan()  # the one seed


def test_duplicate_plans_are_not_evaluated_again() -> None:
    tiny = SearchSpace(OPS[:3], act_algorithms=("minmax",), weight_granularities=("per_channel",))
    engine = FakeEngine(HOPELESS, ops=OPS[:3])
    result, _, _ = run({}, engine=engine, space=tiny, strategy="random", timeout=60, max_trials=20)
    dups = [r for r in result.records if r.state == "duplicate"]
    assert dups and result.n_duplicates == len(dups)
    fp32 = [r for r in result.records if r.failure_reason == ALL_FP32]
    assert len(fp32) <= 1  # the all-fp32 plan is never built; its repeats are duplicates
    built = len(result.records) - len(dups) - len(fp32)
    assert len(engine.builds) == len(set(engine.builds)) == built
    original = {r.number: r for r in result.records}[dups[0].duplicate_of]
    assert (dups[0].plan, dups[0].accuracy) == (original.plan, original.accuracy)


def test_exhaustive_covers_a_tiny_space_once() -> None:
    tiny = SearchSpace(OPS[:3], act_algorithms=("minmax",), weight_granularities=("per_channel",))
    engine = FakeEngine(HOPELESS, ops=OPS[:3])
    result, _, _ = run({}, engine=engine, space=tiny, strategy="exhaustive", max_trials=50)
    assert result.stop_reason == "space exhausted"
    assert {r.plan for r in result.records} == {tiny.plan_from_params(p) for p in _params(tiny)}
    assert result.n_duplicates == 0 and tiny.n_plans() == 8
    assert len(engine.builds) == 7  # all but the all-fp32 plan, which is the fp32 model
    (fp32,) = [r for r in result.records if not r.plan.int8_ops]
    assert fp32.state == "error" and fp32.failure_reason == ALL_FP32 and fp32.accuracy is None


def _params(space: SearchSpace) -> list[dict]:
    choices = space.choices()
    return [dict(zip(choices, c, strict=True)) for c in itertools.product(*choices.values())]


def test_multi_objective_keeps_the_pareto_front() -> None:
    damage = {"conv1": 0.002, "conv2": 0.05, "conv3": 0.003, "fc1": 0.004}
    result, _, _ = run(damage, strategy="multi_objective", max_trials=25)
    passed = [r for r in result.records if r.passed]
    front = {
        r.number
        for r in passed
        if not any(
            o.accuracy >= r.accuracy
            and o.latency_ms <= r.latency_ms
            and (o.accuracy, o.latency_ms) != (r.accuracy, r.latency_ms)
            for o in passed
        )
    }
    assert result.pareto and {r.number for r in result.pareto} == front
    assert result.n_trials == 25  # no early stop: a front needs a search
    assert result.best.latency_ms == min(r.latency_ms for r in result.pareto)


def test_objectives_accuracy_and_modelsize() -> None:
    damage = {"conv1": 0.002, "conv2": 0.05, "conv3": 0.003, "fc1": 0.004}
    acc, _, _ = run(damage, objective="accuracy", timeout=60, max_trials=12)
    assert acc.best.accuracy == max(r.accuracy for r in acc.records if r.passed)
    size, _, _ = run(damage, objective="modelsize", timeout=60, max_trials=12)
    assert size.best.model_size == min(r.model_size for r in size.records if r.passed)


def test_performance_only_runs_the_default_plan_once(caplog: pytest.LogCaptureFixture) -> None:
    engine = FakeEngine(HOPELESS)
    with caplog.at_level(logging.WARNING, logger="inc_flow"):
        result = tune(
            engine, None, FakeBenchmark(), TuneSettings(performance_only=True, storage=MEMORY)
        )
    assert result.n_trials == 1 and engine.builds == [SearchSpace(OPS).default_plan()]
    assert result.best.accuracy is None and not result.accuracy_checked
    assert "accuracy was not checked" in caplog.text


def test_int8_slower_than_fp32_is_flagged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="inc_flow"):
        result, _, _ = run({}, benchmark=FakeBenchmark(int8_cost=3.0))
    assert result.slower_than_fp32 and not result.faster_than_fp32 and result.speedup < 1
    assert any(w.startswith("fp32 is faster at batch 8") for w in result.warnings)
    assert "fp32 is faster at batch 8" in caplog.text


def test_logging_tracker_prints_progress_and_summary(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="inc_flow"):
        run({"conv2": 0.05}, strategy=INC, tracker=None, max_trials=20)
    assert "[trial 0 | 1/20] failed" in caplog.text and "[trial 2 | 3/20] passed" in caplog.text
    assert "tuning done (target met)" in caplog.text and "speed-up" in caplog.text


def test_bayesian_falls_back_to_tpe_without_its_dependencies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert isinstance(TuneSettings(strategy="bayesian").sampler()[0], optuna.samplers.GPSampler)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    sampler, note = TuneSettings(strategy="bayesian").sampler()
    assert isinstance(sampler, optuna.samplers.TPESampler) and "using TPE" in note


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"strategy": "mse"}, "strategy"),
        ({"objective": "footprint"}, "objective"),
        ({"relative": 0.01, "absolute": 0.01}, "exactly one"),
        ({"max_trials": 0}, "max_trials"),
        ({"backends": ("qnnpack",)}, "backends"),
    ],
)
def test_invalid_settings(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TuneSettings(**kwargs)


def test_evaluator_required_unless_performance_only() -> None:
    with pytest.raises(ValueError, match="evaluator"):
        tune(FakeEngine({}), None, FakeBenchmark(), TuneSettings(storage=MEMORY))


def test_sensitivity_failure_falls_back_to_graph_order() -> None:
    engine = FakeEngine({**HOPELESS, "fc2": 0.3})
    engine.sensitivity = lambda plan: 1 / 0  # type: ignore[method-assign]
    result, _, _ = run({}, strategy=INC, engine=engine, max_trials=8)
    singles = [r.plan.fp32_ops for r in result.records if r.phase == "single_op"]
    assert singles == [("conv1",), ("conv2",), ("conv3",)]
    assert any("sensitivity failed (ZeroDivisionError" in w for w in result.warnings)


def test_kl_observer_variant_can_be_the_answer() -> None:
    engine = FakeEngine({"conv2": 0.015}, kl_helps=True)
    result, _, _ = run({}, strategy=INC, engine=engine)
    assert result.best.phase == "observer" and result.best.plan.ops[0].act_algorithm == "kl"
    assert result.calibration_passes == 2  # one per observer setting


def test_fallbacks_share_one_calibration_per_observer_setting() -> None:
    result, engine, _ = run(HOPELESS, strategy=INC, max_trials=13)  # the 13 distinct seeds
    assert len(engine.builds) == 13 and result.calibration_passes == 2
    assert result.records[-1].calibration_passes == 2


def test_multi_objective_with_performance_only_is_single_objective() -> None:
    settings = TuneSettings(strategy="multi_objective", performance_only=True, storage=MEMORY)
    assert not settings.multi_objective and settings.directions() == ["minimize"]
    result = tune(FakeEngine({}), None, FakeBenchmark(), settings)
    assert result.n_trials == 1 and result.pareto == ()


def test_study_of_another_objective_is_refused(tmp_path: Path) -> None:
    run(HOPELESS, max_trials=1, workspace=str(tmp_path))
    with pytest.raises(ValueError, match="objective"):
        run(HOPELESS, max_trials=1, workspace=str(tmp_path), objective="modelsize")


@pytest.mark.slow
def test_bayesian_strategy_runs_gp_sampler() -> None:
    damage = {"conv1": 0.002, "conv2": 0.05, "conv3": 0.003, "fc1": 0.004}
    result, _, _ = run(damage, strategy="bayesian", timeout=60, max_trials=13)
    assert result.n_trials == 13 and result.best is not None
