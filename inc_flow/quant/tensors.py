"""What a saved int8 state dict holds, and whether it is what the plan's int8 model expects.

:func:`describe_state` is the per-key summary ``save`` records in ``best_configure.yaml``
(``qint8[16, 1, 3, 3]``, ``float32[16]``, ``dtype qint8``). :func:`check_state` compares the
entries read back with the freshly rebuilt model's own: same dtype (a float64 bias, qint32
weights where qint8 are expected), same shape, same quantization scheme; finite, positive
scales; zero points inside the quantized dtype's range; no NaN in a float tensor. A tensor
``load_state_dict`` would take silently but that changes the predictions is named here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import torch

# float entries that are quantization scales: `conv1.scale`, `conv1_input_scale_0`
_SCALE_KEY = re.compile(r"(^|[._])scale(_\d+)?$")
_QRANGE = {torch.qint8: (-128, 127), torch.quint8: (0, 255), torch.qint32: (-(2**31), 2**31 - 1)}
MAX_PROBLEMS = 8


def describe(value: Any) -> Any:
    """A short, yaml-friendly description of one state-dict entry."""
    if isinstance(value, torch.Tensor):
        return f"{str(value.dtype).removeprefix('torch.')}{list(value.shape)}"
    if isinstance(value, torch.dtype):
        return f"dtype {str(value).removeprefix('torch.')}"
    if isinstance(value, tuple | list):
        return [describe(v) for v in value]
    if value is None:
        return None
    return type(value).__name__


def describe_state(state: Mapping[str, Any]) -> dict[str, Any]:
    return {str(k): describe(v) for k, v in state.items()}


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _scales_ok(scales: torch.Tensor) -> bool:
    return bool(torch.isfinite(scales).all()) and bool((scales > 0).all())


def _quantized(key: str, want: torch.Tensor, got: torch.Tensor) -> list[str]:
    if got.qscheme() != want.qscheme():
        return [f"{key}: quantization scheme {got.qscheme()}, the model expects {want.qscheme()}"]
    if got.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
        scales = torch.tensor([got.q_scale()], dtype=torch.float64)
        zero_points = torch.tensor([got.q_zero_point()])
    else:
        if got.q_per_channel_axis() != want.q_per_channel_axis():
            return [
                f"{key}: per-channel axis {got.q_per_channel_axis()}, the model expects "
                f"{want.q_per_channel_axis()}"
            ]
        scales = got.q_per_channel_scales()
        zero_points = got.q_per_channel_zero_points()
    problems = []
    if not _scales_ok(scales):
        bad = scales[~(torch.isfinite(scales) & (scales > 0))][:3].tolist()
        problems.append(f"{key}: scales must be finite and > 0, got {bad}")
    low, high = _QRANGE.get(got.dtype, (-math.inf, math.inf))
    zmin, zmax = (int(zero_points.min()), int(zero_points.max())) if len(zero_points) else (0, 0)
    if not low <= zmin <= zmax <= high:
        problems.append(
            f"{key}: zero points must be in [{low}, {high}] for {_name(got.dtype)}, got "
            f"[{zmin}, {zmax}]"
        )
    return problems


def _tensor(key: str, want: torch.Tensor, got: Any, scale: bool = False) -> list[str]:
    if not isinstance(got, torch.Tensor):
        return [f"{key}: {type(got).__name__}, the model expects a {_name(want.dtype)} tensor"]
    if got.dtype != want.dtype:
        return [f"{key}: dtype {_name(got.dtype)}, the model expects {_name(want.dtype)}"]
    if got.shape != want.shape:
        return [f"{key}: shape {list(got.shape)}, the model expects {list(want.shape)}"]
    if got.is_quantized:
        return _quantized(key, want, got)
    if got.is_floating_point():
        if scale and not _scales_ok(got):
            return [f"{key}: a scale must be finite and > 0, got {got.flatten()[:3].tolist()}"]
        if bool(torch.isnan(got).any()):
            return [f"{key}: holds NaN"]
    return []


def _entry(key: str, want: Any, got: Any, scale: bool = False) -> list[str]:
    if isinstance(want, torch.Tensor):
        return _tensor(key, want, got, scale)
    if isinstance(want, tuple | list):
        if not isinstance(got, tuple | list) or len(got) != len(want):
            return [f"{key}: {describe(got)}, the model expects {describe(want)}"]
        return [
            p
            for i, (w, g) in enumerate(zip(want, got, strict=True))
            for p in _entry(f"{key}[{i}]", w, g)
        ]
    if isinstance(want, torch.dtype) or want is None:
        same = got is want  # dtypes are singletons
        return [] if same else [f"{key}: {describe(got)}, the model expects {describe(want)}"]
    return []


def _zero_point_key(key: str) -> str:
    return _SCALE_KEY.sub(lambda m: f"{m.group(1)}zero_point{m.group(2) or ''}", key)


def check_state(expected: Mapping[str, Any], saved: Mapping[str, Any]) -> list[str]:
    """What in ``saved`` differs from the rebuilt model's ``expected`` entries (one line
    each, naming the key), for the keys both have. A float entry is a quantization scale
    (finite, > 0) when the model has its zero point beside it (``conv1.scale`` and
    ``conv1.zero_point``), so a parameter of the user's that is only named ``scale`` is not
    held to that."""
    problems: list[str] = []
    for key, want in expected.items():
        if key in saved:
            scale = bool(_SCALE_KEY.search(key)) and _zero_point_key(key) in expected
            problems.extend(_entry(key, want, saved[key], scale))
    return problems
