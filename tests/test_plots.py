"""Study plots and what they draw from (issue 17 B): fANOVA importances per target, the
study's metric names, pruned / untimed trials drawn, the best trial and labels, compute-only
op counts, one colour per meaning, and the known warnings filtered at their source."""

from __future__ import annotations

import math
import warnings

import optuna
import pytest
import torch
import torch.nn.functional as F
from matplotlib.collections import PathCollection
from torch import nn

from dashboards import charts
from examples.lenet.model import LeNet
from inc_flow import palette
from inc_flow.quant.graph import calibrate, convert, list_ops, prepare
from inc_flow.quant.stats import COMPUTE_OP_TYPES, op_counts, op_statistics, statistics_frame
from inc_flow.record import plots
from inc_flow.record.plots import (
    accuracy_latency_figure,
    history_figure,
    importances_figure,
    study_plots,
)
from inc_flow.search.importance import Importances, fanova, param_importances
from inc_flow.search.plan import Plan, default_plan
from inc_flow.search.records import TrialRecord, TuneResult
from inc_flow.search.settings import TuneSettings, name_metrics
from inc_flow.vocab import Approach, Objective, Strategy
from tests.fakes import run

pytestmark = pytest.mark.no_mlflow

PLAN = Plan(ops=())


# --- fANOVA importances -----------------------------------------------------------------


