"""Rows for the study dashboards, from the MLflow record of a study (pure data, no HTML).

A :class:`StudyRuns` holds the runs of one study in the column layout of ``mlflow.search_runs``
(``metrics.x``, ``params.x``, ``tags.x``); :mod:`inc_flow.record.fetch` reads one from MLflow,
tests build one by hand. Everything here is pandas over it, with no MLflow access.
The ``inc_flow_dashboards`` package renders the rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from inc_flow.errors import TrackingError
from inc_flow.record import keys as k
from inc_flow.vocab import Approach, TrialState

COMPLETED = (TrialState.PASSED, TrialState.FAILED)  # fully evaluated: only these form the front
OP_PREFIX = k.param(k.OP_PREFIX)
# Where the time went: (part, parent-run metric). Absent metrics are "not recorded".
TIME_PARTS = (
    ("calibration", k.METRIC_TIME_CALIBRATION),
    ("convert", k.METRIC_TIME_CONVERT),
    ("evaluation", k.METRIC_TIME_EVALUATION),
    ("latency measurement", k.METRIC_TIME_LATENCY),
    ("logging", k.METRIC_TIME_LOGGING),
)
LOGGING_FALLBACK = k.METRIC_MLFLOW_LOGGING  # studies recorded before the time split
SHORT_APPROACH = {Approach.STATIC: "static", Approach.DYNAMIC: "dynamic", Approach.QAT: "qat"}


@dataclass(frozen=True)
class StudyRuns:
    """One study as MLflow recorded it.

    Attributes:
        experiment: the experiment name.
        parent: the parent run as one flat ``search_runs`` row (``run_id``, ``metrics.x`` ...).
        trials: the child runs, one row per trial, sorted by trial number.
        ops: (op param name without ``op.``, op type) in model order, from a ``plan.yaml``;
            empty when unknown (then the params' order is used and types are blank).
        best_op_table: the best trial's ``op_statistics.json`` (``{"columns", "data"}``).
    """

    experiment: str
    parent: dict[str, Any]
    trials: pd.DataFrame
    ops: tuple[tuple[str, str], ...] = ()
    best_op_table: dict[str, Any] | None = field(default=None, compare=False)

    @property
    def run_id(self) -> str:
        return str(self.parent.get("run_id", ""))

    @property
    def name(self) -> str:
        return str(_value(self.parent, k.tag(k.TAG_STUDY)) or self.run_id)


# --- selecting a study from runs (pure) ----------------------------------------------------


def parent_ids(runs: pd.DataFrame) -> list[str]:
    """Parent (study) run ids in ``runs``, oldest first."""
    col = k.tag(k.TAG_ROLE)
    if runs.empty or col not in runs:
        return []
    parents = runs[runs[col] == k.ROLE_STUDY].sort_values("start_time", kind="stable")
    return [str(r) for r in parents["run_id"]]


def split_study(
    runs: pd.DataFrame, run_id: str | None = None, experiment: str = ""
) -> tuple[dict[str, Any], pd.DataFrame]:
    """The parent row (``run_id``, default the latest study) and its trial rows.

    Trial rows get ``trial`` (int) and ``state`` columns and keep only the columns they fill
    (an experiment's studies may have different ops); when a trial has several runs (a
    killed one, then a resumed one) the one started last is kept.
    """
    ids = parent_ids(runs)
    if not ids:
        raise TrackingError(f"experiment {experiment!r} has no inc_flow study (parent run)")
    if run_id and run_id not in ids:
        raise TrackingError(f"run {run_id!r} is not an inc_flow study in {experiment!r}: {ids}")
    pid = run_id or ids[-1]
    parent = runs[runs["run_id"] == pid].iloc[0].to_dict()
    role, parent_col, trial = k.tag(k.TAG_ROLE), k.tag(k.TAG_PARENT), k.tag(k.TAG_TRIAL)
    mask = runs[role] == k.ROLE_TRIAL
    mask &= runs[parent_col] == pid if parent_col in runs else False
    runs = runs.reindex(columns=list(dict.fromkeys([*runs.columns, trial])))
    base = ["run_id", "status", "start_time", trial]
    trials = runs.loc[mask, base].join(runs[mask].drop(columns=base).dropna(axis=1, how="all"))
    trials["trial"] = pd.to_numeric(trials[trial], errors="coerce")
    trials = trials.dropna(subset=["trial"]).astype({"trial": int})
    trials["state"] = [_state(r) for r in trials.to_dict("records")]
    trials = trials.sort_values(["trial", "start_time"], kind="stable")
    trials = trials.drop_duplicates("trial", keep="last").reset_index(drop=True)
    return parent, trials


def _state(row: dict[str, Any]) -> str:
    state = _value(row, k.tag(k.TAG_STATE))
    if row.get("status") == k.STATUS_KILLED:
        return k.STATE_KILLED
    return str(state) if state else str(row.get("status", "")).lower() or "unknown"


# --- rows ------------------------------------------------------------------------------


def op_names(study: StudyRuns) -> list[str]:
    """Op param names (without ``op.``) in model order when known."""
    seen = [c[len(OP_PREFIX) :] for c in study.trials.columns if c.startswith(OP_PREFIX)]
    ordered = [name for name, _ in study.ops if name in seen or not seen]
    return ordered + [n for n in seen if n not in ordered]


def plan_summary(row: dict[str, Any], ops: Sequence[str]) -> str:
    """``int8 9/10 fp32=[conv1]`` from a trial row's ``op.*`` params; ``-`` without a plan."""
    dtypes = {op: _value(row, OP_PREFIX + op) for op in ops}
    known = {op: d for op, d in dtypes.items() if d is not None}
    if not known:
        return "-"
    fp32 = [op for op, d in known.items() if d != "int8"]
    text = f"int8 {len(known) - len(fp32)}/{len(known)}"
    if fp32:
        text += " fp32=[" + ",".join(fp32[:4]) + (",..." if len(fp32) > 4 else "") + "]"
    return text


# Trial-table and summary fields read straight from one column of a run.
_TRIAL_FIELDS = {
    "phase": k.tag(k.TAG_PHASE),
    "backend": k.param(k.PARAM_BACKEND),
    **{
        name: k.metric(name)
        for name in (
            k.METRIC_ACCURACY, k.METRIC_RELATIVE_DROP, k.METRIC_ABSOLUTE_DROP,
            k.METRIC_LATENCY_MS, k.METRIC_LATENCY_MS_B1, k.METRIC_MODEL_SIZE,
        )
    },
    "wall_time_s": k.metric(k.METRIC_TRIAL_WALL_TIME),
    "reason": k.tag(k.TAG_REASON),
}  # fmt: skip
_PARAMS = (
    k.PARAM_APPROACH, k.PARAM_BACKENDS, k.PARAM_STRATEGY, k.PARAM_OBJECTIVE, k.PARAM_CRITERION,
    k.PARAM_MAX_TRIALS,
)  # fmt: skip
_METRICS = (
    k.METRIC_N_PRUNED, k.METRIC_N_ERRORS, k.METRIC_N_DUPLICATES, k.METRIC_CALIBRATION_PASSES,
    k.METRIC_FP32_ACCURACY, k.METRIC_FP32_LATENCY_MS, k.best(k.METRIC_ACCURACY),
    k.best(k.METRIC_RELATIVE_DROP), k.best(k.METRIC_LATENCY_MS), k.best(k.METRIC_MODEL_SIZE),
    k.METRIC_SPEEDUP, k.METRIC_SPEEDUP_MIN, k.METRIC_SPEEDUP_MAX, k.METRIC_SPEEDUP_B1,
    k.METRIC_ROUND_BATCH,
)  # fmt: skip


def study_rows(study: StudyRuns) -> list[dict[str, Any]]:
    """The trial table: one row per trial, in trial order."""
    ops, best = op_names(study), best_trial(study)
    return [
        {
            "trial": int(r["trial"]),
            "state": r["state"],
            "best": r["trial"] == best,
            "plan": plan_summary(r, ops),
            **{key: _value(r, col) for key, col in _TRIAL_FIELDS.items()},
            "run_id": r["run_id"],
        }
        for r in study.trials.to_dict("records")
    ]


def best_trial(study: StudyRuns) -> int | None:
    value = _value(study.parent, k.tag(k.TAG_BEST_TRIAL))
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def higher_is_better(study: StudyRuns) -> bool:
    """Inferred from the record: the target lies below fp32 when higher is better."""
    fp32, target = _value(study.parent, k.metric(k.METRIC_FP32_ACCURACY)), _target(study)
    return fp32 is None or target is None or target <= fp32


def pareto_front(points: Sequence[dict[str, Any]], higher: bool = True) -> list[dict[str, Any]]:
    """Points not dominated in (better accuracy, lower latency), sorted by latency."""
    sign = 1 if higher else -1

    def dominates(o: dict[str, Any], p: dict[str, Any]) -> bool:
        a, b = sign * o["accuracy"], sign * p["accuracy"]
        lo, lp = o["latency_ms"], p["latency_ms"]
        return a >= b and lo <= lp and (a > b or lo < lp)

    front = [p for p in points if not any(dominates(o, p) for o in points)]
    return sorted(front, key=lambda p: (p["latency_ms"], -sign * p["accuracy"]))


def scatter_points(study: StudyRuns) -> dict[str, Any]:
    """Accuracy x latency: trial points (``pareto`` flags the front of completed trials),
    the fp32 point, the target accuracy, the front itself and the best trial; ``untimed``:
    trials with an accuracy but no latency (pruned: the accuracy where evaluation stopped)."""
    scored = [
        {f: r[f] for f in ("trial", "state", "accuracy", "latency_ms", "best")}
        for r in study_rows(study)
        if r["accuracy"] is not None
    ]
    points = [p for p in scored if p["latency_ms"] is not None]
    front = pareto_front([p for p in points if p["state"] in COMPLETED], higher_is_better(study))
    on_front = {p["trial"] for p in front}
    for p in points:
        p["pareto"] = p["trial"] in on_front
    fp32_acc = _value(study.parent, k.metric(k.METRIC_FP32_ACCURACY))
    fp32_lat = _value(study.parent, k.metric(k.METRIC_FP32_LATENCY_MS))
    return {
        "points": points,
        "untimed": [p for p in scored if p["latency_ms"] is None],
        "fp32": {"accuracy": fp32_acc, "latency_ms": fp32_lat} if fp32_lat is not None else None,
        "target": _target(study),
        "pareto": front,
        "best": best_trial(study),
        "higher_is_better": higher_is_better(study),
    }


def precision_map(study: StudyRuns) -> pd.DataFrame:
    """Ops (rows, model order) x trials (columns): ``int8``, ``fp32`` or None (no plan)."""
    ops = op_names(study)
    data = {
        int(r["trial"]): [_value(r, OP_PREFIX + op) for op in ops]
        for r in study.trials.to_dict("records")
    }
    frame = pd.DataFrame(data, index=pd.Index(ops, name="op"), dtype=object)
    frame.columns.name = "trial"
    return frame.astype(object).where(frame.notna(), None)


def op_types(study: StudyRuns) -> dict[str, str]:
    """Op param name (without ``op.``) -> op type, when the plan was read."""
    return {name: op_type for name, op_type in study.ops}


def best_op_stats(study: StudyRuns) -> list[dict[str, Any]]:
    """The best trial's Mixed Precision Statistics rows (``Op Type``, ``Total``, ``INT8``,
    ``FP32``); empty when no trial passed or the table was not logged."""
    table = study.best_op_table
    if not table or not table.get("columns"):
        return []
    cols = list(table["columns"])
    rows = [dict(zip(cols, values, strict=False)) for values in table.get("data", [])]
    return [{c: _num(v) if c != "Op Type" else v for c, v in row.items()} for row in rows]


def time_breakdown(study: StudyRuns) -> list[dict[str, Any]]:
    """Where the tuning time went: one row per part (``seconds`` None = not recorded), then
    the rest of the wall time and the wall time itself (``share`` of the wall time)."""
    wall = _value(study.parent, k.metric(k.METRIC_TUNING_WALL_TIME))
    rows = []
    for part, metric in TIME_PARTS:
        seconds = _value(study.parent, k.metric(metric))
        older = _value(study.parent, k.metric(LOGGING_FALLBACK))
        if seconds is None and metric == k.METRIC_TIME_LOGGING and older is not None:
            seconds, metric = older, LOGGING_FALLBACK
        rows.append({"part": part, "metric": metric, "seconds": seconds})
    recorded = [r["seconds"] for r in rows if r["seconds"] is not None]
    if wall is not None:
        rest = max(wall - sum(recorded), 0.0) if recorded else None
        rows.append({"part": "rest of the wall time", "metric": None, "seconds": rest})
        wall_row = {"part": "tuning wall time", "metric": k.METRIC_TUNING_WALL_TIME}
        rows.append({**wall_row, "seconds": wall})
    for r in rows:
        r["recorded"] = r["seconds"] is not None
        r["share"] = r["seconds"] / wall if r["recorded"] and wall else None
    return rows


def study_summary(study: StudyRuns) -> dict[str, Any]:
    """The study's headline: settings, fp32 and best scores, counts, outcome, and a short
    ``label`` (model, approach, backends)."""
    p, best = study.parent, best_trial(study)
    rows = {r["trial"]: r for r in study_rows(study)}
    name, version = (
        _value(p, k.tag(k.TAG_REGISTERED_MODEL)),
        _value(p, k.tag(k.TAG_REGISTERED_VERSION)),
    )
    summary = {
        "experiment": study.experiment,
        "study": study.name,
        "run_id": study.run_id,
        "status": p.get("status"),
        "model": _value(p, k.param(k.PARAM_MODEL)) or study.experiment,
        **{name: _value(p, k.param(name)) for name in _PARAMS},
        **{name: _value(p, k.metric(name)) for name in _METRICS},
        "n_trials": _value(p, k.metric(k.METRIC_N_TRIALS)) or len(rows),
        "required_accuracy": _target(study),
        "best_trial": best,
        "best_plan": rows[best]["plan"] if best in rows else None,
        "stop_reason": _value(p, k.tag(k.TAG_STOP_REASON)),
        "slower_than_fp32": _value(p, k.tag(k.TAG_SLOWER_THAN_FP32)) == "True",
        "faster_than_fp32": _value(p, k.tag(k.TAG_FASTER_THAN_FP32)) != "False",
        "speed_verdict": _value(p, k.tag(k.TAG_SPEED_VERDICT)),
        "wall_time_s": _value(p, k.metric(k.METRIC_TUNING_WALL_TIME)),
        "registered": f"{name} v{version}" if name else None,
    }
    approach = SHORT_APPROACH.get(summary["approach"], summary["approach"])
    parts = (summary["model"], approach, summary["backends"])
    summary["label"] = " ".join(str(x) for x in parts if x)
    return summary


def compare_rows(studies: Sequence[StudyRuns]) -> list[dict[str, Any]]:
    """One summary row per study (see :func:`study_summary`), labels made unique
    (:func:`inc_flow.record.fetch.resolve` turns experiment names and run ids into studies)."""
    rows = [study_summary(s) for s in studies]
    counts = pd.Series([r["label"] for r in rows]).value_counts()
    for r in rows:
        if counts[r["label"]] > 1:
            r["label"] = f"{r['label']} ({r['study']})"
    return rows


def compare_points(studies: Sequence[StudyRuns]) -> list[dict[str, Any]]:
    """Every scored trial of every study as speed-up over fp32 x relative accuracy drop, the
    axes that stay comparable across models (``label`` as in :func:`compare_rows`)."""
    labels = [r["label"] for r in compare_rows(studies)]
    points = []
    for label, study in zip(labels, studies, strict=True):
        fp32 = _value(study.parent, k.metric(k.METRIC_FP32_LATENCY_MS))
        for r in study_rows(study):
            if r["latency_ms"] is None or r["relative_drop"] is None or not fp32:
                continue
            point = {f: r[f] for f in ("trial", "state", "best", "relative_drop")}
            points.append({"label": label, **point, "speedup": fp32 / r["latency_ms"]})
    return points


def _target(study: StudyRuns) -> float | None:
    return _value(study.parent, k.metric(k.METRIC_REQUIRED_ACCURACY))


def _value(row: dict[str, Any], key: str) -> Any:
    """``row[key]`` with NaN / missing as None."""
    value = row.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def _num(value: Any) -> Any:
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


__all__ = [
    "StudyRuns",
    "best_op_stats",
    "compare_points",
    "compare_rows",
    "pareto_front",
    "precision_map",
    "scatter_points",
    "split_study",
    "study_rows",
    "study_summary",
    "time_breakdown",
]
