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


@dataclass(frozen=True)
class TensorSpace(Section):
    """Allowed settings for one tensor (weight or activation); None leaves a field open."""

    dtype: tuple[str, ...] | None = checked(None, check_names, choices=DTYPES)
    scheme: tuple[str, ...] | None = checked(None, check_names, choices=SCHEMES)
    granularity: tuple[str, ...] | None = checked(None, check_names, choices=GRANULARITIES)
    algorithm: tuple[str, ...] | None = checked(None, check_names, choices=ACTIVATION_ALGORITHMS)

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
                if k in ("dtype", "scheme", "granularity", "algorithm") and not isinstance(
                    v, (list, tuple)
                ):
                    example = repr(v) if isinstance(v, (str, int, float)) else "..."
                    message = f"must be a list, e.g. [{example}], got {show(v)}"
                    p.add(f"{path}.{tensor}.{k}", message)
        if len(p) == before:
            out[name] = as_section(p, path, space, OpSpace)
    return out
