"""INC's quantization spaces: what a tensor, an op type or one op may be quantized to.

:class:`TensorSpace` is one tensor's allowed settings, :class:`OpSpace` INC's ``{weight: ...,
activation: ...}`` for ``model_wise``, ``optype_wise`` and ``op_wise``. No torch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from inc_flow.config.base import Section, as_section, checked, sub
from inc_flow.config.checks import check_names
from inc_flow.config.names import (
    ACTIVATION_ALGORITHMS,
    DTYPES,
    GRANULARITIES,
    SCHEMES,
    WEIGHT_ALGORITHMS,
)
from inc_flow.config.problems import Problems, not_one_of, show

# INC 1.x writes ``weight.bit: 7.0`` (its schema default) into every PyTorch tuning config
# and its PyTorch adaptor never reads it: weights are torch qint8 (8 bits) whatever it says.
WEIGHT_BIT = 7.0
BIT_REASON = (
    "must be 7.0, the value INC 1.x writes for PyTorch, where it changes nothing (INC's "
    "PyTorch adaptor never reads `bit`; weights are 8-bit torch qint8)"
)
# INC's activation compute_dtype: the dtype an int8 op computes its input in. torch's x86 and
# onednn int8 kernels take uint8 activations (quint8); 'None' is INC's value for fp32 ops.
COMPUTE_DTYPES = ("uint8", "None")
COMPUTE_REASON = {
    "int8": "is not supported: torch's int8 CPU kernels take uint8 (quint8) activations",
    "fp32": "is not supported for an int8 op; keep the op in fp32 with dtype ['fp32']",
    "bf16": "is not supported: inc_flow produces int8/fp32 models only",
}
WEIGHT_COMPUTE_DTYPE = "is not an INC key for weights; `compute_dtype` is an activation setting"
ACTIVATION_BIT = "is not an INC key for activations; `bit` is a weight setting (INC writes 7.0)"


def check_bit(p: Problems, key: str, value: Any) -> Any:
    """INC's ``weight.bit``: a number or a list of them; only 7.0 (see ``BIT_REASON``)."""
    if value is None:
        return None
    values = value if isinstance(value, (list, tuple)) else [value]
    ok = values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if not ok:
        p.add(key, f"must be a number or a list of numbers, got {show(value)}")
        return value
    if any(float(v) != WEIGHT_BIT for v in values):
        p.add(key, f"{BIT_REASON}; got {show(value)}")
        return value
    return (WEIGHT_BIT,)


def check_compute_dtype(p: Problems, key: str, value: Any) -> Any:
    """INC's ``activation.compute_dtype``: 'uint8' for int8 ops, 'None' for fp32 ones."""
    if value is None:
        return None
    names = check_names(p, key, value, choices=(*COMPUTE_DTYPES, *COMPUTE_REASON))
    for name in names if isinstance(names, tuple) else ():
        if name in COMPUTE_REASON:
            p.add(key, f"{COMPUTE_REASON[name]}; got {name!r}")
    return names


@dataclass(frozen=True)
class TensorSpace(Section):
    """Allowed settings for one tensor (weight or activation); None leaves a field open."""

    dtype: tuple[str, ...] | None = checked(None, check_names, choices=DTYPES)
    scheme: tuple[str, ...] | None = checked(None, check_names, choices=SCHEMES)
    granularity: tuple[str, ...] | None = checked(None, check_names, choices=GRANULARITIES)
    algorithm: tuple[str, ...] | None = checked(None, check_names, choices=ACTIVATION_ALGORITHMS)
    bit: tuple[float, ...] | None = checked(None, check_bit)  # weight only
    compute_dtype: tuple[str, ...] | None = checked(None, check_compute_dtype)  # activation only

    _SECTION: ClassVar[str] = "tensor"

    def over(self, base: TensorSpace) -> TensorSpace:
        """``base`` with every field this space sets replaced (INC's per-field precedence)."""
        return replace(base, **{k: v for k, v in vars(self).items() if v is not None})


@dataclass(frozen=True)
class OpSpace(Section):
    """INC's ``{weight: {...}, activation: {...}}`` for the model, an op type or one op."""

    weight: TensorSpace | None = sub(TensorSpace, optional=True)
    activation: TensorSpace | None = sub(TensorSpace, optional=True)

    def _check_together(self, p: Problems) -> None:
        algorithms = self.weight.algorithm if isinstance(self.weight, TensorSpace) else None
        for name in algorithms or ():
            if name not in WEIGHT_ALGORITHMS:
                p.add("weight.algorithm", not_one_of(name, WEIGHT_ALGORITHMS))
        act_granularity = self.activation.granularity if self.activation is not None else None
        if act_granularity is not None and "per_tensor" not in act_granularity:
            message = "must allow 'per_tensor': activations are quantized per tensor (torch's"
            message += " int8 kernels; INC's PyTorch capability is per_tensor only)"
            p.add("activation.granularity", f"{message}, got {list(act_granularity)}")
        if self.weight is not None and self.weight.compute_dtype is not None:
            p.add("weight.compute_dtype", WEIGHT_COMPUTE_DTYPE)
        if self.activation is not None and self.activation.bit is not None:
            p.add("activation.bit", ACTIVATION_BIT)
        act = self.activation
        if act is not None and act.compute_dtype is not None and act.dtype is not None:
            if "None" in act.compute_dtype and act.dtype != ("fp32",):
                message = "'None' (no activation quantization) goes with dtype ['fp32'] only"
                p.add("activation.compute_dtype", f"{message}, got dtype {list(act.dtype)}")


LIST_KEYS = ("dtype", "scheme", "granularity", "algorithm", "compute_dtype")


def as_op_spaces(p: Problems, key: str, value: Any, regex: bool) -> Any:
    """``optype_wise``/``op_wise``: name -> OpSpace. As in INC, their values must be lists."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        p.add(key, f"must map names to {{weight: ..., activation: ...}}, got {show(value)}")
        return value
    out = {}
    for name, space in value.items():
        path = f"{key}.{name}"
        before = len(p)
        if not isinstance(name, str) or not name:
            p.add(path, f"must be keyed by a name, got key {show(name)}")
        elif regex:
            try:
                re.compile(name)
            except re.error as e:
                p.add(path, f"is not a valid regular expression: {e}")
        for tensor in ("weight", "activation"):
            entry = space.get(tensor) if isinstance(space, Mapping) else None
            for k, v in entry.items() if isinstance(entry, Mapping) else ():
                if k in LIST_KEYS and not isinstance(v, (list, tuple)):
                    example = repr(v) if isinstance(v, (str, int, float)) else "..."
                    message = f"must be a list, e.g. [{example}], got {show(v)}"
                    p.add(f"{path}.{tensor}.{k}", message)
        if len(p) == before:
            out[name] = as_section(p, path, space, OpSpace)
    return out
