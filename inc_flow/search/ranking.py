"""The seed plans ``tune`` tries before its sampler, by strategy.

``inc`` (and ``multi_objective``) walk INC's basic order: all-int8, the ``kl`` observer, each
op type in fp32, each single op in fp32 ranked by leave-one-out output error on a calibration
batch, then accumulated fallbacks (``SearchSpace.seeds``). The samplers (``tpe``, ``random``,
``exhaustive``, ``bayesian``) get all-int8 only.

``basic`` (the default) learns from all-int8's evaluation, which runs anyway. Through the
evaluator's ``probe`` (``search.ports.HasProbe``) it compares all-int8 with fp32 per sample and
keeps the samples where they disagree (or int8's top score ties) plus fp32's closest calls
(``search.probe.select``): tens of samples where the eval set has thousands. Every candidate
change is scored there by how many of those samples it gets right when the probe knows their
labels (a top-1 metric on labelled eval data), else by how many it brings back to fp32's
prediction (or, for outputs that are not class scores, how much output error it removes): each
single op in fp32, each global observer change, and each observer change of its own on the ops
whose fallback scored best (int8 speed kept; ``SearchSpace.op_observers``). When all-int8's top
scores tie often and the engine can keep a plan's output fp32 (``SearchSpace.fp32_outputs``),
two more: the ops after the last quantizable one kept fp32 (``output``), and the last op in
fp32 with its output not requantized (``last_op``): outputs off the int8 grid (such a trial's
phase is ``fp32_output``). Changes are then accumulated in rank order, a change kept only when
the probe says it helps; each accumulated plan is confirmed by a full evaluation with the
user's metric, so the verdict stays exact, and a change the full evaluation does not confirm is
dropped again. Once the candidates are spent, INC's order follows; it follows sooner when
``REFUTED_MAX`` full evaluations in a row refute the ranking (none of those plans beat the plan
they were added to): the ranking set does not predict what helps on the eval set, so its trials
are cut short, and INC's order runs under the phases ``cut:<phase>``. With an ``eval_func`` the
probe runs on calibration data, fp32's predictions as labels (``quant.samples``: read on until
it holds enough disagreements); the ``eval_func`` only confirms.

Each seed carries the samples its ranking ran (``rank_samples`` of its trial record).
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from inc_flow.search.plan import Plan
from inc_flow.search.ports import HasProbe
from inc_flow.search.probe import Probe, restrict, select
from inc_flow.search.records import TrialRecord, why
from inc_flow.search.runtimes import runtime_seeds
from inc_flow.vocab import Approach, Strategy, TrialState

Seed = tuple[str, Plan, int]  # (phase, plan, samples its ranking ran)
PER_OP_TOP = 2  # ops whose own observer changes are ranked: those whose fallback scored best
RERANK_MAX = 16  # after a confirmed step, the candidates scored again (best first): a bound
TIES_OFTEN = 0.01  # all-int8 ties at the top on more than this share: rank the last op so
KIND_ORDER = {"op_observer": 0, "observer": 1, "output": 2, "last_op": 3, "fallback": 4}
OUTPUT_KINDS = ("output", "last_op")  # a trial adding one of these has the phase FP32_OUTPUT
FP32_OUTPUT = "fp32_output"
REFUTED_MAX = 4  # full evaluations in a row that refute the ranking: its phase ends there
CUT = "cut:"  # the phase prefix of INC's order after the ranking was cut short


@dataclass(frozen=True)
class Change:
    """One candidate change of a plan, e.g. ``fc`` in fp32 or ``kl`` on ``conv1``."""

    kind: str  # a KIND_ORDER key
    label: str
    apply: Callable[[Plan], Plan]
    order: int = 0  # graph order, for ties


def seeds(t: Any) -> Iterator[Seed]:
    """The seeds of tuning state ``t`` (``search.loop._Tuning``) for its strategy; right after
    the default plan, the other runtimes' (``search.runtimes.runtime_seeds``)."""
    inner = _strategy_seeds(t)
    yield from itertools.islice(inner, 1)
    for phase, plan in runtime_seeds(t.space):
        yield phase, plan, 0
    yield from inner


def _strategy_seeds(t: Any) -> Iterator[Seed]:
    s, space = t.settings, t.space
    if s.strategy == Strategy.BASIC and t.checked:
        yield from _ranked(t)
    elif s.strategy in (Strategy.INC, Strategy.MULTI_OBJECTIVE) and t.checked:
        yield from inc_order(t)
    else:
        yield "default", space.default_plan(), 0


def inc_order(t: Any) -> Iterator[Seed]:
    for phase, plan in t.space.seeds(lambda: sensitivity(t), basic=True):
        yield phase, plan, 0


