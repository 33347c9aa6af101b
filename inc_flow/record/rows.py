"""Rows for the study dashboards, from the MLflow record of a study (pure data, no HTML).

``fetch_study`` / ``fetch_studies`` are the only functions that talk to MLflow: they read
the runs of an experiment (one row per run, in the column layout of ``mlflow.search_runs``:
``metrics.x``, ``params.x``, ``tags.x``) and two small artifacts. Everything else is pandas
over that :class:`StudyRuns`, so tests build one by hand and assert on the rows.
``dashboards/`` renders the rows.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import yaml

from inc_flow.errors import IncFlowError

ROLE, STUDY, TRIAL, STATE = "inc_flow.role", "inc_flow.study", "inc_flow.trial", "inc_flow.state"
PARENT = "mlflow.parentRunId"
COMPLETED = ("passed", "failed")  # fully evaluated: the only states on the Pareto front
OP_PREFIX = "params.op."
# Where the time went: (part, parent-run metric). Absent metrics are "not recorded".
TIME_PARTS = (
    ("calibration", "time_calibration_s"),
    ("convert", "time_convert_s"),
    ("evaluation", "time_evaluation_s"),
    ("latency measurement", "time_latency_s"),
    ("logging", "time_logging_s"),
)
LOGGING_FALLBACK = "mlflow_logging_s"  # studies recorded before the time split
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
SHORT_APPROACH = {
    "post_training_static_quant": "static",
    "post_training_dynamic_quant": "dynamic",
    "quant_aware_training": "qat",
}


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
        return str(_value(self.parent, f"tags.{STUDY}") or self.run_id)


# --- fetching (the only MLflow users) ------------------------------------------------------


def fetch_runs(experiment: str, client: Any = None) -> pd.DataFrame:
    """Every run of ``experiment`` as a ``search_runs``-style DataFrame.

    Raises:
        IncFlowError: the experiment does not exist.
    """
    client = _client(client)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        known = sorted(e.name for e in client.search_experiments())
        raise IncFlowError(f"no MLflow experiment named {experiment!r}; known: {known}")
    rows, token = [], None
    while True:
        page = client.search_runs([exp.experiment_id], max_results=1000, page_token=token)
        rows += [_flat(run) for run in page]
        token = page.token
        if not token:
            break
    return pd.DataFrame(rows)


def fetch_study(
    experiment: str | None, run_id: str | None = None, client: Any = None
) -> StudyRuns:
    """The study of parent run ``run_id`` (default: the latest study) in ``experiment``.

    ``experiment`` may be None when ``run_id`` is given. Reads the best trial's op table and
    one ``plan.yaml`` (for the ops' model order and types).
    """
    client = _client(client)
    if experiment is None:
        if not run_id:
            raise IncFlowError("give an experiment name or a parent run id")
        experiment = _experiment_of(client, run_id)
    parent, trials = split_study(fetch_runs(experiment, client), run_id, experiment)
    return _with_artifacts(client, experiment, parent, trials)


def fetch_studies(
    experiments: Sequence[str] = (), run_ids: Sequence[str] = (), client: Any = None
) -> list[StudyRuns]:
    """Every study of each experiment, then the study of each parent run id, for comparing."""
    client = _client(client)
    studies: list[StudyRuns] = []
    for name in experiments:
        runs = fetch_runs(name, client)
        for parent_id in parent_ids(runs):
            parent, trials = split_study(runs, parent_id, name)
            studies.append(_with_artifacts(client, name, parent, trials))
    for run_id in run_ids:
        studies.append(fetch_study(None, run_id, client))
    if not studies:
        raise IncFlowError(
            f"no inc_flow study found in experiments={list(experiments)}, run_ids={list(run_ids)}"
        )
    return studies


def _client(client: Any) -> Any:
    if client is not None:
        return client
    from mlflow import MlflowClient

    return MlflowClient()


def _experiment_of(client: Any, run_id: str) -> str:
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException as e:
        raise IncFlowError(f"no MLflow run with id {run_id!r}") from e
    return client.get_experiment(run.info.experiment_id).name


def _flat(run: Any) -> dict[str, Any]:
    info, data = run.info, run.data
    row: dict[str, Any] = {
        "run_id": info.run_id,
        "experiment_id": info.experiment_id,
        "run_name": info.run_name,
        "status": info.status,
        "start_time": info.start_time,
        "end_time": info.end_time,
    }
    row.update({f"metrics.{k}": v for k, v in data.metrics.items()})
    row.update({f"params.{k}": v for k, v in data.params.items()})
    row.update({f"tags.{k}": v for k, v in data.tags.items()})
    return row


def _with_artifacts(
    client: Any, experiment: str, parent: dict[str, Any], trials: pd.DataFrame
) -> StudyRuns:
    from inc_flow.record.tracking import safe_key

    by_trial = {str(t): r for t, r in zip(trials["trial"], trials["run_id"], strict=True)}
    best = by_trial.get(str(_value(parent, "tags.inc_flow.best_trial")))
    table = _artifact(client, best, "op_statistics.json") if best else None
    source = best or next(iter(by_trial.values()), None)
    plan = _artifact(client, source, "plan.yaml") if source else None
    ops: tuple[tuple[str, str], ...] = ()
    if plan:
        data = yaml.safe_load(plan) or {}
        ops = tuple((safe_key(f"op.{o['name']}")[3:], o.get("type", "")) for o in data["ops"])
    return StudyRuns(
        experiment, parent, trials, ops, json.loads(table) if table is not None else None
    )


def _artifact(client: Any, run_id: str, path: str) -> str | None:
    """An artifact's text, or None when the run has none at ``path``."""
    from mlflow.exceptions import MlflowException

    if path not in {a.path for a in client.list_artifacts(run_id)}:
        return None
    old = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # no tqdm on stderr
    try:
        with tempfile.TemporaryDirectory(prefix="inc_flow_report_") as tmp:
            with open(client.download_artifacts(run_id, path, tmp), encoding="utf-8") as f:
                return f.read()
    except MlflowException:
        return None
    finally:
        if old is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = old


# --- selecting a study from runs (pure) ----------------------------------------------------


def parent_ids(runs: pd.DataFrame) -> list[str]:
    """Parent (study) run ids in ``runs``, oldest first."""
    col = f"tags.{ROLE}"
    if runs.empty or col not in runs:
        return []
    parents = runs[runs[col] == "study"].sort_values("start_time", kind="stable")
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
        raise IncFlowError(f"experiment {experiment!r} has no inc_flow study (parent run)")
    if run_id and run_id not in ids:
        raise IncFlowError(f"run {run_id!r} is not an inc_flow study in {experiment!r}: {ids}")
    pid = run_id or ids[-1]
    parent = runs[runs["run_id"] == pid].iloc[0].to_dict()
    mask = runs[f"tags.{ROLE}"] == "trial"
    mask &= runs[f"tags.{PARENT}"] == pid if f"tags.{PARENT}" in runs else False
    runs = runs.reindex(columns=list(dict.fromkeys([*runs.columns, f"tags.{TRIAL}"])))
    base = ["run_id", "status", "start_time", f"tags.{TRIAL}"]
    trials = runs.loc[mask, base].join(runs[mask].drop(columns=base).dropna(axis=1, how="all"))
    trials["trial"] = pd.to_numeric(trials[f"tags.{TRIAL}"], errors="coerce")
    trials = trials.dropna(subset=["trial"]).astype({"trial": int})
    trials["state"] = [_state(r) for r in trials.to_dict("records")]
    trials = trials.sort_values(["trial", "start_time"], kind="stable")
    trials = trials.drop_duplicates("trial", keep="last").reset_index(drop=True)
    return parent, trials


def _state(row: dict[str, Any]) -> str:
    state = _value(row, f"tags.{STATE}")
    if row.get("status") == "KILLED":
        return "killed"
    return str(state) if state else str(row.get("status", "")).lower() or "unknown"


# --- rows ------------------------------------------------------------------------------


def as_study(study: StudyRuns | str, run_id: str | None = None) -> StudyRuns:
    """``study`` itself, or the study fetched from the experiment named ``study``."""
    return study if isinstance(study, StudyRuns) else fetch_study(study, run_id)


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
    "phase": "tags.inc_flow.phase", "backend": "params.backend",
    "accuracy": "metrics.accuracy", "relative_drop": "metrics.relative_drop",
    "absolute_drop": "metrics.absolute_drop", "latency_ms": "metrics.latency_ms",
    "latency_ms_b1": "metrics.latency_ms_b1", "model_size_bytes": "metrics.model_size_bytes",
    "wall_time_s": "metrics.trial_wall_time_s", "reason": "tags.inc_flow.failure_reason",
}  # fmt: skip
_PARAMS = ("approach", "backends", "strategy", "objective", "criterion", "max_trials")
_METRICS = (
    "n_pruned", "n_errors", "n_duplicates", "calibration_passes", "fp32_accuracy",
    "fp32_latency_ms", "best_accuracy", "best_relative_drop", "best_latency_ms",
    "best_model_size_bytes", "speedup",
)  # fmt: skip


