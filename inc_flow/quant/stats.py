"""INC's "Mixed Precision Statistics" table: op type x Total / INT8 / FP32."""

from __future__ import annotations

from typing import Any

import pandas as pd

COLUMNS = ["Op Type", "Total", "INT8", "FP32"]


def statistics_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows from `graph.op_statistics` as a DataFrame in INC's column order."""
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
    """(int8 ops, fp32 ops), not counting quantize/dequantize glue."""
    core = frame[
        ~frame["Op Type"].isin(["quantize_per_tensor", "quantize_per_channel", "dequantize"])
    ]
    return int(core["INT8"].sum()), int(core["FP32"].sum())