def sensitivity(t: Any) -> Mapping[str, float]:
    """The engine's leave-one-out scores of all-int8's ops, stored in the study once."""
    from inc_flow.search import storage as st

    scores = st.stored_sensitivity(t.study)
    if scores is None:
        logging.getLogger("inc_flow").info("sensitivity: each op's output error in fp32")
        try:
            raw = t.engine.sensitivity(t.space.default_plan())
        except Exception as e:  # noqa: BLE001 -- the seeds can do without an order
            t._warn(f"sensitivity failed ({type(e).__name__}: {e}); using graph order")
            return {}
        scores = {k: float(v) for k, v in raw.items() if not math.isnan(float(v))}
        st.set_sensitivity(t.study, scores)
    return scores


def _ranked(t: Any) -> Iterator[Seed]:
    default = t.space.default_plan()
    yield "default", default, 0
    record = t.history.evaluated.get(default)
    reason, ranker = None, Ranker(t)
    if not isinstance(t.evaluator, HasProbe):
        reason = "the evaluator gives no per-sample outputs"
    elif record is None or record.accuracy is None:
        reason = "all-int8 has no accuracy"
    else:
        logging.getLogger("inc_flow").info("ranking: changes probed where int8 differs")
        try:
            ranked = ranker.rank(default)
        except Exception as e:  # noqa: BLE001 -- INC's order needs no probe
            reason = why(e)
    prefix = ""
    if reason is not None:
        t._warn(f"no ranking ({reason}); trying plans in INC's order")
    else:
        refuted = yield from ranker.confirm(default, record, ranked)
        if refuted:
            prefix = CUT
            t._warn(
                f"ranking cut short: {len(refuted)} full evaluations in a row (trials "
                f"{', '.join(map(str, refuted))}) did not confirm its predictions; trying "
                f"plans in INC's order (phases {CUT}<phase>)"
            )
    for phase, plan, cost in inc_order(t):
        yield prefix + phase, plan, cost


class Ranker:
    """Probes plans on the selected samples of tuning state ``t``; counts the samples run."""

    def __init__(self, t: Any) -> None:
        self.t, self.space = t, t.space
        self.cost = 0
        self.indices: tuple[int, ...] = ()
        self.scores: dict[Plan, float] = {}
        self.candidates: list[Change] = []

    def _probe(self, plan: Plan, indices: tuple[int, ...] | None) -> Probe:
        probe = self.t.evaluator.probe(self.t.model_of(plan), self.t.engine.fp32_model, indices)
        self.cost += probe.cost
        return probe

    def score(self, plan: Plan) -> float:
        if plan not in self.scores:
            self.scores[plan] = self._probe(plan, self.indices).score()
        return self.scores[plan]

    def spent(self) -> int:
        cost, self.cost = self.cost, 0
        return cost

    def rank(self, default: Plan) -> list[tuple[float, Change]]:
        """The changes that beat all-int8 on the selected samples, best first."""
        full = self._probe(default, None)
        self.indices = select(full)
        self.scores[default] = base = restrict(full, self.indices).score()
        space = self.space
        tunable = [n for n in space.tunable_ops() if "fp32" in space.allowed_dtypes[n]]
        ties = full.tie_rate() > TIES_OFTEN
        changes = [
            Change(
                "fallback",
                f"{name} fp32",
                lambda p, n=name: space.canonical(p.with_fallback({n})),
                i,
            )
            for i, name in enumerate(tunable)
        ]
        if ties and space.fp32_outputs:
            changes += _output_changes(space, tunable)
        scored = self._scored(default, changes)
        for field_, value in _global_alternatives(space, default):
            change = Change("observer", f"{field_}={value}", _set_global(space, field_, value), -1)
            scored += self._scored(default, [change])
        fallbacks = sorted((c for c in scored if c[1].kind == "fallback"), key=_key)
        for _, change in fallbacks[:PER_OP_TOP]:
            name = tunable[change.order]
            for field_, value in space.op_variants(default.op(name)):
                apply = _set_op(space, name, field_, value)
                own = Change("op_observer", f"{name} {value}", apply, change.order)
                scored += self._scored(default, [own])
        ranked = sorted((c for c in scored if c[0] > base), key=_key)
        self.candidates = [change for _, change in ranked]  # what ``rerank`` scores again
        return ranked

    def _scored(self, default: Plan, changes: list[Change]) -> list[tuple[float, Change]]:
        out = []
        for change in changes:
            try:
                plan = change.apply(default)
                if plan.int8_ops and plan != default:
                    out.append((self.score(plan), change))
            except Exception as e:  # noqa: BLE001 -- a plan that cannot be built is no candidate
                self.t._warn(f"ranking skipped {change.label}: {why(e)}")
        return out

    def confirm(
        self, default: Plan, record: TrialRecord, ranked: list[tuple[float, Change]]
    ) -> Generator[Seed, None, list[int]]:
        """Accumulate ``ranked`` in order; yield each plan the probe says improves. After a
        plan the full evaluation confirms, the rest is ranked again on its samples. Returns
        the trials of ``REFUTED_MAX`` refuted predictions in a row if it stopped for them,
        else []."""
        hib = self.t.settings.higher_is_better
        plan, current, score = default, record, self.scores[default]
        todo = [change for _, change in ranked]
        refuted: list[int] = []
        while todo:
            change = todo.pop(0)
            try:
                candidate = change.apply(plan)
                new = self.score(candidate)
            except Exception as e:  # noqa: BLE001 -- e.g. observer settings that do not fit
                self.t._warn(f"ranking skipped {change.label}: {why(e)}")
                continue
            if candidate == plan or not candidate.int8_ops or new <= score:
                continue
            phase = "ranked" if plan == default else "accumulated"
            phase = FP32_OUTPUT if change.kind in OUTPUT_KINDS else phase
            yield phase, candidate, self.spent()
            result = self.t.history.evaluated.get(candidate)
            if result is not None and _better(result, current, hib):
                plan, current, refuted = candidate, result, []
                score, todo = self.rerank(plan, self.candidates)
            elif result is not None and result.accuracy is not None:
                refuted += [result.number] if result.number not in refuted else []
                if len(refuted) >= REFUTED_MAX:
                    return refuted
        return []

    def rerank(self, plan: Plan, changes: list[Change]) -> tuple[float, list[Change]]:
        """``plan``'s score on the samples where it disagrees with fp32 (and fp32's closest
        calls), and the ``changes`` that beat it there, best first: the first ``RERANK_MAX``
        of those not yet evaluated (one probe of ``plan`` over every sample, its evaluation's
        recorded outputs where there are some, then one probe of each on the new samples)."""
        full = self._probe(plan, None)
        self.indices = select(full)
        self.scores = {plan: restrict(full, self.indices).score()}
        base = self.scores[plan]
        done = self.t.history.evaluated
        fresh = [c for c in changes if _applies(c, plan) not in {plan, *done}][:RERANK_MAX]
        ranked = sorted((x for x in self._scored(plan, fresh) if x[0] > base), key=_key)
        return base, [change for _, change in ranked]


