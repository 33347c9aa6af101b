"""Facts about a built model: INC's "Mixed Precision Statistics" (op type x Total / INT8 /
FP32), counted from the model and formatted as INC prints it, and its serialized size.

The table shows compute ops and, as INC does, the quantize/dequantize glue; dropout (an
identity at inference, though FX converts it to ``quantized.dropout``) is left out.
:func:`op_counts` counts compute ops only (the module types a plan op becomes), so the
``int8_ops`` metric equals the plan's ``n_int8_ops`` param."""

from __future__ import annotations

import io
from typing import Any

import pandas as pd
import torch
from torch import nn

from inc_flow.quant.ao import INT8_COMPUTE_TYPES, DeQuantize, Quantize, quiet
from inc_flow.quant.mapping import DYNAMIC_TYPES, STATIC_TYPES, quantizable_types
from inc_flow.vocab import Approach

COLUMNS = ["Op Type", "Total", "INT8", "FP32"]
GLUE = ("quantize_per_tensor", "quantize_per_channel", "dequantize")
NOT_OPS = ("dropout",)  # quantized.* functions that are no op at inference: not in the table


def _with_subclasses(cls: type) -> set[type]:
    out = {cls}
    for sub in cls.__subclasses__():
        out |= _with_subclasses(sub)
    return out


# Op types a plan op shows as: the float types, their int8 modules and fused variants
# (ConvReLU2d, LinearReLU, ...). Anything else in the table (glue, add, cat) is no plan op.
COMPUTE_OP_TYPES: frozenset[str] = frozenset(
    c.__name__
    for base in (*INT8_COMPUTE_TYPES, *STATIC_TYPES, *DYNAMIC_TYPES)
    for c in _with_subclasses(base)
    if not c.__name__.startswith("_")
)


def _is_int8_module(module: nn.Module) -> bool:
    return type(module).__module__.startswith(
        ("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized")
    )


def op_statistics(
    model: nn.Module, approach: Approach | str = Approach.STATIC
) -> list[dict[str, Any]]:
    """INC's Mixed Precision Statistics rows: op type, Total, INT8, FP32."""
    counts: dict[str, list[int]] = {}

    def add(op_type: str, int8: bool) -> None:
        row = counts.setdefault(op_type, [0, 0])
        row[0 if int8 else 1] += 1

    fp32_types = quantizable_types(approach)
    for _name, mod in model.named_modules():
        if isinstance(mod, torch.fx.GraphModule):
            for node in mod.graph.nodes:
                if node.op == "call_function":
                    target = str(node.target)
                    fname = getattr(node.target, "__name__", target)
                    if fname in ("quantize_per_tensor", "quantize_per_channel"):
                        add(fname, True)
                    elif target.startswith("quantized."):
                        if target.split(".")[1] not in NOT_OPS:
                            add(target.split(".")[1], True)
                elif node.op == "call_method" and node.target == "dequantize":
                    add("dequantize", True)
        elif isinstance(mod, Quantize):
            add("quantize_per_tensor", True)
        elif isinstance(mod, DeQuantize):
            add("dequantize", True)
        elif _is_int8_module(mod) and not type(mod).__name__.endswith("PackedParams"):
            add(type(mod).__name__, True)
        elif isinstance(mod, fp32_types):
            add(type(mod).__name__, False)
    return [
        {"Op Type": k, "Total": v[0] + v[1], "INT8": v[0], "FP32": v[1]} for k, v in counts.items()
    ]


def model_size(model: nn.Module) -> int:
    """Serialized state-dict size in bytes."""
    buf = io.BytesIO()
    with quiet():
        torch.save(model.state_dict(), buf)
    return buf.tell()


def statistics_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows from :func:`op_statistics` as a DataFrame in INC's column order."""
    frame = pd.DataFrame(rows, columns=COLUMNS)
    if frame.empty:
        return frame
    return frame.astype({"Total": int, "INT8": int, "FP32": int}).reset_index(drop=True)


def format_statistics(frame: pd.DataFrame) -> list[str]:
    """INC's layout, one string per log line (without the ``[INFO]`` prefix).

    The FP32 column is shown only when some op fell back, as INC users expect the
    three-column table for an all-int8 model.
    """
    show_fp32 = bool(len(frame)) and int(frame["FP32"].sum()) > 0
    cols = COLUMNS if show_fp32 else COLUMNS[:3]
    widths = [max(24, *(len(str(v)) + 2 for v in frame["Op Type"]))] if len(frame) else [24]
    widths += [8 if c == "Total" else 7 for c in cols[1:]]
    sep = "+" + "+".join("-" * w for w in widths) + "+"
    title = "Mixed Precision Statistics"
    inner = len(sep) - 2
    lines = ["|" + title.center(inner, "*") + "|", sep]
    lines.append("|" + "|".join(c.center(w) for c, w in zip(cols, widths, strict=True)) + "|")
    lines.append(sep)
    for _, row in frame.iterrows():
        cells = [str(row[c]) for c in cols]
        lines.append("|" + "|".join(v.center(w) for v, w in zip(cells, widths, strict=True)) + "|")
    lines.append(sep)
    return lines


def op_counts(frame: pd.DataFrame) -> tuple[int, int]:
    """(int8 ops, fp32 ops) over compute ops only (:data:`COMPUTE_OP_TYPES`): no
    quantize/dequantize glue, dropout or functional ops such as ``add``; for a model built
    from a plan, the int8 count is the plan's number of int8 ops."""
    if frame.empty:
        return 0, 0
    core = frame[frame["Op Type"].isin(COMPUTE_OP_TYPES)]
    return int(core["INT8"].sum()), int(core["FP32"].sum())