def study_rows(study: StudyRuns | str, run_id: str | None = None) -> list[dict[str, Any]]:
    """The trial table: one row per trial, in trial order."""
    study = as_study(study, run_id)
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
    value = _value(study.parent, "tags.inc_flow.best_trial")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def higher_is_better(study: StudyRuns) -> bool:
    """Inferred from the record: the target lies below fp32 when higher is better."""
    fp32, target = _value(study.parent, "metrics.fp32_accuracy"), _target(study)
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


def scatter_points(study: StudyRuns | str, run_id: str | None = None) -> dict[str, Any]:
    """Accuracy x latency: trial points (``pareto`` flags the front of completed trials),
    the fp32 point, the target accuracy, the front itself and the best trial."""
    study = as_study(study, run_id)
    points = [
        {k: r[k] for k in ("trial", "state", "accuracy", "latency_ms", "best")}
        for r in study_rows(study)
        if r["accuracy"] is not None and r["latency_ms"] is not None
    ]
    front = pareto_front([p for p in points if p["state"] in COMPLETED], higher_is_better(study))
    on_front = {p["trial"] for p in front}
    for p in points:
        p["pareto"] = p["trial"] in on_front
    fp32_acc = _value(study.parent, "metrics.fp32_accuracy")
    fp32_lat = _value(study.parent, "metrics.fp32_latency_ms")
    return {
        "points": points,
        "fp32": {"accuracy": fp32_acc, "latency_ms": fp32_lat} if fp32_lat is not None else None,
        "target": _target(study),
        "pareto": front,
        "best": best_trial(study),
        "higher_is_better": higher_is_better(study),
    }


