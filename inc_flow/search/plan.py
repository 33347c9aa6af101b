"""The per-op quantization plan: what one tuning trial is.

Plain, frozen data. No torch, no optuna, no mlflow. ``to_dict``/``from_dict`` give the
versioned, safe-yaml form stored in ``best_configure.yaml`` and in MLflow params.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from inc_flow.errors import PlanError
from inc_flow.vocab import Approach, Backend, Framework, Runtime, names

PLAN_FORMAT_VERSION = 1
OPTIONAL_KEYS = ("output", "runtime", "bias_correction")  # to_dict writes them when set

# A plan's approach is a concrete one: ``auto`` is resolved (static, else dynamic) before.
APPROACHES = tuple(a for a in names(Approach) if a != Approach.AUTO)
BACKENDS = names(Backend)
FRAMEWORKS = names(Framework)
RUNTIMES = names(Runtime)
# What a runtime cannot vary: OpenVINO's NNCF has no KL (histogram) activation observer.
RUNTIME_FIXED = {Runtime.OPENVINO.value: {"act_algorithm": "minmax"}}
DTYPES = ("int8", "fp32")
ACT_ALGORITHMS = ("minmax", "kl")
SCHEMES = ("asym", "sym")
GRANULARITIES = ("per_channel", "per_tensor")
OUTPUTS = ("int8", "fp32")  # a plan's ``output``: what ``Plan.fp32_output`` reads from yaml
# An OpenVINO plan's NNCF bias correction (the first: NNCF's default): ``fast``
# (FastBiasCorrection), ``off``, ``full`` (BiasCorrection). Torch plans have none (None).
BIAS_CORRECTIONS = ("fast", "off", "full")


def _check(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise PlanError(f"`{name}` must be one of {list(allowed)}, got {name}={value!r}")


def _has_settings(data: Any) -> bool:
    """True when an op's dict gives observer settings besides its dtype."""
    act = data.get("activation") or {} if isinstance(data, dict) else {}
    weight = data.get("weight") or {} if isinstance(data, dict) else {}
    return bool({"algorithm", "scheme"} & set(act) or {"granularity", "scheme"} & set(weight))


def _reference(ops: Any) -> OpPlan | None:
    """The int8 op holding the observer settings most int8 ops hold (the first on ties)."""
    int8 = [op for op in ops if op.quantized]
    return max(
        int8, default=None, key=lambda op: sum(o.observer_key == op.observer_key for o in int8)
    )


