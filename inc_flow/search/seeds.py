"""INC's basic order of seed plans, as methods of :class:`inc_flow.search.space.SearchSpace`
(a mixin: the space's parameters and canonical form come from there).

No torch, no optuna. ``strategy: inc`` walks ``seeds``: all-int8, the ``kl`` observer, op
types in fp32, single ops in fp32 (most sensitive first), accumulated fallbacks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from inc_flow.search.plan import Plan

SEED_PHASES = ("default", "observer", "op_type", "single_op", "accumulated")


class IncOrder:
    """The seed plans of INC's order; mixed into ``SearchSpace``."""

    ops: tuple[tuple[str, str], ...]
    act_algorithms: tuple[str, ...]
    choices: Any
    default_plan: Any
    params_for: Any
    plan_from_params: Any
    tunable_ops: Any
    canonical: Any

    def observer_variants(self) -> list[Plan]:
        """The default plan with the other activation observer (``kl`` when allowed)."""
        if "act_algorithm" not in self.choices():
            return []
        others = [a for a in self.act_algorithms[1:]]
        alt = "kl" if "kl" in others else others[0]
        return [
            self.plan_from_params({**self.params_for(self.default_plan()), "act_algorithm": alt})
        ]

    def op_type_fallbacks(self) -> list[Plan]:
        """Per op type (first-appearance order): the default plan with that type in fp32.

        A type holding more than half of the tunable ops is skipped: such a plan is mostly
        fp32 and rarely faster than fp32 itself, yet with ``timeout: 0`` its pass would end
        the search (ResNet18: 20 Conv2d of 21 ops). Single-op fallbacks cover those ops."""
        tunable = set(self.tunable_ops())
        types = list(dict.fromkeys(t for n, t in self.ops if n in tunable))
        plans = []
        for op_type in types:
            names = {n for n, t in self.ops if t == op_type and n in tunable}
            if 2 * len(names) > len(tunable):
                continue
            plans.append(self._fallback(names))
        return [p for p in plans if p.int8_ops]

    def rank_by_sensitivity(self, scores: Mapping[str, float]) -> list[str]:
        """Tunable ops, most sensitive first; ties and unscored ops keep graph order."""
        order = {n: i for i, n in enumerate(self.tunable_ops())}

        def key(name: str) -> tuple[float, int]:
            score = scores.get(name)
            if score is None or math.isnan(score):
                return (math.inf, order[name])
            return (-float(score), order[name])

        return sorted(order, key=key)

    def single_op_fallbacks(self, scores: Mapping[str, float]) -> list[Plan]:
        """The default plan with one op in fp32, most sensitive op first."""
        plans = [self._fallback({n}) for n in self.rank_by_sensitivity(scores)]
        return [p for p in plans if p.int8_ops]

    def accumulated_fallbacks(self, scores: Mapping[str, float]) -> list[Plan]:
        """The default plan with the top-1, top-2, ... most sensitive ops in fp32."""
        ranked = self.rank_by_sensitivity(scores)
        plans = [self._fallback(set(ranked[:k])) for k in range(1, len(ranked) + 1)]
        return [p for p in plans if p.int8_ops]

    def seeds(
        self, sensitivity: Callable[[], Mapping[str, float]], *, basic: bool = True
    ) -> Iterator[tuple[str, Plan]]:
        """Seed plans as (phase, plan), in order. ``sensitivity`` is called only when the
        single-op phase is reached. ``basic=False`` yields the default plan only."""
        yield "default", self.default_plan()
        if not basic:
            return
        for plan in self.observer_variants():
            yield "observer", plan
        for plan in self.op_type_fallbacks():
            yield "op_type", plan
        scores = sensitivity()
        for plan in self.single_op_fallbacks(scores):
            yield "single_op", plan
        for plan in self.accumulated_fallbacks(scores):
            yield "accumulated", plan

    def _fallback(self, names: set[str]) -> Plan:
        return self.canonical(self.default_plan().with_fallback(names))