def precision_map(study: StudyRuns | str, run_id: str | None = None) -> pd.DataFrame:
    """Ops (rows, model order) x trials (columns): ``int8``, ``fp32`` or None (no plan)."""
    study = as_study(study, run_id)
    ops = op_names(study)
    data = {
        int(r["trial"]): [_value(r, OP_PREFIX + op) for op in ops]
        for r in study.trials.to_dict("records")
    }
    frame = pd.DataFrame(data, index=pd.Index(ops, name="op"), dtype=object)
    frame.columns.name = "trial"
    return frame.astype(object).where(frame.notna(), None)


def op_types(study: StudyRuns) -> dict[str, str]:
    return {name: op_type for name, op_type in study.ops}


def best_op_stats(study: StudyRuns | str, run_id: str | None = None) -> list[dict[str, Any]]:
    """The best trial's Mixed Precision Statistics rows (``Op Type``, ``Total``, ``INT8``,
    ``FP32``); empty when no trial passed or the table was not logged."""
    study = as_study(study, run_id)
    table = study.best_op_table
    if not table or not table.get("columns"):
        return []
    cols = list(table["columns"])
    rows = [dict(zip(cols, values, strict=False)) for values in table.get("data", [])]
    return [{k: _num(v) if k != "Op Type" else v for k, v in row.items()} for row in rows]


