"""The search space: Optuna parameters <-> Plan, and the enqueued seed plans.

No torch, no optuna import: ``suggest`` only calls ``trial.suggest_categorical``.

Parameters (each only when it has more than one choice):

* ``backend``, ``weight_granularity``, ``weight_scheme``, ``act_algorithm``, ``act_scheme``
  (the last two static PTQ and QAT only: dynamic PTQ has no activation observer) -- global,
  taken by every op the config does not constrain otherwise;
* ``op:<name>`` -- ``int8`` or ``fp32`` for each op whose dtype is not fixed; with
  ``op_observers`` also ``int8:<value>``: int8 with its own value (``kl``, ``per_tensor``) of
  one observer field it follows (``perop.OWN_FIELDS``) where the global one has another (the
  ``basic`` strategy's per-op observer changes; an op the config constrains gets none);
* ``<setting>:<name>`` (``act_algorithm:conv1``) -- an op's own choice, when its config
  (INC's ``op_wise``/``optype_wise``) allows several values other than the global ones. A
  single allowed value pins the op's setting (no parameter). ``allowed(op)`` lists them all.
* ``output`` -- with ``fp32_outputs``: ``int8`` or ``fp32``, ``Plan.fp32_output`` (the ops
  after the last quantizable ones stay fp32; a plan with no int8 op has an int8 output).

Plans are canonical: an op taking a global setting holds the plan's value of it (that of its
first int8 op taking it; with ``op_observers`` the values most int8 ops share), fp32 ops hold
their int8 values (so every fallback set of one
observer setting shares one ``Plan.calibration_key()``; an op's own free choice is its first
value while it is fp32), and a plan without any int8 op carries the default settings (an
all-fp32 model is the same whatever its observers). Equal canonical plans are the same trial;
the tuner never evaluates one twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from inc_flow.errors import PlanError
from inc_flow.search.perop import (
    ACT_SETTINGS,
    INT8_OWN,
    OWN_FIELDS,
    PARAM_SEP,
    SETTINGS,
    check_op_settings,
    shared_values,
    space_plans,
)
from inc_flow.search.perop import choices as _choices
from inc_flow.search.plan import (
    APPROACHES,
    BACKENDS,
    BIAS_CORRECTIONS,
    DTYPES,
    FRAMEWORKS,
    OUTPUTS,
    OpPlan,
    Plan,
)
from inc_flow.search.seeds import IncOrder
from inc_flow.vocab import Approach, Backend, Framework

DYNAMIC = Approach.DYNAMIC
OP_PREFIX = "op:"
GLOBAL_ATTRS = {
    "act_algorithm": "act_algorithms",
    "act_scheme": "act_schemes",
    "weight_granularity": "weight_granularities",
    "weight_scheme": "weight_schemes",
}
GLOBAL_ORDER = ("weight_granularity", "weight_scheme", "act_algorithm", "act_scheme")
DYNAMIC_ACT = {"act_algorithm": "minmax", "act_scheme": "asym"}  # no activation observer


class TrialLike(Protocol):
    """What ``suggest`` needs from an Optuna trial."""

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...


@dataclass(frozen=True)
class SearchSpace(IncOrder):
    """Per-op dtype choices, global observer/backend choices, and per-op observer constraints.

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
        weight_schemes: weight schemes; the first is the default.
        op_settings: op name -> {setting: allowed values} for the ops whose config (INC's
            ``op_wise``/``optype_wise``) differs from the global choices: one value pins the
            setting for that op, several are that op's own parameter ``<setting>:<op>``.
            Settings are the keys of :data:`inc_flow.search.perop.SETTINGS`.
        op_observers: an int8 op may hold its own value of one observer field it follows
            (``op_variants``); the config's constraints stay hard limits.
        fp32_outputs: plans may keep the output fp32 (parameter ``output``).
    """

    ops: tuple[tuple[str, str], ...]
    allowed_dtypes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    act_algorithms: tuple[str, ...] = ("minmax", "kl")
    weight_granularities: tuple[str, ...] = ("per_channel", "per_tensor")
    act_schemes: tuple[str, ...] = ("asym",)
    backends: tuple[str, ...] = (Backend.X86.value,)
    approach: str = Approach.STATIC.value
    framework: str = Framework.FX.value
    weight_schemes: tuple[str, ...] = ("sym",)
    op_settings: Mapping[str, Mapping[str, tuple[str, ...]]] = field(default_factory=dict)
    op_observers: bool = False
    fp32_outputs: bool = False

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
        for name, attr in GLOBAL_ATTRS.items():
            set_(self, attr, _choices(attr, getattr(self, attr), SETTINGS[name]))
        set_(self, "backends", _choices("backends", self.backends, BACKENDS))
        set_(self, "op_settings", check_op_settings(self.op_settings, names))

    # --- per-op constraints ------------------------------------------------------------
    def _global(self, setting: str) -> tuple[str, ...]:
        if self.approach == DYNAMIC and setting in ACT_SETTINGS:
            return (DYNAMIC_ACT[setting],)
        return getattr(self, GLOBAL_ATTRS[setting])

    def allowed(self, op: str) -> dict[str, tuple[str, ...]]:
        """What ``op`` may be: ``dtype`` and every observer setting, each a tuple of values
        (the first is the default). Search strategies must keep each op within these."""
        out = {"dtype": self.allowed_dtypes[op]}
        own = self.op_settings.get(op, {})
        for setting in SETTINGS:
            follows = self.follows_global(op, setting)
            out[setting] = self._global(setting) if follows else own[setting]
        return out

    def follows_global(self, op: str, setting: str) -> bool:
        """True when ``op`` takes the trial-wide value of ``setting`` (no own constraint)."""
        if self.approach == DYNAMIC and setting in ACT_SETTINGS:
            return True
        own = self.op_settings.get(op, {}).get(setting)
        return own is None or own == self._global(setting)

    def _own_params(self) -> dict[str, tuple[str, ...]]:
        """``<setting>:<op>`` -> choices for every op setting with its own choice."""
        out = {}
        for op, _ in self.ops:
            for setting in SETTINGS:
                values = self.allowed(op)[setting]
                if not self.follows_global(op, setting) and len(values) > 1:
                    out[f"{setting}{PARAM_SEP}{op}"] = values
        return out

    # --- parameters --------------------------------------------------------------------
    def choices(self) -> dict[str, tuple[str, ...]]:
        """Every Optuna parameter with its choices, in suggestion order: globals (only when
        some op follows them), op dtypes, then per-op settings."""
        result: dict[str, tuple[str, ...]] = {}
        if len(self.backends) > 1:
            result["backend"] = self.backends
        for setting in GLOBAL_ORDER:
            values = self._global(setting)
            if len(values) > 1 and any(self.follows_global(n, setting) for n, _ in self.ops):
                result[setting] = values
        if self.fp32_outputs:
            result["output"] = OUTPUTS
        for name, _ in self.ops:
            own = tuple(INT8_OWN + v for _, v in self.op_variants(name))
            if len(self.allowed_dtypes[name] + own) > 1:
                result[OP_PREFIX + name] = self.allowed_dtypes[name] + own
        result.update(self._own_params())
        return result

    def op_variants(self, op: OpPlan | str) -> list[tuple[str, str]]:
        """(field, value) the int8 op ``op`` may hold on its own (``op_observers``): every
        searched value of each ``OWN_FIELDS`` field it follows -- none of a field its config
        pins or gives it a choice of; for an OpPlan, only the values it does not hold."""
        name = op if isinstance(op, str) else op.name
        if not self.op_observers or "int8" not in self.allowed_dtypes[name]:
            return []
        return [
            (f, v)
            for f in OWN_FIELDS
            if self.follows_global(name, f) and len(self._global(f)) > 1
            for v in self._global(f)
            if isinstance(op, str) or getattr(op, f) != v
        ]

    def tunable_ops(self) -> tuple[str, ...]:
        """Ops whose dtype is searched (neither forced to int8 nor to fp32)."""
        return tuple(n for n, _ in self.ops if len(self.allowed_dtypes[n]) > 1)

    def n_plans(self) -> int:
        """Number of distinct canonical plans in the space (``op_observers``: an upper bound,
        as an op's own value may equal another global choice)."""
        return space_plans(self)

    def suggest(self, trial: TrialLike) -> Plan:
        """Ask ``trial`` for every parameter and return the canonical plan."""
        params = {
            name: trial.suggest_categorical(name, list(c)) for name, c in self.choices().items()
        }
        return self.plan_from_params(params)

    def plan_from_params(self, params: Mapping[str, Any]) -> Plan:
        """Canonical plan from Optuna params; missing params take their default/fixed value."""
        choices = self.choices()
        unknown = sorted(set(params) - set(choices))
        if unknown:
            raise PlanError(f"unknown search parameters {unknown}")

        def pick(name: str, values: tuple[str, ...]) -> str:
            value = params.get(name, values[0])
            if value not in values:
                raise PlanError(f"`{name}` must be one of {list(values)}, got {name}={value!r}")
            return value

        globals_ = {s: pick(s, self._global(s)) for s in SETTINGS}
        ops = []
        for n, t in self.ops:
            allowed = self.allowed(n)
            settings = {
                s: globals_[s]
                if self.follows_global(n, s)
                else pick(f"{s}{PARAM_SEP}{n}", allowed[s])
                for s in SETTINGS
            }
            dtype = pick(OP_PREFIX + n, choices.get(OP_PREFIX + n, self.allowed_dtypes[n]))
            if dtype.startswith(INT8_OWN):
                value = dtype[len(INT8_OWN) :]
                settings[next(f for f, v in self.op_variants(n) if v == value)] = value
                dtype = "int8"
            ops.append(OpPlan(name=n, op_type=t, dtype=dtype, **settings))
        plan = Plan(
            ops=tuple(ops),
            approach=self.approach,
            backend=pick("backend", self.backends),
            framework=self.framework,
            fp32_output=pick("output", choices.get("output", OUTPUTS[:1])) == "fp32",
        )
        return self.canonical(plan)

    def _global_values(self, plan: Plan) -> dict[str, str]:
        """The plan's trial-wide value of each setting: that of its first int8 op following
        the setting, else the default."""
        out = {}
        for setting in SETTINGS:
            values = (
                getattr(op, setting)
                for op in plan.ops
                if op.quantized and self.follows_global(op.name, setting)
            )
            out[setting] = next(values, self._global(setting)[0])
        if self.op_observers and plan.int8_ops:
            options = {f: self._global(f) for f in OWN_FIELDS if len(self._global(f)) > 1}
            shared = shared_values(options, [self._own(op) for op in plan.ops if op.quantized])
            if shared is None:
                raise PlanError(f"per-op observer settings of plan {plan.summary()!r} do not fit")
            out.update(shared)
        return out

    def _own(self, op: OpPlan) -> dict[str, str]:
        """``op``'s values of the fields it may hold on its own (``op_variants``)."""
        return {f: v for f, v in self.op_variants(op.name) if getattr(op, f) == v}

    def _op_value(self, op: OpPlan, globals_: Mapping[str, str]) -> str:
        """``op:<name>`` param value of ``op`` in a canonical plan with ``globals_``."""
        if not op.quantized:
            return "fp32"
        own = [v for f, v in self._own(op).items() if v != globals_[f]]
        return INT8_OWN + own[0] if own else "int8"

    def with_op_setting(self, plan: Plan, name: str, field_: str, value: str) -> Plan:
        """``plan`` (canonical) with op ``name`` int8 holding ``field_ = value`` of its own;
        a PlanError when ``allowed(name)`` or the space's encoding does not let it."""
        changed = {"dtype": "int8", field_: value}
        ops = tuple(replace(op, **changed) if op.name == name else op for op in plan.ops)
        result = self.canonical(replace(plan, ops=ops))
        if not result.op(name).quantized or getattr(result.op(name), field_) != value:
            allowed = {k: list(v) for k, v in self.allowed(name).items()}
            raise PlanError(f"op {name!r} cannot hold {field_}={value!r}: allowed {allowed}")
        return result

    def params_for(self, plan: Plan) -> dict[str, str]:
        """Optuna params of ``plan`` (for ``enqueue_trial``); the inverse of plan_from_params."""
        plan = self.canonical(plan)
        values = {"backend": plan.backend, "runtime": plan.runtime, **self._global_values(plan)}
        values["bias_correction"] = plan.bias_correction or BIAS_CORRECTIONS[0]  # torch: unused
        params: dict[str, str] = {}
        for name in self.choices():
            if name.startswith(OP_PREFIX):
                params[name] = self._op_value(plan.op(name[len(OP_PREFIX) :]), values)
            elif name == "output":
                params[name] = "fp32" if plan.fp32_output else "int8"
            elif PARAM_SEP in name:
                setting, op = name.split(PARAM_SEP, 1)
                params[name] = getattr(plan.op(op), setting)
            else:
                params[name] = values[name]
        return params

    def canonical(self, plan: Plan) -> Plan:
        """The canonical form of ``plan`` (see the module docstring)."""
        if [(op.name, op.op_type) for op in plan.ops] != list(self.ops):
            raise PlanError("`plan` ops do not match the search space ops")
        if plan.fp32_output and not self.fp32_outputs:
            raise PlanError(f"plan {plan.summary()!r}: this search space has no fp32 output")
        if not any(op.quantized for op in plan.ops):
            plan = replace(plan, backend=self.backends[0], fp32_output=False)
        globals_ = self._global_values(plan)
        ops = []
        for op in plan.ops:
            allowed = self.allowed(op.name)
            settings = {}
            own = self._own(op) if op.quantized else {}
            for s in SETTINGS:
                if self.follows_global(op.name, s):
                    settings[s] = own.get(s, globals_[s])
                elif op.quantized and getattr(op, s) in allowed[s]:
                    settings[s] = getattr(op, s)
                else:
                    settings[s] = allowed[s][0]
            ops.append(replace(op, **settings))
        return replace(plan, ops=tuple(ops))

    # --- seeds -------------------------------------------------------------------------
    def default_plan(self) -> Plan:
        """Every op int8 unless forced to fp32; first choice of every global setting."""
        return self.plan_from_params({})
