"""Charts for the dashboards, drawn from :mod:`inc_flow.record.rows` rows as inline SVG strings.

Matplotlib's object API only (no pyplot state, Agg-safe on machines without a display);
text stays text (``svg.fonttype: none``) and ids are salted per figure, so several charts
sit in one HTML page without clashing.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import matplotlib
import pandas as pd
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from inc_flow import palette

STATE_COLORS = palette.STATE  # one colour per meaning, shared with the run's PNG plots
INT8, FP32, NONE = palette.INT8, palette.FP32, palette.NO_PLAN
MARKERS = {"pruned": "X", "duplicate": "s"}  # else a dot
NOT_TIMED = "not timed"
_RC = {"svg.fonttype": "none", "font.size": 9, "axes.spines.top": False}
_F = TypeVar("_F", bound=Callable[..., Any])


def _styled(func: _F) -> _F:
    """Draw and save under the dashboards' rc settings, leaving the global ones alone."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with matplotlib.rc_context(_RC):
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def to_svg(fig: Figure) -> str:
    """The figure as an ``<svg>`` element (no XML prolog, no metadata)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg") :]


def _figure(width: float, height: float) -> tuple[Figure, Any]:
    fig = Figure(figsize=(width, height))
    return fig, fig.subplots()


@_styled
def scatter_chart(data: dict[str, Any]) -> str | None:
    """Accuracy x latency: trials by state, Pareto front, fp32 point, target line, best;
    trials with an accuracy but no latency (``untimed``: pruned) in a strip at the right."""
    points, untimed = data["points"], data.get("untimed", [])
    if not points and not untimed:
        return None
    fig, ax = _figure(7.5, 4.2)
    for state in STATE_COLORS:
        pts = [p for p in points if p["state"] == state]
        if pts:
            ax.scatter(
                [p["latency_ms"] for p in pts], [p["accuracy"] for p in pts], s=28,
                color=STATE_COLORS[state], marker=MARKERS.get(state, "o"), label=state, zorder=3,
            )  # fmt: skip
    for p in points:
        ax.annotate(
            str(p["trial"]),
            (p["latency_ms"], p["accuracy"]),
            fontsize=7,
            xytext=(3, 3),
            textcoords="offset points",
            color=palette.ANNOTATION,
        )
    front = data["pareto"]
    if front:
        ax.plot(
            [p["latency_ms"] for p in front], [p["accuracy"] for p in front], ds="steps-post",
            color=palette.PARETO, lw=1.2, marker="s", ms=9, mfc="none", label="Pareto front",
            zorder=2,
        )  # fmt: skip
    best = [p for p in points if p["best"]]
    if best:
        b = best[0]
        ax.scatter(
            b["latency_ms"],
            b["accuracy"],
            s=160,
            facecolors="none",
            zorder=4,
            edgecolors=palette.BEST,
            linewidths=2.2,
            label=f"best (trial {b['trial']})",
        )
    fp32 = data["fp32"]
    if fp32 and fp32["accuracy"] is not None:
        ax.scatter(fp32["latency_ms"], fp32["accuracy"], marker="*", s=180, color=FP32,
                   label="fp32", zorder=4)  # fmt: skip
    elif fp32:
        ax.axvline(fp32["latency_ms"], color=FP32, ls=":", lw=1, label="fp32 latency")
    if data["target"] is not None:
        ax.axhline(data["target"], color=palette.TARGET, ls="--", lw=1, label="target")
    if untimed:
        _untimed_strip(ax, untimed)
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=7, ncol=2)
    return to_svg(fig)


def _untimed_strip(ax: Any, untimed: Sequence[dict[str, Any]]) -> None:
    """Trials with an accuracy and no latency, at the right edge past a dotted line."""
    lo, hi = ax.get_xlim()
    ax.set_xlim(lo, hi + 0.15 * (hi - lo))
    ys = [p["accuracy"] for p in untimed]  # points in axes coordinates do not widen the range
    bottom, top = ax.get_ylim()
    pad = 0.05 * ((max(top, *ys) - min(bottom, *ys)) or 1.0)
    ax.set_ylim(min(bottom, min(ys) - pad), max(top, max(ys)) + pad)
    ax.plot([0.93, 0.93], [0, 1], transform=ax.transAxes, color=palette.ANNOTATION, ls=":", lw=0.8)
    ax.text(0.965, 1.01, NOT_TIMED, transform=ax.transAxes, ha="center", fontsize=7)
    edge = ax.get_yaxis_transform()  # x in axes fraction, y in accuracy
    for state in dict.fromkeys(p["state"] for p in untimed):
        pts = [p for p in untimed if p["state"] == state]
        ax.scatter(
            [0.97] * len(pts), [p["accuracy"] for p in pts], s=36, transform=edge, zorder=3,
            color=palette.state_color(state), marker=MARKERS.get(state, "v"),
            label=f"{state} ({NOT_TIMED}" + (", partial accuracy)" if state == "pruned" else ")"),
        )  # fmt: skip
        for p in pts:
            ax.annotate(
                str(p["trial"]),
                (0.97, p["accuracy"]),
                xycoords=edge,
                xytext=(-10, 3),
                textcoords="offset points",
                fontsize=7,
                color=palette.ANNOTATION,
            )


@_styled
def precision_chart(
    frame: pd.DataFrame,
    op_types: dict[str, str],
    states: dict[int, str],
    best: int | None,
) -> str | None:
    """Ops x trials heatmap: int8 / fp32 / no plan; trial labels coloured by state."""
    if frame.empty or not len(frame.columns):
        return None
    codes = frame.apply(lambda col: col.map({"int8": 2, "fp32": 1}).fillna(0)).astype(int)
    n_ops, n_trials = codes.shape
    fig, ax = _figure(min(max(3 + 0.32 * n_trials, 6), 16), min(max(1.2 + 0.28 * n_ops, 2.4), 24))
    ax.imshow(codes.to_numpy(), cmap=ListedColormap([NONE, FP32, INT8]), vmin=0, vmax=2,
              aspect="auto", interpolation="nearest")  # fmt: skip
    ax.set_yticks(range(n_ops))
    ax.set_yticklabels(
        [f"{op} ({op_types[op]})" if op_types.get(op) else op for op in frame.index], fontsize=7
    )
    trials = list(frame.columns)
    ax.set_xticks(range(n_trials))
    ax.set_xticklabels([str(t) for t in trials], fontsize=7, rotation=90 if n_trials > 30 else 0)
    for label, trial in zip(ax.get_xticklabels(), trials, strict=True):
        label.set_color(STATE_COLORS.get(states.get(trial, ""), "#333333"))
    if best in trials:
        col = trials.index(best)
        ax.add_patch(Rectangle((col - 0.5, -0.5), 1, n_ops, fill=False, lw=2.5, ec=palette.BEST))
    ax.set_xticks([i - 0.5 for i in range(n_trials + 1)], minor=True)
    ax.set_yticks([i - 0.5 for i in range(n_ops + 1)], minor=True)
    ax.grid(which="minor", color="white", lw=0.8)
    ax.tick_params(which="minor", length=0)
    ax.set_xlabel("trial (label colour = state; box = best)")
    handles = [Patch(color=INT8, label="int8"), Patch(color=FP32, label="fp32")]
    if (codes == 0).any().any():
        handles.append(Patch(color=NONE, label="no plan"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=7)
    return to_svg(fig)


@_styled
def op_stats_chart(rows: Sequence[dict[str, Any]]) -> str | None:
    """Stacked bars per op type: INT8 and FP32 counts."""
    if not rows:
        return None
    names = [str(r["Op Type"]) for r in rows][::-1]
    int8 = [int(r.get("INT8") or 0) for r in rows][::-1]
    fp32 = [int(r.get("FP32") or 0) for r in rows][::-1]
    fig, ax = _figure(6.5, max(1.5, 0.32 * len(rows) + 0.8))
    ax.barh(names, int8, color=INT8, label="INT8")
    ax.barh(names, fp32, left=int8, color=FP32, label="FP32")
    ax.set_xlabel("ops")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=7)
    return to_svg(fig)


@_styled
def time_chart(rows: Sequence[dict[str, Any]]) -> str | None:
    """Horizontal bars of the recorded parts of the tuning time (the wall time excluded)."""
    parts = [r for r in rows if r["recorded"] and r["metric"] != "tuning_wall_time_s"]
    if not parts:
        return None
    fig, ax = _figure(6.5, 0.35 * len(parts) + 0.9)
    names = [r["part"] for r in parts][::-1]
    seconds = [r["seconds"] for r in parts][::-1]
    ax.barh(names, seconds, color=palette.TIME)
    for y, s in enumerate(seconds):
        ax.annotate(f"{s:.2f} s", (s, y), xytext=(3, 0), textcoords="offset points",
                    va="center", fontsize=7)  # fmt: skip
    ax.set_xlabel("seconds")
    return to_svg(fig)


@_styled
def compare_latency_chart(rows: Sequence[dict[str, Any]]) -> str | None:
    """Per study: fp32 latency next to the best int8 latency (ms)."""
    rows = [r for r in rows if r["fp32_latency_ms"] is not None]
    if not rows:
        return None
    fig, ax = _figure(7.5, 0.55 * len(rows) + 1.0)
    ys = range(len(rows))
    ax.barh([y + 0.2 for y in ys], [r["fp32_latency_ms"] for r in rows], height=0.4,
            color=FP32, label="fp32")  # fmt: skip
    best = [r["best_latency_ms"] or 0.0 for r in rows]
    ax.barh([y - 0.2 for y in ys], best, height=0.4, color=INT8, label="best int8")
    for y, r in zip(ys, rows, strict=True):
        note = f"x{r['speedup']:.2f}" if r["speedup"] else "no passing plan"
        ax.annotate(note, (r["best_latency_ms"] or 0.0, y - 0.2), xytext=(3, 0),
                    textcoords="offset points", va="center", fontsize=7)  # fmt: skip
    ax.set_yticks(list(ys))
    ax.set_yticklabels([r["label"] for r in rows], fontsize=8)
    ax.invert_yaxis()
    values = [v for r in rows for v in (r["fp32_latency_ms"], r["best_latency_ms"]) if v]
    if max(values) > 20 * min(values):  # models of very different cost: keep all visible
        ax.set_xscale("log")
    ax.set_xlabel("latency (ms)" + (", log scale" if ax.get_xscale() == "log" else ""))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=7)
    return to_svg(fig)


@_styled
def compare_scatter_chart(points: Sequence[dict[str, Any]]) -> str | None:
    """Every scored trial of every study: speed-up over fp32 x relative accuracy drop."""
    if not points:
        return None
    fig, ax = _figure(7.5, 4.2)
    labels = list(dict.fromkeys(p["label"] for p in points))
    palette = matplotlib.colormaps["tab10"]
    for i, label in enumerate(labels):
        pts = [p for p in points if p["label"] == label]
        color = palette(i % 10)
        ax.scatter([p["speedup"] for p in pts], [100 * p["relative_drop"] for p in pts],
                   s=24, color=color, label=label, alpha=0.8)  # fmt: skip
        for p in pts:
            if p["best"]:
                ax.scatter(p["speedup"], 100 * p["relative_drop"], s=150, facecolors="none",
                           edgecolors=color, linewidths=2)  # fmt: skip
    ax.axvline(1.0, color="black", ls=":", lw=1)
    ax.set_xlabel("speed-up over fp32 (x)")
    ax.set_ylabel("relative accuracy drop (%)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=7)
    return to_svg(fig)
