"""Study plots for the parent run: optimization history, accuracy x latency (fp32 point,
target line, Pareto front) and Optuna's param importances. Data comes from the records;
this module only draws."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display here or on CI
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402

from inc_flow.record.rows import pareto_front  # noqa: E402
from inc_flow.search.records import TuneResult  # noqa: E402

logger = logging.getLogger("inc_flow")

_COLORS = {"passed": "tab:green", "failed": "tab:red", "pruned": "tab:orange"}


def study_plots(result: TuneResult, out_dir: Path) -> list[Path]:
    """Write the plots as PNG files into ``out_dir``; returns their paths."""
    paths = [_history(result, out_dir / "optimization_history.png")]
    scatter = _accuracy_latency(result, out_dir / "accuracy_vs_latency.png")
    if scatter is not None:
        paths.append(scatter)
    importance = _importances(result, out_dir / "param_importances.png")
    if importance is not None:
        paths.append(importance)
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
    completed = [r for r in pts if r.state in ("passed", "failed")]
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


def _importances(result: TuneResult, path: Path) -> Path | None:
    """Optuna's fANOVA importances of the plan params for latency; needs a few trials."""
    import optuna
    from optuna.visualization.matplotlib import plot_param_importances

    completed = [r for r in result.records if r.state in ("passed", "failed")]
    if len(completed) < 3 or result.storage == ":memory:":
        return None
    try:
        study = optuna.load_study(study_name=result.study_name, storage=result.storage)
        with warnings.catch_warnings():
            # Optuna marks its matplotlib plots experimental and notes that importances are
            # for low target values (latency: what we want).
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            warnings.filterwarnings("ignore", message="PedAnovaImportanceEvaluator computes")
            ax = plot_param_importances(study, target=lambda t: t.values[0] if t.values else 0.0)
        ax.figure.set_size_inches(7, 4)
        ax.figure.tight_layout()
        ax.figure.savefig(path, dpi=90)
        plt.close(ax.figure)
        return path
    except Exception as e:  # noqa: BLE001 - importances need variety; the others suffice
        logger.info("param importances skipped: %s", e)
        return None