def time_breakdown(study: StudyRuns | str, run_id: str | None = None) -> list[dict[str, Any]]:
    """Where the tuning time went: one row per part (``seconds`` None = not recorded), then
    the rest of the wall time and the wall time itself (``share`` of the wall time)."""
    study = as_study(study, run_id)
    wall = _value(study.parent, "metrics.tuning_wall_time_s")
    rows = []
    for part, metric in TIME_PARTS:
        seconds = _value(study.parent, f"metrics.{metric}")
        older = _value(study.parent, f"metrics.{LOGGING_FALLBACK}")
        if seconds is None and metric == "time_logging_s" and older is not None:
            seconds, metric = older, LOGGING_FALLBACK
        rows.append({"part": part, "metric": metric, "seconds": seconds})
    recorded = [r["seconds"] for r in rows if r["seconds"] is not None]
    if wall is not None:
        rest = max(wall - sum(recorded), 0.0) if recorded else None
        rows.append({"part": "rest of the wall time", "metric": None, "seconds": rest})
        rows.append({"part": "tuning wall time", "metric": "tuning_wall_time_s", "seconds": wall})
    for r in rows:
        r["recorded"] = r["seconds"] is not None
        r["share"] = r["seconds"] / wall if r["recorded"] and wall else None
    return rows


def study_summary(study: StudyRuns | str, run_id: str | None = None) -> dict[str, Any]:
    """The study's headline: settings, fp32 and best scores, counts, outcome, and a short
    ``label`` (model, approach, backends)."""
    study = as_study(study, run_id)
    p, best = study.parent, best_trial(study)
    rows = {r["trial"]: r for r in study_rows(study)}
    name, version = (
        _value(p, "tags.inc_flow.registered_model"),
        _value(p, "tags.inc_flow.registered_version"),
    )
    summary = {
        "experiment": study.experiment,
        "study": study.name,
        "run_id": study.run_id,
        "status": p.get("status"),
        "model": _value(p, "params.model") or study.experiment,
        **{k: _value(p, f"params.{k}") for k in _PARAMS},
        **{k: _value(p, f"metrics.{k}") for k in _METRICS},
        "n_trials": _value(p, "metrics.n_trials") or len(rows),
        "required_accuracy": _target(study),
        "best_trial": best,
        "best_plan": rows[best]["plan"] if best in rows else None,
        "stop_reason": _value(p, "tags.inc_flow.stop_reason"),
        "slower_than_fp32": _value(p, "tags.inc_flow.slower_than_fp32") == "True",
        "wall_time_s": _value(p, "metrics.tuning_wall_time_s"),
        "registered": f"{name} v{version}" if name else None,
    }
    approach = SHORT_APPROACH.get(summary["approach"], summary["approach"])
    parts = (summary["model"], approach, summary["backends"])
    summary["label"] = " ".join(str(x) for x in parts if x)
    return summary


def compare_rows(studies: Sequence[StudyRuns | str]) -> list[dict[str, Any]]:
    """One summary row per study (see :func:`study_summary`), labels made unique. A string
    is an experiment name (all its studies) or a parent run id."""
    resolved = _resolve(studies)
    rows = [study_summary(s) for s in resolved]
    counts = pd.Series([r["label"] for r in rows]).value_counts()
    for r in rows:
        if counts[r["label"]] > 1:
            r["label"] = f"{r['label']} ({r['study']})"
    return rows


def compare_points(studies: Sequence[StudyRuns | str]) -> list[dict[str, Any]]:
    """Every scored trial of every study as speed-up over fp32 x relative accuracy drop, the
    axes that stay comparable across models (``label`` as in :func:`compare_rows`)."""
    resolved = _resolve(studies)
    labels = [r["label"] for r in compare_rows(resolved)]
    points = []
    for label, study in zip(labels, resolved, strict=True):
        fp32 = _value(study.parent, "metrics.fp32_latency_ms")
        for r in study_rows(study):
            if r["latency_ms"] is None or r["relative_drop"] is None or not fp32:
                continue
            point = {k: r[k] for k in ("trial", "state", "best", "relative_drop")}
            points.append({"label": label, **point, "speedup": fp32 / r["latency_ms"]})
    return points


def _resolve(studies: Sequence[StudyRuns | str]) -> list[StudyRuns]:
    out: list[StudyRuns] = []
    for s in studies:
        if isinstance(s, StudyRuns):
            out.append(s)
        elif _RUN_ID.match(s):
            out += fetch_studies(run_ids=[s])
        else:
            out += fetch_studies(experiments=[s])
    return out


def _target(study: StudyRuns) -> float | None:
    return _value(study.parent, "metrics.required_accuracy")


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
    "fetch_runs",
    "fetch_studies",
    "fetch_study",
    "pareto_front",
    "precision_map",
    "scatter_points",
    "split_study",
    "study_rows",
    "study_summary",
    "time_breakdown",
]
