"""The runtime dimension of the search (``quantization.runtime``): a plan runs in torch
(``torch_fx``, the default) or in OpenVINO (``openvino``). No torch, no optuna.

:class:`RuntimeSpace` is a :class:`~inc_flow.search.space.SearchSpace` with an Optuna
parameter ``runtime`` (first in suggestion order) when it has more than one, and with
OpenVINO among them a parameter ``bias_correction`` (NNCF's ``fast``, ``off``, ``full``:
``plan.BIAS_CORRECTIONS``; torch plans have none). Its canonical plans hold what a runtime
cannot vary (``plan.RUNTIME_FIXED``: OpenVINO takes the minmax observer only) and, in
OpenVINO, the first backend (torch's int8 kernels are not used there), so plans differing only
in those are one trial. :func:`runtime_seeds` gives the plans tried right after the default
one: all-int8 in each other runtime; in OpenVINO all-int8 with each other bias correction
(on the 28x28 ResNet18 NNCF's fast bias correction costs 5 of 2048 images that ``off`` keeps:
``benchmarks/openvino_knobs.md``), then the fp32 model compiled by OpenVINO (a deployable
answer: it may beat every int8 plan; last, so that with ``timeout: 0`` a passing int8 plan
wins first).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from inc_flow.search.perop import choices as _choices
from inc_flow.search.plan import BIAS_CORRECTIONS, RUNTIME_FIXED, RUNTIMES, Plan
from inc_flow.search.space import SearchSpace
from inc_flow.vocab import Runtime

RUNTIME_PARAM = "runtime"
BIAS_PARAM = "bias_correction"  # OpenVINO plans only


@dataclass(frozen=True)
class RuntimeSpace(SearchSpace):
    """A search space over ``runtimes`` too (the first is the default)."""

    runtimes: tuple[str, ...] = (Runtime.TORCH_FX.value,)

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "runtimes", _choices("runtimes", self.runtimes, RUNTIMES))

    def choices(self) -> dict[str, tuple[str, ...]]:
        rest = super().choices()
        if Runtime.OPENVINO in self.runtimes:
            rest = {BIAS_PARAM: BIAS_CORRECTIONS, **rest}
        return {RUNTIME_PARAM: self.runtimes, **rest} if len(self.runtimes) > 1 else rest

    def plan_from_params(self, params: Mapping[str, Any]) -> Plan:
        params = dict(params)
        runtime = params.pop(RUNTIME_PARAM, self.runtimes[0])
        if runtime not in self.runtimes:
            _choices(RUNTIME_PARAM, (runtime,), self.runtimes)  # names the bad value
        bias = params.pop(BIAS_PARAM, None) if Runtime.OPENVINO in self.runtimes else None
        if bias is not None and bias not in BIAS_CORRECTIONS:
            _choices(BIAS_PARAM, (bias,), BIAS_CORRECTIONS)  # names the bad value
        plan = super().plan_from_params(params)
        bias = bias if runtime == Runtime.OPENVINO else None  # torch: no meaning, one trial
        return self.canonical(replace(plan, runtime=runtime, bias_correction=bias))

    def canonical(self, plan: Plan) -> Plan:
        fixed = RUNTIME_FIXED.get(plan.runtime, {})
        if plan.runtime != Runtime.TORCH_FX:  # neither has a meaning there: one trial
            plan = replace(plan, backend=self.backends[0], fp32_output=False)
            if not plan.int8_ops:  # fp32: nothing to correct, one trial
                plan = replace(plan, bias_correction=None)
        if fixed:
            ops = tuple(
                replace(op, **{k: v for k, v in fixed.items() if v in self.allowed(op.name)[k]})
                for op in plan.ops
            )
            plan = replace(plan, ops=ops)
        return super().canonical(plan)

    def n_plans(self) -> int:
        """An upper bound: the torch space's plans in every runtime (OpenVINO's with each bias
        correction)."""
        ov = Runtime.OPENVINO in self.runtimes
        return super().n_plans() * (len(self.runtimes) + ov * (len(BIAS_CORRECTIONS) - 1))


def runtime_seeds(space: SearchSpace) -> Iterator[tuple[str, Plan]]:
    """All-int8 in each runtime but the default; in OpenVINO, all-int8 with each other bias
    correction; last the fp32 OpenVINO model when every op may be fp32. Nothing for a space
    without runtimes."""
    runtimes = getattr(space, "runtimes", ())
    default = space.default_plan()
    for runtime in runtimes[1:]:
        yield RUNTIME_PARAM, space.canonical(replace(default, runtime=runtime))
    if Runtime.OPENVINO in runtimes and default.int8_ops:
        ov = replace(default, runtime=Runtime.OPENVINO.value, bias_correction=None)
        for bias in BIAS_CORRECTIONS[1:]:
            yield RUNTIME_PARAM, space.canonical(replace(ov, bias_correction=bias))
    fp32_ok = all("fp32" in space.allowed(n)["dtype"] for n, _ in space.ops)
    if Runtime.OPENVINO in runtimes and fp32_ok:
        plan = replace(default, runtime=Runtime.OPENVINO.value)
        yield RUNTIME_PARAM, space.canonical(plan.with_fallback(plan.int8_ops))