def _applies(change: Change, plan: Plan) -> Plan | None:
    try:
        return change.apply(plan)
    except Exception:  # noqa: BLE001 -- _scored warns about it
        return None


def _key(item: tuple[float, Change]) -> tuple[float, int, int]:
    return (-item[0], KIND_ORDER[item[1].kind], item[1].order)


def _better(new: TrialRecord, old: TrialRecord, hib: bool) -> bool:
    """Whether evaluation confirmed ``new`` over ``old``. Exact early rejection stops at a
    sample count: a plan rejected later is better, and two rejected at the same count are
    compared on the same samples."""
    if new.accuracy is None or new.state == TrialState.ERROR:
        return False
    if old.accuracy is None or old.state == TrialState.ERROR:
        return True
    stopped = (new.state == TrialState.PRUNED, old.state == TrialState.PRUNED)
    if stopped == (False, True):
        return True
    if stopped == (True, False):
        return False
    if stopped == (True, True) and new.eval_samples != old.eval_samples:
        return new.eval_samples > old.eval_samples
    return new.accuracy > old.accuracy if hib else new.accuracy < old.accuracy


def _global_alternatives(space: Any, plan: Plan) -> list[tuple[str, str]]:
    """The other values of the searched global observer fields."""
    first = plan.op(plan.int8_ops[0]) if plan.int8_ops else None
    if first is None:
        return []
    fields = [("weight_granularity", space.weight_granularities)]
    if space.approach != Approach.DYNAMIC:
        fields.insert(0, ("act_algorithm", space.act_algorithms))
    return [(f, v) for f, values in fields for v in values if getattr(first, f) != v]


def _set_global(space: Any, field_: str, value: str) -> Callable[[Plan], Plan]:
    def apply(plan: Plan) -> Plan:
        ops = tuple(replace(op, **{field_: value}) for op in plan.ops)
        return space.canonical(replace(plan, ops=ops))

    return apply


def _output_changes(space: Any, tunable: list[str]) -> list[Change]:
    """The output kept fp32; and the last tunable op in fp32 with it (see the module doc)."""

    def output(plan: Plan) -> Plan:
        return space.canonical(replace(plan, fp32_output=True))

    out = [Change("output", "output fp32", output, len(tunable))]
    if tunable:
        last = tunable[-1]
        apply = lambda p: output(p.with_fallback({last}))  # noqa: E731
        out.append(Change("last_op", f"{last} fp32, output fp32", apply, len(tunable) - 1))
    return out


def _set_op(space: Any, name: str, field_: str, value: str) -> Callable[[Plan], Plan]:
    def apply(plan: Plan) -> Plan:
        if not plan.op(name).quantized:
            return plan
        return space.with_op_setting(plan, name, field_, value)

    return apply
