"""The side-by-side round after the search and the speed verdict, with fake timings (no torch,
no timed assertion): the interleaving order, the choice of plan, the never-slower rule."""

from __future__ import annotations

import logging
import statistics

import pytest

from inc_flow.errors import StudyError
from inc_flow.publish import alias_terms
from inc_flow.record import keys
from inc_flow.record.values import result_metrics, result_tags
from inc_flow.search.settings import TuneSettings
from inc_flow.search.speed import CHAMPION, FP32, Candidate, Spread, judge, orders
from tests.fakes import FakeBenchmark, FakeModel, run

pytestmark = pytest.mark.no_mlflow

# Several plans pass: conv2 must stay fp32, the other ops cost little.
SEVERAL_PASS = {"conv1": 0.002, "conv2": 0.05, "conv3": 0.003, "fc1": 0.004}
SEARCH = {"timeout": 60, "max_trials": 12}


def _trial_ms(result) -> dict[str, float]:
    return {f"trial {r.number}": r.latency_ms for r in result.records if r.passed}


def test_orders_reverse_every_round() -> None:
    assert orders(["fp32", "a", "b"], 3) == [["fp32", "a", "b"], ["b", "a", "fp32"]] + [
        ["fp32", "a", "b"]
    ]


def test_the_round_interleaves_and_reverses_the_order_each_round() -> None:
    bench = FakeBenchmark(rounds=4)
    result, _, _ = run(SEVERAL_PASS, benchmark=bench, finalists=3, **SEARCH)
    names = [c.name for c in bench.candidates]
    assert names[0] == "fp32" and len(names) == 4  # fp32 and the 3 finalists
    assert bench.calls == [n for order in orders(names, 4) for n in order]
    assert bench.calls[:4] == names and bench.calls[4:8] == names[::-1]
    # the finalists are the 3 best passing plans by their trials' latency, best first
    ranked = sorted(_trial_ms(result).items(), key=lambda kv: (kv[1], int(kv[0][6:])))
    assert names[1:] == [name for name, _ in ranked[:3]]
    assert result.speed is not None and result.speed.rounds == 4
    assert result.speed.finalists == tuple(names[1:])


def test_the_plan_fastest_in_the_round_is_chosen_not_the_fastest_in_its_trial() -> None:
    first, _, _ = run(SEVERAL_PASS, **SEARCH)
    ranked = sorted(_trial_ms(first).items(), key=lambda kv: (kv[1], int(kv[0][6:])))
    (a, a_ms), (b, b_ms) = ranked[:2]
    assert a_ms < b_ms  # A looked faster in its trial
    b_plan = next(r.plan for r in first.records if f"trial {r.number}" == b)

    def in_round(model: FakeModel, batch: int) -> float:
        if model.plan is None:
            return 20.0
        return 1.0 if model.plan == b_plan else 5.0  # B is the fastest side by side

    result, _, _ = run(SEVERAL_PASS, benchmark=FakeBenchmark(in_round=in_round), **SEARCH)
    assert f"trial {result.best.number}" == b == result.speed.chosen
    assert result.best_model.plan == b_plan
    assert result.latency_ms == 1.0 and result.speedup == 20.0
    assert result.faster_than_fp32 and not result.slower_than_fp32
    assert result.verdict.startswith(f"int8 ({b}) is faster than fp32 at batch 8")


def test_int8_slower_than_fp32_is_never_champion(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="inc_flow"):
        result, _, _ = run({}, benchmark=FakeBenchmark(int8_cost=3.0))
    assert result.best is not None  # the model is there, and may be saved and registered
    assert not result.faster_than_fp32 and result.slower_than_fp32
    assert result.verdict.startswith("fp32 is faster at batch 8: int8 (trial 0)")
    assert result.speedup < 1 and result.verdict in result.warnings
    assert "fp32 is faster at batch 8" in caplog.text
    # what publish passes to registration: no champion, the verdict as the reason
    terms = alias_terms(result)
    assert terms["champion_allowed"] is False and terms["veto_reason"] == result.verdict
    # on the parent run
    tags = result_tags(result)
    assert tags[keys.TAG_FASTER_THAN_FP32] == "False"
    assert tags[keys.TAG_SPEED_VERDICT].startswith("fp32 is faster at batch 8")
    assert result_metrics(result)[keys.METRIC_SPEEDUP] == pytest.approx(12.0 / 18.6)


