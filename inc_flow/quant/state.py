"""The int8 state dict on disk: rebuild a plan's int8 model from its saved weights, and
turn dynamic-RNN cell params into plain tensors (and back) for ``weights_only`` save/load."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from inc_flow.errors import QuantizationError
from inc_flow.quant.ao import quiet
from inc_flow.quant.graph import convert, example_args, prepare
from inc_flow.quant.tensors import check_state
from inc_flow.search.plan import Plan
from inc_flow.vocab import Approach


def rebuild(
    fp32_model: nn.Module, plan: Plan, state_dict: dict[str, Any], example_inputs: Any
) -> nn.Module:
    """The int8 model of ``plan`` from its saved state dict, with no calibration data.

    Takes the same path as tuning did: prepare with the plan's calibration mapping, convert
    with the plan's own mapping, then load the int8 state dict.

    Raises:
        QuantizationError: the weights do not match the plan's int8 model: keys, shapes,
            dtypes, quantization schemes, or scales that are not finite and positive
            (:func:`inc_flow.quant.tensors.check_state`).
    """
    prepared = prepare(fp32_model, plan.calibration_plan(), example_inputs)
    if plan.approach != Approach.DYNAMIC:
        # Observers that never ran produce degenerate qparams; one pass of zeros gives them
        # finite values so convert succeeds. load_state_dict overwrites them all.
        with torch.no_grad(), quiet():
            try:
                prepared(*example_args(example_inputs))
            except Exception:  # noqa: BLE001 - shape-less models still convert below
                pass
    model = convert(prepared.eval() if plan.approach == Approach.QAT else prepared, plan)
    saved = state_dict
    state_dict = packed_state_dict(state_dict)
    with quiet():
        expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        raise QuantizationError(
            "the weights do not match the plan's int8 model: "
            f"missing keys {missing[:8]}, unexpected keys {unexpected[:8]}"
        )
    wrong = [
        f"{k}: saved {_shape(state_dict[k])}, model {_shape(v)}"
        for k, v in expected.items()
        if _shape(state_dict[k]) != _shape(v)
    ]
    if wrong:
        raise QuantizationError(
            "the weights do not match the plan's int8 model: " + "; ".join(wrong[:8])
        )
    # dtypes, schemes, scales: what load_state_dict would take silently
    problems = check_state(plain_state_dict(expected), saved)
    if problems:
        raise QuantizationError(
            "the weights do not match the plan's int8 model: " + "; ".join(problems[:8])
        )
    with quiet():
        model.load_state_dict(state_dict)
    return model.eval()


# Dynamic int8 RNNs (nn.LSTM / nn.GRU) keep each layer's weights in a TorchScript
# CellParamsBase object, which torch.load(weights_only=True) refuses. On disk each one becomes
# plain entries under its key: ``<key>.w_ih`` / ``.w_hh`` (int8 tensors), ``.b_ih`` /
# ``.b_hh`` and ``.reduce_range``; loading packs them back with torch's own operators.
_CELL_PARTS = ("w_ih", "w_hh", "b_ih", "b_hh", "reduce_range")


def _like(state: dict[str, Any]) -> dict[str, Any]:
    """An empty state dict carrying ``state``'s ``_metadata`` (the modules' format versions,
    which quantized modules need to read their entries)."""
    out: dict[str, Any] = OrderedDict()
    metadata = getattr(state, "_metadata", None)
    if metadata is not None:
        out._metadata = metadata  # type: ignore[attr-defined]
    return out


def plain_state_dict(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` with every dynamic-RNN cell-params object unpacked into plain tensors."""
    out = _like(state)
    for key, value in state.items():
        if not isinstance(value, torch.ScriptObject) or not key.endswith(".param"):
            out[key] = value
            continue
        (kind, tensors, _doubles, longs, packed), _cls = value.__getstate__()
        if kind != "quantized_dynamic" or len(packed) != 2 or len(tensors) != 2:
            raise QuantizationError(f"cannot save {key}: unsupported RNN cell params {kind!r}")
        # torch packs each weight with its bias (b_ih, b_hh), as in ao.nn.quantized.dynamic.LSTM
        w_ih, _ = torch.ops.quantized.linear_unpack(packed[0])
        w_hh, _ = torch.ops.quantized.linear_unpack(packed[1])
        parts = (w_ih, w_hh, tensors[0], tensors[1], torch.tensor(bool(longs[0])))
        out.update({f"{key}.{name}": v for name, v in zip(_CELL_PARTS, parts, strict=True)})
    return out


def packed_state_dict(state: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`plain_state_dict`: cell-params objects rebuilt from tensors."""
    out = _like(state)
    cells: dict[str, dict[str, Any]] = {}
    for key, value in state.items():
        base, _, name = key.rpartition(".")
        if name in _CELL_PARTS and base.endswith(".param"):
            cells.setdefault(base, {})[name] = value
        else:
            out[key] = value
    for base, parts in cells.items():
        if set(parts) != set(_CELL_PARTS):
            out.update({f"{base}.{n}": v for n, v in parts.items()})  # reported as unexpected
            continue
        out[base] = torch.ops.quantized.make_quantized_cell_params_dynamic(
            torch.ops.quantized.linear_prepack(parts["w_ih"], parts["b_ih"]),
            torch.ops.quantized.linear_prepack(parts["w_hh"], parts["b_hh"]),
            parts["b_ih"],
            parts["b_hh"],
            bool(parts["reduce_range"]),
        )
    return out


def _shape(value: Any) -> Any:
    """Shape of a state-dict entry; packed params are (weight, bias) tuples."""
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    if isinstance(value, tuple | list):
        return tuple(_shape(v) for v in value)
    return None