@dataclass(frozen=True)
class OpPlan:
    """How one quantizable op is executed.

    Attributes:
        name: FX module name (``features.0``) or node name for functional ops.
        op_type: the fp32 op type (``Conv2d``, ``Linear``, ``add``...).
        dtype: ``int8`` or ``fp32`` (fallback).
        act_algorithm: activation observer: ``minmax`` or ``kl`` (histogram).
        act_scheme: activation quantization scheme, ``asym`` (uint8 affine) or ``sym``.
        weight_granularity: ``per_channel`` or ``per_tensor``.
        weight_scheme: ``sym`` or ``asym``.
    """

    name: str
    op_type: str
    dtype: str = "int8"
    act_algorithm: str = "minmax"
    act_scheme: str = "asym"
    weight_granularity: str = "per_channel"
    weight_scheme: str = "sym"

    def __post_init__(self) -> None:
        _check("dtype", self.dtype, DTYPES)
        _check("act_algorithm", self.act_algorithm, ACT_ALGORITHMS)
        _check("act_scheme", self.act_scheme, SCHEMES)
        _check("weight_granularity", self.weight_granularity, GRANULARITIES)
        _check("weight_scheme", self.weight_scheme, SCHEMES)

    @property
    def quantized(self) -> bool:
        return self.dtype == "int8"

    def settings(self) -> dict[str, str]:
        """The observer fields by name: what ``replace(other_op, **settings)`` copies."""
        return {
            "act_algorithm": self.act_algorithm,
            "act_scheme": self.act_scheme,
            "weight_granularity": self.weight_granularity,
            "weight_scheme": self.weight_scheme,
        }

    @property
    def observer_key(self) -> tuple[str, str, str, str]:
        """The observer setting; plans sharing it per op share one calibration."""
        return (self.act_algorithm, self.act_scheme, self.weight_granularity, self.weight_scheme)

    def to_dict(self) -> dict[str, Any]:
        """INC's layout: weight and activation specs, plain values."""
        if not self.quantized:
            return {
                "name": self.name,
                "type": self.op_type,
                "weight": {"dtype": "fp32"},
                "activation": {"dtype": "fp32"},
            }
        return {
            "name": self.name,
            "type": self.op_type,
            "weight": {
                "dtype": "int8",
                "scheme": self.weight_scheme,
                "granularity": self.weight_granularity,
                "algorithm": "minmax",
            },
            "activation": {
                "dtype": "uint8" if self.act_scheme == "asym" else "int8",
                "scheme": self.act_scheme,
                "granularity": "per_tensor",
                "algorithm": self.act_algorithm,
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OpPlan:
        weight = data.get("weight") or {}
        act = data.get("activation") or {}
        fp32 = act.get("dtype") == "fp32" or weight.get("dtype") == "fp32"
        if fp32 and not _has_settings(data):
            return cls(name=str(data["name"]), op_type=str(data["type"]), dtype="fp32")
        return cls(
            name=str(data["name"]),
            op_type=str(data["type"]),
            dtype="fp32" if fp32 else "int8",
            act_algorithm=act.get("algorithm", "minmax"),
            act_scheme=act.get("scheme", "asym"),
            weight_granularity=weight.get("granularity", "per_channel"),
            weight_scheme=weight.get("scheme", "sym"),
        )


@dataclass(frozen=True)
class Plan:
    """A whole-model plan: approach, backend, framework, runtime (``torch_fx``: torch's int8
    kernels of ``backend``; ``openvino``: built by NNCF, run by OpenVINO, ``backend`` unused)
    and one OpPlan per quantizable op.

    ``fp32_output``: the ops after the last quantizable ops (those between them and the
    model's output, e.g. a final ``log_softmax``) stay fp32, not requantized; with the last
    op(s) in fp32 too, the outputs are off the int8 grid (no ties at the top). Stored as
    ``output: fp32``; it changes the convert step only, not calibration.

    ``bias_correction``: OpenVINO plans only, one of :data:`BIAS_CORRECTIONS` (None there
    reads as NNCF's default ``fast`` when the plan has an int8 op); a torch plan with one is
    refused (torch's FX quantization corrects no bias)."""

    ops: tuple[OpPlan, ...]
    approach: str = Approach.STATIC.value
    backend: str = Backend.X86.value
    framework: str = Framework.FX.value
    fp32_output: bool = False
    runtime: str = Runtime.TORCH_FX.value
    bias_correction: str | None = None

    def __post_init__(self) -> None:
        for name in ("approach", "backend", "framework", "runtime"):  # vocab -> plain strings
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, str(value))
        _check("approach", self.approach, APPROACHES)
        _check("backend", self.backend, BACKENDS)
        _check("framework", self.framework, FRAMEWORKS)
        if not isinstance(self.fp32_output, bool):
            raise PlanError(f"`fp32_output` must be a bool, got fp32_output={self.fp32_output!r}")
        _check("runtime", self.runtime, RUNTIMES)
        if self.runtime == Runtime.OPENVINO:
            if self.bias_correction is None and any(op.quantized for op in self.ops):
                object.__setattr__(self, "bias_correction", BIAS_CORRECTIONS[0])
            if self.bias_correction is not None:  # None: no int8 op, nothing to correct
                _check("bias_correction", self.bias_correction, BIAS_CORRECTIONS)
        elif self.bias_correction is not None:
            raise PlanError(
                f"`bias_correction` is an OpenVINO (NNCF) option, torch's FX quantization "
                f"corrects no bias: got bias_correction={self.bias_correction!r} with "
                f"runtime={self.runtime!r}"
            )
        names = [op.name for op in self.ops]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise PlanError(f"`ops` must have unique names, got duplicates {dup}")

    # --- views -------------------------------------------------------------------------
    def op(self, name: str) -> OpPlan:
        for op in self.ops:
            if op.name == name:
                return op
        raise KeyError(name)

    @property
    def fp32_ops(self) -> tuple[str, ...]:
        return tuple(op.name for op in self.ops if not op.quantized)

    @property
    def int8_ops(self) -> tuple[str, ...]:
        return tuple(op.name for op in self.ops if op.quantized)

    @property
    def is_baseline(self) -> bool:
        """No int8 op, run by torch: the fp32 model itself (in OpenVINO it is an answer)."""
        return bool(self.ops) and not self.int8_ops and self.runtime == Runtime.TORCH_FX

    def calibration_plan(self) -> Plan:
        """This plan with every op int8: what calibration prepares. Plans that differ only in
        their fallbacks share it, so they share one calibration pass."""
        return replace(self, ops=tuple(replace(op, dtype="int8") for op in self.ops))

    def calibration_key(self) -> tuple:
        """Hashable identity of the calibration this plan needs."""
        cal = self.calibration_plan()
        return (cal.approach, cal.backend, cal.framework, cal.ops, cal.runtime,
                cal.bias_correction)  # fmt: skip

    def with_fallback(self, names: set[str] | frozenset[str] | tuple[str, ...]) -> Plan:
        """This plan with the named ops set to fp32."""
        names = set(names)
        unknown = names - {op.name for op in self.ops}
        if unknown:
            raise KeyError(f"unknown ops {sorted(unknown)}")
        ops = tuple(replace(op, dtype="fp32") if op.name in names else op for op in self.ops)
        return replace(self, ops=ops)

    def summary(self) -> str:
        """Short human summary, e.g. ``x86 int8 9/10 fp32=[conv1] act=minmax``."""
        n8 = len(self.int8_ops)
        algos = sorted({op.act_algorithm for op in self.ops if op.quantized})
        grans = sorted({op.weight_granularity for op in self.ops if op.quantized})
        where = self.backend if self.runtime == Runtime.TORCH_FX else self.runtime
        text = f"{where} int8 {n8}/{len(self.ops)}"
        if self.fp32_ops:
            shown = ",".join(self.fp32_ops[:4]) + (",..." if len(self.fp32_ops) > 4 else "")
            text += f" fp32=[{shown}]"
        if algos:
            text += f" act={'/'.join(algos)} w={'/'.join(grans)}"
        if self.fp32_output:
            text += " out=fp32"
        if self.bias_correction not in (None, BIAS_CORRECTIONS[0]):
            text += f" bc={self.bias_correction}"
        return text

    # --- serialisation -----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """An fp32 op is ``{dtype: fp32}`` (INC's layout) unless its observer settings differ
        from those most int8 ops share (per-op constraints or observers): then they are
        written too, so that ``from_dict`` rebuilds the calibration plan tuning used (with no
        int8 op: unless they differ from OpPlan's defaults)."""
        ref = (_reference(self.ops) or OpPlan(name="", op_type="")).settings()
        ops = []
        for op in self.ops:
            entry = op.to_dict()
            if not op.quantized and op.settings() != ref:
                full = replace(op, dtype="int8").to_dict()
                for tensor in ("weight", "activation"):
                    entry[tensor] = {**full[tensor], "dtype": "fp32"}
            ops.append(entry)
        out = {
            "format_version": PLAN_FORMAT_VERSION,
            "approach": self.approach,
            "backend": self.backend,
            "framework": self.framework,
            "ops": ops,
        }
        if self.fp32_output:  # absent: int8 (files written before it existed read the same)
            out["output"] = "fp32"
        if self.runtime != Runtime.TORCH_FX:  # torch plans keep INC's keys only
            out["runtime"] = self.runtime
        if self.bias_correction is not None:
            out["bias_correction"] = self.bias_correction
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        version = data.get("format_version", PLAN_FORMAT_VERSION)
        if version != PLAN_FORMAT_VERSION:
            raise PlanError(
                f"`format_version` must be {PLAN_FORMAT_VERSION}, got format_version={version!r}"
            )
        raw = data.get("ops", [])
        ops = tuple(OpPlan.from_dict(op) for op in raw)
        # An fp32 op is stored as {dtype: fp32} only. Give it the observer settings of the
        # plan's int8 ops back (what SearchSpace.canonical gave it when tuning), so that
        # calibration_plan() -- and with it the global qconfig and the prepared model that
        # load() rebuilds -- is the one tuning used. Without this a plan whose first op is
        # fp32 prepares with per_channel defaults and convert_fx refuses it ("Expected global
        # qconfigs to be the same in the prepare and convert quantization configs").
        ref = _reference(ops)
        if ref is not None:  # fp32 ops written with their own settings keep them
            ops = tuple(
                op if op.quantized or _has_settings(r) else replace(op, **ref.settings())
                for op, r in zip(ops, raw, strict=True)
            )
        output = data.get("output", OUTPUTS[0])
        _check("output", output, OUTPUTS)
        return cls(
            ops=ops,
            approach=data.get("approach", Approach.STATIC.value),
            backend=data.get("backend", Backend.X86.value),
            framework=data.get("framework", Framework.FX.value),
            fp32_output=output == "fp32",
            runtime=data.get("runtime", Runtime.TORCH_FX.value),
            bias_correction=data.get("bias_correction"),
        )


def default_plan(
    ops: list[tuple[str, str]],
    approach: str = Approach.STATIC.value,
    backend: str = Backend.X86.value,
    framework: str = Framework.FX.value,
    runtime: str = Runtime.TORCH_FX.value,
    **op_settings: str,
) -> Plan:
    """All-int8 plan over ``ops`` given as (name, type) pairs."""
    return Plan(
        ops=tuple(OpPlan(name=n, op_type=t, **op_settings) for n, t in ops),
        approach=approach,
        backend=backend,
        framework=framework,
        runtime=runtime,
    )