def test_faster_only_at_the_objective_batch_warns_about_batch_1(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def in_round(model: FakeModel, batch: int) -> float:
        if model.plan is None:
            return 0.2 if batch == 1 else 4.0
        return 0.3 if batch == 1 else 1.0

    with caplog.at_level(logging.INFO, logger="inc_flow"):
        result, _, _ = run({"conv2": 0.05}, benchmark=FakeBenchmark(in_round=in_round))
    speed = result.speed
    assert result.faster_than_fp32 and speed.slower_at_b1
    assert alias_terms(result)["champion_allowed"] is True
    assert speed.speedup[8].median == 4.0 and speed.speedup[1].median == pytest.approx(2 / 3)
    note = f"int8 (trial {result.best.number}) is slower than fp32 at batch 1"
    assert any(w.startswith(note) for w in result.warnings) and note in caplog.text
    assert result_tags(result)[keys.TAG_SLOWER_AT_B1] == "True"
    metrics = result_metrics(result)
    assert metrics[keys.METRIC_SPEEDUP_B1] == pytest.approx(2 / 3)
    assert metrics[keys.METRIC_ROUND_FP32_LATENCY_MS] == 4.0
    assert "speed-up 4.00x (4.00-4.00)" in caplog.text  # the summary line, from the round


def _samples(fp32: list[float], int8: list[float]) -> dict:
    return {"fp32": {1: fp32, 8: fp32}, "trial 0": {1: int8, 8: int8}}


CANDIDATES = [Candidate("fp32", None, FP32), Candidate("trial 0", None, trial=0)]


@pytest.mark.parametrize(
    ("fp32", "int8", "faster", "start"),
    [
        ([4.0, 4.2, 4.1], [2.0, 2.1, 3.9], True, "int8 (trial 0) is faster than fp32"),
        # the machine got busier in round 2: the ranges overlap, each round still says faster
        ([4.0, 8.0, 4.1], [2.0, 6.0, 2.1], True, "int8 (trial 0) is faster than fp32"),
        # medians 4.1 vs 2.1, but in round 3 int8 (4.3) was slower than fp32 (4.1)
        ([4.0, 4.2, 4.1], [2.0, 2.1, 4.3], False, "int8 (trial 0) is not faster than fp32 in "
         "enough rounds at batch 8"),
        ([4.0, 4.2, 4.1], [4.1, 4.2, 4.3], False, "fp32 is faster at batch 8"),
        # 5 rounds: one load spike on the int8 side of round 4 does not decide
        ([4.0, 4.2, 4.1, 4.0, 4.1], [2.0, 2.1, 2.0, 9.0, 2.1], True, "int8 (trial 0) is faster"),
        # 5 rounds, two lost: not enough
        ([4.0, 4.2, 4.1, 4.0, 4.1], [2.0, 9.1, 2.0, 9.0, 2.1], False, "int8 (trial 0) is not "
         "faster than fp32 in enough rounds"),
    ],
)  # fmt: skip
def test_faster_means_faster_in_every_round_but_one_spike(fp32, int8, faster, start) -> None:
    verdict = judge(_samples(fp32, int8), CANDIDATES, batch=8)
    assert verdict.faster_than_fp32 is faster and verdict.text.startswith(start)
    assert verdict.latency_of("trial 0") == Spread.of(int8)
    ratios = sorted(f / i for f, i in zip(fp32, int8, strict=True))
    assert verdict.speedup[8] == Spread(statistics.median(ratios), ratios[0], ratios[-1])


def test_other_objectives_keep_their_choice_and_get_a_verdict() -> None:
    def in_round(model: FakeModel, batch: int) -> float:
        return 20.0 if model.plan is None else 30.0 - len(model.plan.int8_ops)

    bench = FakeBenchmark(in_round=in_round)
    result, _, _ = run(SEVERAL_PASS, benchmark=bench, objective="accuracy", **SEARCH)
    assert result.best.accuracy == max(r.accuracy for r in result.records if r.passed)
    assert result.speed.chosen == bench.candidates[1].name  # the most accurate finalist
    assert not result.faster_than_fp32 and result.verdict.startswith("fp32 is faster")


def test_the_champion_is_timed_in_the_round() -> None:
    champion = FakeModel(None)

    def in_round(model: FakeModel, batch: int) -> float:
        return 2.0 if model is champion else (12.0 if model.plan is None else 4.0)

    bench = FakeBenchmark(in_round=in_round)
    rival = Candidate("champion v3", champion, CHAMPION, "x86")
    result, _, _ = run({"conv2": 0.05}, benchmark=bench, rivals=lambda: [rival])
    assert bench.candidates[-1] == rival and bench.calls.count("champion v3") == bench.rounds
    speed = result.speed
    assert result.faster_than_fp32 and speed.beats_champion is False
    assert "is not faster in enough rounds than the champion v3" in speed.champion_text
    terms = alias_terms(result)
    assert terms["champion_allowed"] is True and terms["beats_champion"] is False
    assert terms["champion_reason"] == speed.champion_text


def test_a_champion_that_cannot_be_loaded_leaves_the_round_to_the_others() -> None:
    def broken() -> list:
        raise OSError("registry unreachable")

    result, _, _ = run({"conv2": 0.05}, rivals=broken)
    assert result.speed is not None and result.speed.beats_champion is None
    assert any("champion is not in the side-by-side round: OSError" in w for w in result.warnings)


def test_no_round_without_one_falls_back_to_the_trials_readings() -> None:
    result, _, _ = run({"conv2": 0.05}, final_round=False)  # a worker
    assert result.speed is None and result.faster_than_fp32
    assert "single readings" in result.verdict and result.speedup == 12.0 / result.latency_ms


@pytest.mark.parametrize("value", [0, -1, 2.5, True, "3"])
def test_finalists_must_be_a_positive_int(value) -> None:
    with pytest.raises(StudyError) as info:
        TuneSettings(finalists=value)
    assert str(info.value) == f"`finalists` must be an int >= 1, got finalists={value!r}"


def test_one_finalist_times_only_the_best_plan() -> None:
    bench = FakeBenchmark()
    result, _, _ = run(SEVERAL_PASS, benchmark=bench, finalists=1, **SEARCH)
    assert [c.name for c in bench.candidates] == ["fp32", f"trial {result.best.number}"]
