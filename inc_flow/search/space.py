"""The search space: Optuna parameters <-> Plan, and the enqueued seed plans.

No torch, no optuna import: ``suggest`` only calls ``trial.suggest_categorical``.

Parameters (each only when it has more than one choice):

* ``backend``, ``act_algorithm``, ``act_scheme`` (static PTQ and QAT only: dynamic PTQ has
  no activation observer), ``weight_granularity`` -- global, shared by every int8 op;
* ``op:<name>`` -- ``int8`` or ``fp32`` for each op whose dtype is not fixed; with
  ``op_observers`` also ``int8:<value>``: int8 with one observer setting of its own (``kl``,
  ``per_tensor``...) where the global setting has another (the default strategy's per-op
  observer changes).

Plans are canonical: fp32 ops carry the plan's global observer settings (so every fallback
set of one observer setting shares one ``Plan.calibration_key()``; with ``op_observers``
the global setting is the one most int8 ops share), and a plan without any int8 op carries
the default settings (an all-fp32 model is the same whatever its observers).
Equal canonical plans are the same trial; the tuner never evaluates one twice.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from inc_flow.errors import PlanError
from inc_flow.search.plan import (
    ACT_ALGORITHMS,
    APPROACHES,
    BACKENDS,
    DTYPES,
    FRAMEWORKS,
    GRANULARITIES,
    SCHEMES,
    OpPlan,
    Plan,
)
from inc_flow.vocab import Approach, Backend, Framework

DYNAMIC = Approach.DYNAMIC
OP_PREFIX = "op:"
SEED_PHASES = ("default", "observer", "op_type", "single_op", "accumulated")


class TrialLike(Protocol):
    """What ``suggest`` needs from an Optuna trial."""

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...


def _choices(name: str, values: Sequence[str], allowed: tuple[str, ...]) -> tuple[str, ...]:
    values = tuple(dict.fromkeys(values))
    if not values:
        raise PlanError(f"`{name}` must not be empty, got {name}={values!r}")
    bad = [v for v in values if v not in allowed]
    if bad:
        raise PlanError(f"`{name}` values must be in {list(allowed)}, got {name}={list(values)}")
    return values


@dataclass(frozen=True)
class SearchSpace:
    """Per-op dtype choices and global observer/backend choices of one model.

    Args:
        ops: quantizable ops as (name, op_type), in graph order.
        allowed_dtypes: op name -> allowed dtypes; missing ops get ``("int8", "fp32")``.
            A single dtype fixes the op (no Optuna parameter).
        act_algorithms: activation observers; the first is the default.
        weight_granularities: weight granularities; the first is the default.
        act_schemes: activation schemes; the first is the default.
        backends: quantized engines; the first is the default.
        approach: one of ``plan.APPROACHES``.
        framework: ``pytorch_fx`` or ``pytorch``.
        op_observers: int8 ops may differ from the global observer setting in one field.
    """

    ops: tuple[tuple[str, str], ...]
    allowed_dtypes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    act_algorithms: tuple[str, ...] = ("minmax", "kl")
    weight_granularities: tuple[str, ...] = ("per_channel", "per_tensor")
    act_schemes: tuple[str, ...] = ("asym",)
    backends: tuple[str, ...] = (Backend.X86.value,)
    approach: str = Approach.STATIC.value
    framework: str = Framework.FX.value
    op_observers: bool = False

    def __post_init__(self) -> None:
        ops = tuple((str(n), str(t)) for n, t in self.ops)
        names = [n for n, _ in ops]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise PlanError(f"`ops` must have unique names, got duplicates {dup}")
        unknown = sorted(set(self.allowed_dtypes) - set(names))
        if unknown:
            raise PlanError(f"`allowed_dtypes` names unknown ops {unknown}")
        if self.approach not in APPROACHES:
            raise PlanError(f"`approach` must be one of {list(APPROACHES)}, got {self.approach!r}")
        if self.framework not in FRAMEWORKS:
            raise PlanError(
                f"`framework` must be one of {list(FRAMEWORKS)}, got {self.framework!r}"
            )
        dtypes = {
            n: _choices(f"allowed_dtypes[{n!r}]", self.allowed_dtypes.get(n, DTYPES), DTYPES)
            for n in names
        }
        set_ = object.__setattr__
        set_(self, "ops", ops)
        set_(self, "allowed_dtypes", dtypes)
        set_(
            self, "act_algorithms", _choices("act_algorithms", self.act_algorithms, ACT_ALGORITHMS)
        )
        set_(
            self,
            "weight_granularities",
            _choices("weight_granularities", self.weight_granularities, GRANULARITIES),
        )
        set_(self, "act_schemes", _choices("act_schemes", self.act_schemes, SCHEMES))
        set_(self, "backends", _choices("backends", self.backends, BACKENDS))

    # --- parameters --------------------------------------------------------------------
    def choices(self) -> dict[str, tuple[str, ...]]:
        """Every Optuna parameter with its choices, in suggestion order (globals, then ops)."""
        result: dict[str, tuple[str, ...]] = {}
        globals_ = [("backend", self.backends), ("weight_granularity", self.weight_granularities)]
        if self.approach != DYNAMIC:
            globals_ += [("act_algorithm", self.act_algorithms), ("act_scheme", self.act_schemes)]
        for name, values in globals_:
            if len(values) > 1:
                result[name] = values
        variants = tuple(f"int8:{v}" for _, v in self.op_variants())
        for name, _ in self.ops:
            dtypes = self.allowed_dtypes[name]
            if "int8" in dtypes:
                dtypes = dtypes + variants
            if len(dtypes) > 1:
                result[OP_PREFIX + name] = dtypes
        return result

    def op_variants(self, op: OpPlan | None = None) -> list[tuple[str, str]]:
        """(field, value) an int8 op may take on its own (``op_observers``): every searched
        observer value, or those that differ from ``op``'s."""
        if not self.op_observers:
            return []
        fields = [("weight_granularity", self.weight_granularities)]
        if self.approach != DYNAMIC:
            fields.insert(0, ("act_algorithm", self.act_algorithms))
        return [
            (f, v)
            for f, values in fields
            if len(values) > 1
            for v in values
            if op is None or getattr(op, f) != v
        ]

    def tunable_ops(self) -> tuple[str, ...]:
        """Ops whose dtype is searched (neither forced to int8 nor to fp32)."""
        return tuple(n for n, _ in self.ops if len(self.allowed_dtypes[n]) > 1)

    def n_plans(self) -> int:
        """Number of distinct canonical plans in the space."""
        n_global = math.prod(len(v) for k, v in self.choices().items() if k[:3] != OP_PREFIX)
        extra = len(self.op_variants()) // 2  # per int8 op, the other value of each field
        n_dtypes = math.prod(
            len(d) + (extra if "int8" in d else 0)
            for d in (self.allowed_dtypes[n] for n, _ in self.ops)
        )
        all_fp32 = int(all("fp32" in self.allowed_dtypes[n] for n, _ in self.ops))
        return n_global * (n_dtypes - all_fp32) + all_fp32

    def suggest(self, trial: TrialLike) -> Plan:
        """Ask ``trial`` for every parameter and return the canonical plan."""
        params = {
            name: trial.suggest_categorical(name, list(c)) for name, c in self.choices().items()
        }
        return self.plan_from_params(params)

    def plan_from_params(self, params: Mapping[str, Any]) -> Plan:
        """Canonical plan from Optuna params; missing params take their default/fixed value."""
        unknown = sorted(set(params) - set(self.choices()))
        if unknown:
            raise PlanError(f"unknown search parameters {unknown}")

        def pick(name: str, values: tuple[str, ...]) -> str:
            value = params.get(name, values[0])
            if value not in values:
                raise PlanError(f"`{name}` must be one of {list(values)}, got {name}={value!r}")
            return value

        settings = {
            "act_algorithm": pick("act_algorithm", self.act_algorithms),
            "act_scheme": pick("act_scheme", self.act_schemes),
            "weight_granularity": pick("weight_granularity", self.weight_granularities),
        }
        if self.approach == DYNAMIC:
            settings.update(act_algorithm="minmax", act_scheme="asym")
        choices = self.choices()
        ops = []
        for n, t in self.ops:
            value = pick(OP_PREFIX + n, choices.get(OP_PREFIX + n, self.allowed_dtypes[n]))
            own = dict(settings)
            if value.startswith("int8:"):
                field_ = next(f for f, v in self.op_variants() if v == value[5:])
                own[field_], value = value[5:], "int8"
            ops.append(OpPlan(name=n, op_type=t, dtype=value, **own))
        plan = Plan(
            ops=tuple(ops),
            approach=self.approach,
            backend=pick("backend", self.backends),
            framework=self.framework,
        )
        return self.canonical(plan)

    def params_for(self, plan: Plan) -> dict[str, str]:
        """Optuna params of ``plan`` (for ``enqueue_trial``); the inverse of plan_from_params."""
        plan = self.canonical(plan)
        first = self._reference(plan)
        values = {
            "backend": plan.backend,
            "act_algorithm": first.act_algorithm,
            "act_scheme": first.act_scheme,
            "weight_granularity": first.weight_granularity,
        }
        params: dict[str, str] = {}
        for name in self.choices():
            if name.startswith(OP_PREFIX):
                params[name] = self._op_value(plan.op(name[len(OP_PREFIX) :]), first)
            else:
                params[name] = values[name]
        return params

    def canonical(self, plan: Plan) -> Plan:
        """The canonical form of ``plan`` (see the module docstring)."""
        if [(op.name, op.op_type) for op in plan.ops] != list(self.ops):
            raise PlanError("`plan` ops do not match the search space ops")
        if not plan.int8_ops:
            plan = replace(plan, backend=self.backends[0])
        settings = self._reference(plan).settings()
        return replace(
            plan,
            ops=tuple(
                op if op.quantized and self.op_observers else replace(op, **settings)
                for op in plan.ops
            ),
        )

    def _reference(self, plan: Plan) -> OpPlan:
        """The plan's global observer setting: the first int8 op's; with ``op_observers``, the
        most common among int8 ops under which every int8 op differs in one field at most."""
        int8 = [op for op in plan.ops if op.quantized]
        if not int8:
            return self._default_op_settings()
        if not self.op_observers:
            return int8[0]
        counts: dict[tuple, OpPlan] = {}
        for op in int8:
            counts.setdefault(op.observer_key, op)
        keys = sorted(counts, key=lambda k: -sum(op.observer_key == k for op in int8))
        first = int8[0]
        combos = [
            replace(first, act_algorithm=a, weight_granularity=g)
            for a in self.act_algorithms
            for g in self.weight_granularities
        ]
        for ref in [counts[k] for k in keys] + combos:
            if all(self._op_value(op, ref) is not None for op in int8):
                return ref
        raise PlanError(f"per-op observer settings of plan {plan.summary()!r} do not fit")

    def _op_value(self, op: OpPlan, ref: OpPlan) -> str | None:
        """``op``'s param value under the global setting ``ref`` (None: not representable)."""
        if not op.quantized:
            return "fp32"
        diff = [k for k, v in op.settings().items() if ref.settings()[k] != v]
        if not diff:
            return "int8"
        if len(diff) == 1 and (diff[0], getattr(op, diff[0])) in self.op_variants():
            return f"int8:{getattr(op, diff[0])}"
        return None

    def with_op_setting(self, plan: Plan, name: str, field_: str, value: str) -> Plan:
        """``plan`` with op ``name`` int8 under its own ``field_ = value`` (canonical)."""
        ops = tuple(
            replace(op, dtype="int8", **{field_: value}) if op.name == name else op
            for op in plan.ops
        )
        return self.canonical(replace(plan, ops=ops))

    def _default_op_settings(self) -> OpPlan:
        dynamic = self.approach == DYNAMIC
        return OpPlan(
            name="_",
            op_type="_",
            act_algorithm="minmax" if dynamic else self.act_algorithms[0],
            act_scheme="asym" if dynamic else self.act_schemes[0],
            weight_granularity=self.weight_granularities[0],
        )

    # --- seeds -------------------------------------------------------------------------
    def default_plan(self) -> Plan:
        """Every op int8 unless forced to fp32; first choice of every global setting."""
        return self.plan_from_params({})

    def observer_variants(self) -> list[Plan]:
        """The default plan with the other activation observer (``kl`` when allowed)."""
        if self.approach == DYNAMIC or len(self.act_algorithms) < 2:
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
