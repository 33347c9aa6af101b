"""Study plots for the parent run: optimization history, accuracy x latency (fp32 point,
target line, Pareto front) and the param importances. Data comes from the records, the
Pareto front from :mod:`inc_flow.record.rows` and the importances from
:mod:`inc_flow.search.importance`; this module only draws."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display here or on CI
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402

from inc_flow.record import keys as k  # noqa: E402
from inc_flow.record.rows import COMPLETED, pareto_front  # noqa: E402
from inc_flow.search.importance import param_importances  # noqa: E402
from inc_flow.search.records import TuneResult  # noqa: E402
from inc_flow.vocab import TrialState  # noqa: E402

_COLORS = {
    TrialState.PASSED: "tab:green",
    TrialState.FAILED: "tab:red",
    TrialState.PRUNED: "tab:orange",
}


def study_plots(result: TuneResult, out_dir: Path) -> list[Path]:
    """Write the plots as PNG files into ``out_dir``; returns their paths."""
    paths = [_history(result, out_dir / k.PLOT_HISTORY)]
    scatter = _accuracy_latency(result, out_dir / k.PLOT_ACCURACY_LATENCY)
    if scatter is not None:
        paths.append(scatter)
    importances = param_importances(result)
    if importances:
        paths.append(_importances(importances, out_dir / k.PLOT_IMPORTANCES))
    return paths


def _history(result: TuneResult, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    best = None
    xs, ys = [], []
    for r in result.records:
        if r.latency_ms is None:
            continue
        ax.scatter(r.number, r.latency_ms, color=_COLORS.get(r.state, "tab:gray"), s=25)
        if r.passed and (best is None or r.latency_ms < best):
            best = r.latency_ms
        if best is not None:
            xs.append(r.number)
            ys.append(best)
    if xs:
        ax.step(xs, ys, where="post", color="tab:green", label="best passing latency")
    ax.axhline(result.baseline_latency_ms, color="black", ls="--", lw=1, label="fp32 latency")
    ax.set_xlabel("trial")
    ax.set_ylabel("latency (ms)")
    ax.set_title("Optimization history (green: passed, red: missed the target)")
    return _save(ax, path)


def _accuracy_latency(result: TuneResult, path: Path) -> Path | None:
    pts = [r for r in result.records if r.accuracy is not None and r.latency_ms is not None]
    if not pts or result.baseline_accuracy is None:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in pts:
        ax.scatter(r.latency_ms, r.accuracy, color=_COLORS.get(r.state, "tab:gray"), s=25)
    # Pruned accuracies are partial-evaluation values: only completed trials form the front.
    completed = [r for r in pts if r.state in COMPLETED]
    front = pareto_front([{"accuracy": r.accuracy, "latency_ms": r.latency_ms} for r in completed])
    ax.plot(
        [p["latency_ms"] for p in front], [p["accuracy"] for p in front], color="tab:blue", lw=1,
        label="Pareto front",
    )  # fmt: skip
    ax.scatter(
        result.baseline_latency_ms, result.baseline_accuracy, marker="*", s=150,
        color="black", label="fp32",
    )  # fmt: skip
    if result.required_accuracy is not None:
        ax.axhline(result.required_accuracy, color="tab:red", ls="--", lw=1, label="target")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("accuracy")
    ax.set_title("Accuracy x latency per trial")
    return _save(ax, path)


def _save(ax: Axes, path: Path) -> Path:
    ax.legend(loc="best", fontsize=8)
    ax.figure.tight_layout()
    ax.figure.savefig(path, dpi=90)
    plt.close(ax.figure)
    return path


def _importances(importances: dict[str, float], path: Path) -> Path:
    """Horizontal bars, most important on top, laid out as Optuna's own importance plot."""
    names, values = list(reversed(importances)), list(reversed(importances.values()))
    with plt.style.context("ggplot"):
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.set_title("Hyperparameter Importances", loc="left")
        ax.set_xlabel("Hyperparameter Importance")
        ax.set_ylabel("Hyperparameter")
        ax.barh(range(len(names)), values, height=0.8, align="center", label="Objective Value")
        for i, value in enumerate(values):
            ax.text(value, i, f"{value:.2f}" if value >= 0.01 else "<0.01", va="center")
        ax.set_xlim(right=max(values, default=0.0) * 1.15 or 1.0)
        ax.set_yticks(range(len(names)), names)
        return _save(ax, path)
