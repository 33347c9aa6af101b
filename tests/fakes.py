"""Fakes of the tuner's collaborators (no torch): an engine whose int8 ops each cost a fixed
accuracy, its evaluator and benchmark (with a side-by-side round that records its call
order), a tracker that keeps what it receives, and ``run``, one study with them. Shared by
tests/test_tuner.py, tests/test_speed.py and tests/test_workers.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from inc_flow.search.loop import tune
from inc_flow.search.plan import Plan
from inc_flow.search.probe import Probe
from inc_flow.search.records import EvalOutcome, StudyInfo, TrialRecord, TuneResult
from inc_flow.search.settings import TuneSettings
from inc_flow.search.speed import Candidate, interleave

OPS = [
    ("conv1", "Conv2d"),
    ("conv2", "Conv2d"),
    ("conv3", "Conv2d"),
    ("fc1", "Linear"),
    ("fc2", "Linear"),
    ("add1", "add"),
]
MEMORY = ":memory:"


@dataclass
class FakeModel:
    plan: Plan | None  # None: the fp32 model


class FakeEngine:
    """Each int8 op costs a fixed accuracy ``damage``; kl observers halve it when ``kl_helps``;
    ``fixes[op] = (field, value)``: that op costs nothing when its own observer setting has it.

    Per sample (``broken``), op k's damage is a block of ``damage * total`` samples, the blocks
    side by side in op order: the samples that op gets wrong while it is int8."""

    def __init__(
        self,
        damage: dict[str, float],
        fail: Callable[[Plan], bool] | None = None,
        ops: list[tuple[str, str]] = OPS,
        kl_helps: bool = False,
        fixes: dict[str, tuple[str, str]] | None = None,
    ) -> None:
        self.damage, self.fail, self._ops, self.kl_helps = damage, fail, list(ops), kl_helps
        self.fixes = fixes or {}
        self.fp32_model = FakeModel(None)
        self.calibration_passes = 0
        self.builds: list[Plan] = []
        self.sensitivity_after: list[int] = []
        self._calibrated: set = set()

    def ops(self) -> list[tuple[str, str]]:
        return list(self._ops)

    def build(self, plan: Plan) -> FakeModel:
        self.builds.append(plan)
        if self.fail is not None and self.fail(plan):
            raise RuntimeError("convert failed for this plan")
        if plan.calibration_key() not in self._calibrated:
            self._calibrated.add(plan.calibration_key())
            self.calibration_passes += 1
        return FakeModel(plan)

    def sensitivity(self, plan: Plan) -> dict[str, float]:
        self.sensitivity_after.append(len(self.builds))
        return {n: self.damage.get(n, 0.0) for n in plan.int8_ops}

    def model_size(self, model: FakeModel) -> int:
        plan = model.plan
        return sum(1000 if plan and plan.op(n).quantized else 4000 for n, _ in self._ops)

    def op_counts(self, model: FakeModel, plan: Plan) -> tuple[int, int]:
        return len(plan.int8_ops), len(plan.fp32_ops)

    def _scale(self, plan: Plan) -> float:
        return 0.5 if self.kl_helps and plan.ops[0].act_algorithm == "kl" else 1.0

    def _hurts(self, plan: Plan) -> list[str]:
        def fixed(name: str) -> bool:
            fix = self.fixes.get(name)
            return fix is not None and getattr(plan.op(name), fix[0]) == fix[1]

        return [n for n in plan.int8_ops if not fixed(n)]

    def accuracy(self, plan: Plan | None, base: float) -> float:
        if plan is None:
            return base
        return base - self._scale(plan) * sum(self.damage.get(n, 0.0) for n in self._hurts(plan))

    def broken(self, plan: Plan | None, total: int) -> set[int]:
        """The samples ``plan`` gets wrong (see the class doc)."""
        if plan is None:
            return set()
        out, start, hurts = set(), 0, set(self._hurts(plan))
        for name, _ in self._ops:
            n = round(self.damage.get(name, 0.0) * total)
            if name in hurts:
                out |= set(range(start, start + round(n * self._scale(plan))))
            start += n
        return out


@dataclass
class FakeEvaluator:
    engine: FakeEngine
    base: float = 0.9
    total: int = 1000
    early_stop: bool = False
    nan_for: str | None = None  # op name: NaN accuracy when it is fp32
    calls: list = field(default_factory=list)
    probes: list = field(default_factory=list)  # (plan, samples) of every probe

    def probe(self, model: FakeModel, reference: FakeModel, indices) -> Probe:
        """fp32 predicts class ``i % 10`` for sample i; a broken sample gets the next class."""
        recorded = indices is None and self.calls and self.calls[-1] == model.plan
        indices = tuple(range(self.total)) if indices is None else tuple(indices)
        self.probes.append((model.plan, len(indices)))
        broken = self.engine.broken(model.plan, self.total)
        return Probe(
            indices=indices,
            preds=tuple((i + (i in broken)) % 10 for i in indices),
            ref_preds=tuple(i % 10 for i in indices),
            tied=(False,) * len(indices),
            ref_margins=tuple(((i * 37) % 101) / 100 + 0.01 for i in indices),
            errors=tuple(float(i in broken) for i in indices),
            cost=0 if recorded else len(indices),
        )

    def evaluate(self, model: FakeModel, threshold: float | None) -> EvalOutcome:
        self.calls.append(model.plan)
        if model.plan is not None and self.nan_for in model.plan.fp32_ops:
            return EvalOutcome(float("nan"), self.total, self.total)
        acc = self.engine.accuracy(model.plan, self.base)
        if self.early_stop and threshold is not None and acc < threshold:
            return EvalOutcome(acc, self.total // 4, self.total, stopped_early=True)
        return EvalOutcome(acc, self.total, self.total)


class FakeBenchmark:
    """int8 op 1 ms, fp32 op 2 ms, each fp32<->int8 boundary (model ends are fp32) 0.3 ms.

    The side-by-side round is the real ``search.speed.interleave`` over ``rounds`` rounds; each
    timing is ``in_round(model, batch)`` (default: ``latency(model)`` at every batch), and
    ``calls`` records the candidates' names in the order they were timed.
    """

    def __init__(
        self,
        int8_cost: float = 1.0,
        in_round: Callable[[FakeModel, int], float] | None = None,
        batch_size: int = 8,
        rounds: int = 3,
    ) -> None:
        self.int8_cost = int8_cost
        self.in_round = in_round
        self.batch_size = batch_size
        self.rounds = rounds
        self.calls: list[str] = []
        self.candidates: list[Candidate] = []

    def side_by_side(self, candidates: Sequence[Candidate]) -> dict[str, dict[int, list[float]]]:
        self.candidates = list(candidates)

        def time_one(candidate: Candidate) -> dict[int, float]:
            self.calls.append(candidate.name)
            if self.in_round is None:
                return dict.fromkeys((1, self.batch_size), self.latency(candidate.model))
            return {b: self.in_round(candidate.model, b) for b in (1, self.batch_size)}

        return interleave(candidates, self.rounds, time_one)

    def latency(self, model: FakeModel) -> float:
        if model.plan is None:
            return 2.0 * len(OPS)
        dtypes = ["fp32"] + [op.dtype for op in model.plan.ops] + ["fp32"]
        cost = sum(self.int8_cost if d == "int8" else 2.0 for d in dtypes[1:-1])
        return cost + 0.3 * sum(a != b for a, b in zip(dtypes, dtypes[1:], strict=False))


class ListTracker:
    def __init__(self) -> None:
        self.info: StudyInfo | None = None
        self.records: list[TrialRecord] = []
        self.result: TuneResult | None = None

    def study_started(self, info: StudyInfo) -> None:
        self.info = info

    def trial_finished(self, record: TrialRecord) -> None:
        self.records.append(record)

    def study_finished(self, result: TuneResult) -> None:
        self.result = result


def run(
    damage: dict[str, float],
    engine: FakeEngine | None = None,
    evaluator: FakeEvaluator | None = None,
    **kw: object,
) -> tuple[TuneResult, FakeEngine, ListTracker]:
    engine = engine or FakeEngine(damage)
    evaluator = evaluator or FakeEvaluator(engine)
    if "workspace" not in kw:
        kw.setdefault("storage", MEMORY)
    tracker = kw.pop("tracker", ListTracker())
    space = kw.pop("space", None)
    bench = kw.pop("benchmark", FakeBenchmark())
    rivals = kw.pop("rivals", None)
    settings = TuneSettings(**kw)
    result = tune(engine, evaluator, bench, settings, space=space, tracker=tracker, rivals=rivals)
    return result, engine, tracker