def _synthetic_study() -> optuna.Study:
    """``driver`` sets the objective, ``noise`` barely moves it, ``fixed`` never varies
    (though its distribution has two choices), ``acc`` sets a second value only."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    dist = {
        "driver": optuna.distributions.CategoricalDistribution(["x86", "onednn"]),
        "noise": optuna.distributions.FloatDistribution(0.0, 1.0),
        "fixed": optuna.distributions.CategoricalDistribution(["minmax", "kl"]),
        "acc": optuna.distributions.CategoricalDistribution(["a", "b"]),
    }
    for i in range(16):
        params = {
            "driver": "x86" if i % 2 else "onednn",
            "noise": (i * 0.37) % 1.0,
            "fixed": "minmax",
            "acc": "a" if (i // 2) % 2 else "b",
        }
        value = 1.5 + (9.0 if params["driver"] == "onednn" else 0.0) + 0.05 * params["noise"]
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dist, value=value))
    return study


def test_fanova_ranks_the_param_that_drives_the_objective_and_skips_constant_ones():
    study = _synthetic_study()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no evaluator note, no experimental warning
        imp = fanova(study, lambda t: t.value, "latency (ms)")
    assert imp is not None and imp.evaluator == "fANOVA" and imp.n_trials == 16
    assert list(imp.values)[0] == "driver" and imp.values["driver"] > 0.8
    assert "fixed" not in imp.values  # never varied: not assessed at all
    assert math.isclose(sum(imp.values.values()), 1.0, rel_tol=1e-6)
    # Optuna 5's default (PED-ANOVA) is what the plot must not be: it ranks differently.
    pedanova = optuna.importance.PedAnovaImportanceEvaluator()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        default = optuna.importance.get_param_importances(study, evaluator=pedanova)
    assert "fixed" in default  # it assesses params that never varied


def test_fanova_target_other_than_the_objective():
    study = _synthetic_study()
    acc = fanova(study, lambda t: 0.9 if t.params["acc"] == "a" else 0.7, "accuracy")
    assert acc is not None and list(acc.values)[0] == "acc" and acc.target == "accuracy"
    assert fanova(study, lambda t: math.nan, "accuracy") is None  # no trial has the target


def test_study_importances_for_latency_and_accuracy(tmp_path, recwarn, monkeypatch):
    """A fake study on SQLite: its metric names are set, and fANOVA ranks ``conv2`` (the
    only op that costs accuracy) first for the accuracy target."""
    result, _, _ = run(
        {"conv2": 0.05}, workspace=str(tmp_path), max_trials=6, timeout=600, study_name="imp"
    )
    study = optuna.load_study(study_name="imp", storage=result.storage)
    assert study.metric_names == ["latency (ms)"]
    importances = param_importances(result)
    assert [i.target for i in importances] == ["latency (ms)", "accuracy"]
    assert list(importances[1].values)[0] == "op:conv2"
    assert all(i.evaluator == "fANOVA" for i in importances)
    assert "weight_granularity" not in importances[0].values  # never varied in this study
    noise = [str(w.message) for w in recwarn]
    assert not [m for m in noise if "target" in m or "experimental" in m.lower()], noise
    monkeypatch.setattr(plots, "param_importances", lambda _: importances)  # computed once
    paths = study_plots(result, tmp_path)
    assert {p.name for p in paths} == {
        "optimization_history.png",
        "accuracy_vs_latency.png",
        "param_importances.png",
    }


@pytest.mark.parametrize(
    ("kw", "names"),
    [
        ({}, ["latency (ms)"]),
        ({"strategy": Strategy.MULTI_OBJECTIVE}, ["accuracy", "latency (ms)"]),
        ({"objective": Objective.ACCURACY}, ["accuracy"]),
        ({"objective": Objective.MODELSIZE}, ["model size (bytes)"]),
    ],
)
def test_metric_names_follow_the_directions(kw, names, recwarn):
    settings = TuneSettings(**kw)
    assert settings.metric_names() == names
    assert len(names) == len(settings.directions())
    study = optuna.create_study(directions=settings.directions())
    name_metrics(study, settings)
    assert study.metric_names == names
    assert not recwarn.list  # Optuna's ExperimentalWarning stays inside


def test_importances_figure_names_evaluator_and_target():
    fig = importances_figure(
        [
            Importances("latency (ms)", {"backend": 0.8, "act": 0.2}, n_trials=12),
            Importances("accuracy", {"act": 0.6, "backend": 0.4}, n_trials=12),
        ]
    )
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert titles == [
        "fANOVA importance: latency (ms) (12 trials)",
        "fANOVA importance: accuracy (12 trials)",
    ]
    first = fig.axes[0]
    assert [t.get_text() for t in first.get_yticklabels()] == ["act", "backend"]  # top: most
    assert [round(b.get_width(), 2) for b in first.patches] == [0.2, 0.8]
    assert first.get_xlabel() == "importance for latency (ms)"


# --- history and Pareto plots ------------------------------------------------------------


def _result() -> TuneResult:
    recs = (
        TrialRecord(0, PLAN, "failed", accuracy=0.70, latency_ms=2.0),
        TrialRecord(1, PLAN, "pruned", accuracy=0.40),  # stopped early: never timed
        TrialRecord(2, PLAN, "passed", accuracy=0.79, latency_ms=3.0),
        TrialRecord(3, PLAN, "passed", accuracy=0.80, latency_ms=2.5),
        TrialRecord(4, PLAN, "duplicate", accuracy=0.80, latency_ms=2.5, duplicate_of=3),
        TrialRecord(5, PLAN, "error", failure_reason="boom"),
    )
    return TuneResult(
        best=recs[3], best_model=None, baseline_accuracy=0.81, baseline_latency_ms=6.0,
        required_accuracy=0.78, records=recs, pareto=(), slower_than_fp32=False, closest=None,
        closest_miss=None, n_trials=6, calibration_passes=1, wall_time_s=1.0,
        study_name="s", storage=":memory:", stop_reason="max_trials",
    )  # fmt: skip


def _collections(ax) -> dict[str, PathCollection]:
    return {c.get_label(): c for c in ax.collections}


def test_history_draws_pruned_trials_distinctly():
    ax = history_figure(_result()).axes[0]
    drawn = _collections(ax)
    assert set(drawn) == {
        "failed", "passed", "duplicate", "pruned (not timed)", "error (not timed)",
        "best (trial 3)",
    }  # fmt: skip
    pruned = drawn["pruned (not timed)"]
    assert pruned.get_offsets().tolist() == [[1.0, 0.03]]  # at trial 1, in the bottom strip
    assert tuple(pruned.get_facecolor()[0][:3]) != tuple(drawn["failed"].get_facecolor()[0][:3])
    assert pruned.get_paths()[0] != drawn["passed"].get_paths()[0]  # its own marker
    assert drawn["best (trial 3)"].get_offsets().tolist() == [[3.0, 2.5]]
    assert ax.get_xlim()[1] > 5  # the error trial 5, drawn in the strip, is inside
    assert ax.get_ylabel() == "latency (ms)" and ax.get_title() == "Optimization history"
    best_line = next(li for li in ax.lines if li.get_label() == "best passing so far")
    assert best_line.get_ydata().tolist() == [3.0, 2.5, 2.5]


def test_accuracy_latency_draws_pruned_trials_labels_and_the_best():
    fig = accuracy_latency_figure(_result())
    assert fig is not None
    ax = fig.axes[0]
    drawn = _collections(ax)
    pruned = drawn["pruned (not timed), partial accuracy"]
    assert pruned.get_offsets().tolist() == [[0.97, 0.40]]  # right edge, its accuracy
    assert drawn["best (trial 3)"].get_offsets().tolist() == [[2.5, 0.80]]
    assert drawn["fp32"].get_offsets().tolist() == [[6.0, 0.81]]
    numbers = {t.get_text() for t in ax.texts} | {a.get_text() for a in ax.texts}
    assert {"0", "1", "2", "3", "4", "not timed"} <= numbers
    front = next(li for li in ax.lines if li.get_label() == "Pareto front")
    assert front.get_xdata().tolist() == [2.0, 2.5]  # the pruned 0.40 is not on it
    target = next(li for li in ax.lines if li.get_label() == "target")
    assert target.get_color() == palette.TARGET
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("latency (ms)", "accuracy")
    assert ax.get_xlim()[1] > 6.0  # the fp32 point is inside, the strip past it
    assert ax.get_ylim()[0] < 0.40 < 0.81 < ax.get_ylim()[1]  # the pruned trial is visible


def test_report_scatter_draws_untimed_trials_and_the_best():
    points = [
        {"trial": 0, "state": "passed", "accuracy": 0.8, "latency_ms": 2.0, "best": True},
        {"trial": 2, "state": "failed", "accuracy": 0.7, "latency_ms": 1.0, "best": False},
    ]
    data = {
        "points": points,
        "untimed": [
            {"trial": 1, "state": "pruned", "accuracy": 0.5, "latency_ms": None, "best": False}
        ],
        "fp32": {"accuracy": 0.81, "latency_ms": 5.0},
        "target": 0.78,
        "pareto": points[:1],
    }
    svg = charts.scatter_chart(data)
    assert "pruned (not timed, partial accuracy)" in svg and "best (trial 0)" in svg
    assert palette.STATE["pruned"] in svg and palette.FP32 in svg


def test_one_colour_per_meaning():
    colours = list(palette.MEANINGS.values())
    assert len(set(colours)) == len(colours), palette.MEANINGS
    assert charts.FP32 == palette.FP32 != charts.STATE_COLORS["pruned"]
    assert charts.INT8 != charts.STATE_COLORS["passed"]


# --- op counts on a real FX model ----------------------------------------------------------


def test_op_counts_count_compute_ops_only():
    """LeNet converts its functional dropout to ``quantized.dropout`` and adds quantize /
    dequantize glue: none of them is an INT8 op, so the count equals the plan's."""
    torch.manual_seed(0)
    model, x = LeNet().eval(), torch.randn(4, 1, 28, 28)
    plan = default_plan(list_ops(model))
    prepared = prepare(model, plan.calibration_plan(), (x,))
    calibrate(prepared, [x], 4, lambda m, b: (m(b), b.shape[0])[1])
    rows = op_statistics(convert(prepared, plan))
    types = {r["Op Type"] for r in rows}
    assert "dropout" not in types and {"quantize_per_tensor", "dequantize"} <= types
    assert op_counts(statistics_frame(rows)) == (len(plan.int8_ops), 0) == (4, 0)
    fallback = plan.with_fallback({"fc1"})
    rows = op_statistics(convert(prepared, fallback))
    assert op_counts(statistics_frame(rows)) == (len(fallback.int8_ops), 1) == (3, 1)
    assert {"Conv2d", "Linear", "LinearReLU", "LSTM"} <= COMPUTE_OP_TYPES
    assert not {"dropout", "dequantize", "add", "QFunctional"} & COMPUTE_OP_TYPES


# --- known warnings filtered at their source ----------------------------------------------


class _Rnn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 8, batch_first=True)
        self.fc = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return F.log_softmax(self.fc(out[:, -1]), dim=1)


def test_dynamic_lstm_convert_is_quiet(recwarn):
    """torch builds the reference LSTM with torch.tensor(tensor): 2 UserWarnings per
    convert, filtered by their message and module in inc_flow.quant.ao.quiet."""
    dynamic = Approach.DYNAMIC.value
    model, x = _Rnn().eval(), torch.randn(2, 5, 4)
    plan = default_plan(list_ops(model, dynamic), approach=dynamic)
    convert(prepare(model, plan.calibration_plan(), (x,)), plan)
    assert not [w for w in recwarn if "copy construct" in str(w.message)]
    with pytest.warns(UserWarning, match="To copy construct from a tensor"):
        torch.tensor(torch.ones(1))  # the message itself still shows elsewhere
