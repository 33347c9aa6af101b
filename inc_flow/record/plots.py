"""Study plots for the parent run: optimization history, accuracy x latency (fp32 point,
target line, Pareto front, best trial) and the fANOVA param importances. Data comes from the
records, the Pareto front from :mod:`inc_flow.record.rows` and the importances from
:mod:`inc_flow.search.importance`; colours from :mod:`inc_flow.palette`. This module only
draws: each ``*_figure`` returns a matplotlib ``Figure`` (object API, no pyplot state) and
:func:`study_plots` saves them.

Trials with no latency (pruned: evaluation stopped once the target was out of reach; or a
miss that was never timed) cannot sit on a latency axis: they are drawn in a strip at the
bottom of the history and at the right edge of the accuracy x latency plot, with their own
marker and legend entry, so every trial is visible.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from inc_flow import palette
from inc_flow.record import keys as k
from inc_flow.record.rows import COMPLETED, pareto_front
from inc_flow.search.importance import Importances, param_importances
from inc_flow.search.records import TrialRecord, TuneResult
from inc_flow.vocab import TrialState

NOT_TIMED = "not timed"
MARKERS = {TrialState.PRUNED.value: "X", TrialState.DUPLICATE.value: "s"}  # else a dot


def study_plots(result: TuneResult, out_dir: Path) -> list[Path]:
    """Write the plots as PNG files into ``out_dir``; returns their paths."""
    paths = [_save(history_figure(result), out_dir / k.PLOT_HISTORY)]
    scatter = accuracy_latency_figure(result)
    if scatter is not None:
        paths.append(_save(scatter, out_dir / k.PLOT_ACCURACY_LATENCY))
    importances = param_importances(result)
    if importances:
        paths.append(_save(importances_figure(importances), out_dir / k.PLOT_IMPORTANCES))
    return paths


def _label(state: str, timed: bool) -> str:
    return state if timed else f"{state} ({NOT_TIMED})"


def _by_state(records: Sequence[TrialRecord]) -> dict[str, list[TrialRecord]]:
    out: dict[str, list[TrialRecord]] = {}
    for r in records:
        out.setdefault(str(r.state), []).append(r)
    return out


def history_figure(result: TuneResult) -> Figure:
    """Latency per trial by state, best passing latency so far, fp32 latency, best trial;
    trials without a latency in a strip along the bottom."""
    fig = Figure(figsize=(7.5, 4.2), layout="constrained")
    ax = fig.subplots()
    timed = [r for r in result.records if r.latency_ms is not None]
    for state, rs in _by_state(timed).items():
        ax.scatter(
            [r.number for r in rs], [r.latency_ms for r in rs], s=28, label=_label(state, True),
            color=palette.state_color(state), marker=MARKERS.get(state, "o"), zorder=3,
        )  # fmt: skip
    untimed = [r for r in result.records if r.latency_ms is None]
    strip = ax.get_xaxis_transform()  # x in trial numbers, y in axes fraction
    for state, rs in _by_state(untimed).items():
        ax.scatter(
            [r.number for r in rs], [0.03] * len(rs), s=36, transform=strip, zorder=3,
            color=palette.state_color(state), marker=MARKERS.get(state, "v"),
            label=_label(state, False),
        )  # fmt: skip
    if untimed:  # the strip does not widen the axis by itself
        lo, hi = ax.get_xlim()
        numbers = [r.number for r in untimed]
        ax.set_xlim(min(lo, min(numbers) - 0.5), max(hi, max(numbers) + 0.5))
    best, xs, ys = None, [], []
    for r in sorted(timed, key=lambda r: r.number):
        if r.passed and (best is None or r.latency_ms < best):
            best = r.latency_ms
        if best is not None:
            xs.append(r.number)
            ys.append(best)
    if xs:
        ax.step(xs, ys, where="post", color=palette.BEST, lw=1.5, label="best passing so far")
    _mark_best(ax, result, lambda r: (r.number, r.latency_ms))
    ax.axhline(result.baseline_latency_ms, color=palette.FP32, ls="--", lw=1, label="fp32")
    ax.set_xlabel("trial")
    ax.set_ylabel("latency (ms)")
    ax.set_title("Optimization history")
    return fig


def _mark_best(ax: Axes, result: TuneResult, xy) -> None:
    best = result.best
    if best is None or best.latency_ms is None:
        return
    x, y = xy(best)
    ax.scatter(x, y, s=180, facecolors="none", edgecolors=palette.BEST, linewidths=2.2,
               label=f"best (trial {best.number})", zorder=4)  # fmt: skip


def accuracy_latency_figure(result: TuneResult) -> Figure | None:
    """Accuracy x latency: trials by state with their numbers, the Pareto front of fully
    evaluated trials, fp32, the target and the best trial; trials with an accuracy but no
    latency (pruned: a partial accuracy) at the right edge. None without any accuracy."""
    scored = [r for r in result.records if r.accuracy is not None]
    if not scored or result.baseline_accuracy is None:
        return None
    fig = Figure(figsize=(7.5, 4.4), layout="constrained")
    ax = fig.subplots()
    timed = [r for r in scored if r.latency_ms is not None]
    for state, rs in _by_state(timed).items():
        ax.scatter(
            [r.latency_ms for r in rs], [r.accuracy for r in rs], s=28, zorder=3,
            color=palette.state_color(state), marker=MARKERS.get(state, "o"),
            label=_label(state, True),
        )  # fmt: skip
    for r in timed:
        ax.annotate(str(r.number), (r.latency_ms, r.accuracy), xytext=(3, 3), fontsize=7,
                    textcoords="offset points", color=palette.ANNOTATION)  # fmt: skip
    # Pruned accuracies are partial-evaluation values: only completed trials form the front.
    completed = [r for r in timed if r.state in COMPLETED]
    front = pareto_front([{"accuracy": r.accuracy, "latency_ms": r.latency_ms} for r in completed])
    if front:
        ax.plot([p["latency_ms"] for p in front], [p["accuracy"] for p in front], lw=1.2,
                color=palette.PARETO, label="Pareto front", zorder=2)  # fmt: skip
    _mark_best(ax, result, lambda r: (r.latency_ms, r.accuracy))
    ax.scatter(result.baseline_latency_ms, result.baseline_accuracy, marker="*", s=160,
               color=palette.FP32, label="fp32", zorder=4)  # fmt: skip
    if result.required_accuracy is not None:
        ax.axhline(result.required_accuracy, color=palette.TARGET, ls="--", lw=1, label="target")
    edge = ax.get_yaxis_transform()  # x in axes fraction, y in accuracy
    untimed = [r for r in scored if r.latency_ms is None]
    if untimed:  # room on the right for them, past a dotted line; their accuracies in range
        lo, hi = ax.get_xlim()
        ax.set_xlim(lo, hi + 0.15 * (hi - lo))
        _include(ax, [r.accuracy for r in untimed])
        ax.plot([0.93, 0.93], [0, 1], transform=ax.transAxes, color=palette.ANNOTATION, ls=":",
                lw=0.8)  # fmt: skip
        ax.text(0.965, 1.01, NOT_TIMED, transform=ax.transAxes, ha="center", fontsize=7)
    for state, rs in _by_state(untimed).items():
        ax.scatter(
            [0.97] * len(rs), [r.accuracy for r in rs], s=36, transform=edge, zorder=3,
            color=palette.state_color(state), marker=MARKERS.get(state, "v"),
            label=_label(state, False) + (", partial accuracy" if state == "pruned" else ""),
        )  # fmt: skip
        for r in rs:
            ax.annotate(
                str(r.number),
                (0.97, r.accuracy),
                xycoords=edge,
                xytext=(-10, 3),
                textcoords="offset points",
                fontsize=7,
                color=palette.ANNOTATION,
            )
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("accuracy")
    ax.set_title("Accuracy x latency per trial (numbers: trial)")
    return fig


def _include(ax: Axes, ys: Sequence[float]) -> None:
    """Widen the y range to hold ``ys`` (points drawn in axes coordinates do not)."""
    lo, hi = ax.get_ylim()
    pad = 0.05 * ((max(hi, *ys) - min(lo, *ys)) or 1.0)
    ax.set_ylim(min(lo, min(ys) - pad), max(hi, max(ys)) + pad)


def importances_figure(importances: Sequence[Importances]) -> Figure:
    """One panel per target: horizontal bars, most important on top, titled with the
    evaluator, the target and the number of trials."""
    n = len(importances)
    height = max(2.4, 0.9 + 0.35 * max(len(i.values) for i in importances))
    fig = Figure(figsize=(6.0 * n, height), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, imp in zip(axes, importances, strict=True):
        names, values = list(reversed(imp.values)), list(reversed(imp.values.values()))
        ax.barh(range(len(names)), values, height=0.7, color=palette.IMPORTANCE)
        for i, value in enumerate(values):
            ax.text(value, i, f" {value:.2f}" if value >= 0.01 else " <0.01", va="center",
                    fontsize=8)  # fmt: skip
        ax.set_xlim(0, max(max(values, default=0.0) * 1.2, 0.1))
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.set_xlabel(f"importance for {imp.target}")
        ax.set_title(f"{imp.evaluator} importance: {imp.target} ({imp.n_trials} trials)",
                     fontsize=10, loc="left")  # fmt: skip
    return fig


def _save(fig: Figure, path: Path) -> Path:
    for ax in fig.axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize=7)
    fig.savefig(path, dpi=90)
    return path


__all__ = ["accuracy_latency_figure", "history_figure", "importances_figure", "study_plots"]
