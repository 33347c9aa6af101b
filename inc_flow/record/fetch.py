"""Reading the MLflow record: the runs of an experiment, a study's :class:`StudyRuns` (its runs
plus two small artifacts), and the lookups the tracker makes before it writes.

The only module that reads MLflow. Runs come back in the column layout of
``mlflow.search_runs`` (``metrics.x``, ``params.x``, ``tags.x``); :mod:`inc_flow.record.rows`
turns them into dashboard rows.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Sequence
from typing import Any

import pandas as pd
import yaml
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from inc_flow.errors import TrackingError
from inc_flow.record import keys as k
from inc_flow.record.rows import StudyRuns, parent_ids, split_study

_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
_PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


def mlflow_client(client: Any = None) -> Any:
    """``client``, else an ``MlflowClient`` for the current tracking URI."""
    return client if client is not None else MlflowClient()


# --- studies for the dashboards ------------------------------------------------------------


def fetch_runs(experiment: str, client: Any = None) -> pd.DataFrame:
    """Every run of ``experiment`` as a ``search_runs``-style DataFrame.

    Raises:
        TrackingError: the experiment does not exist.
    """
    client = mlflow_client(client)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        known = sorted(e.name for e in client.search_experiments())
        raise TrackingError(f"no MLflow experiment named {experiment!r}; known: {known}")
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
    client = mlflow_client(client)
    if experiment is None:
        if not run_id:
            raise TrackingError("give an experiment name or a parent run id")
        experiment = _experiment_of(client, run_id)
    parent, trials = split_study(fetch_runs(experiment, client), run_id, experiment)
    return _with_artifacts(client, experiment, parent, trials)


def fetch_studies(
    experiments: Sequence[str] = (), run_ids: Sequence[str] = (), client: Any = None
) -> list[StudyRuns]:
    """Every study of each experiment, then the study of each parent run id, for comparing."""
    client = mlflow_client(client)
    studies: list[StudyRuns] = []
    for name in experiments:
        runs = fetch_runs(name, client)
        for parent_id in parent_ids(runs):
            parent, trials = split_study(runs, parent_id, name)
            studies.append(_with_artifacts(client, name, parent, trials))
    for run_id in run_ids:
        studies.append(fetch_study(None, run_id, client))
    studies = unique_studies(studies)  # a study given twice, or with two parent runs
    if not studies:
        raise TrackingError(
            f"no inc_flow study found in experiments={list(experiments)}, run_ids={list(run_ids)}"
        )
    return studies


def resolve(studies: Sequence[StudyRuns | str], client: Any = None) -> list[StudyRuns]:
    """Studies as :class:`StudyRuns` for the comparison rows: a string is a parent run id, or
    an experiment name (all its studies)."""
    out: list[StudyRuns] = []
    for s in studies:
        if isinstance(s, StudyRuns):
            out.append(s)
        elif _RUN_ID.match(s):
            out += fetch_studies(run_ids=[s], client=client)
        else:
            out += fetch_studies(experiments=[s], client=client)
    return unique_studies(out)


def unique_studies(studies: Sequence[StudyRuns]) -> list[StudyRuns]:
    """Each study once, in the given order: a parent run given twice, or two parent runs of
    one study in one experiment (a rerun made a second one before inc_flow reused the
    first), become the one with the most trials (the latest on a tie)."""
    chosen: dict[tuple[str, str], StudyRuns] = {}
    for study in studies:
        key = (study.experiment, study.name)
        held = chosen.get(key)
        if held is None or _weight(study) > _weight(held):
            chosen[key] = study
    out: list[StudyRuns] = []
    for study in studies:
        first = all(s is not study for s in out)
        if first and chosen.get((study.experiment, study.name)) is study:
            out.append(study)
    return out


def _weight(study: StudyRuns) -> tuple[int, float]:
    start = study.parent.get("start_time")
    return len(study.trials), float(start) if start is not None else 0.0


def _experiment_of(client: Any, run_id: str) -> str:
    try:
        run = client.get_run(run_id)
    except MlflowException as e:
        raise TrackingError(f"no MLflow run with id {run_id!r}") from e
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
    row.update({k.metric(name): v for name, v in data.metrics.items()})
    row.update({k.param(name): v for name, v in data.params.items()})
    row.update({k.tag(name): v for name, v in data.tags.items()})
    return row


def _with_artifacts(
    client: Any, experiment: str, parent: dict[str, Any], trials: pd.DataFrame
) -> StudyRuns:
    by_trial = {str(t): r for t, r in zip(trials["trial"], trials["run_id"], strict=True)}
    best = by_trial.get(str(parent.get(k.tag(k.TAG_BEST_TRIAL))))
    table = _artifact(client, best, k.ARTIFACT_OP_STATISTICS) if best else None
    source = best or next(iter(by_trial.values()), None)
    plan = _artifact(client, source, k.ARTIFACT_PLAN) if source else None
    ops: tuple[tuple[str, str], ...] = ()
    if plan:
        data = yaml.safe_load(plan) or {}
        prefix = len(k.OP_PREFIX)
        ops = tuple((k.op_param(o["name"])[prefix:], o.get("type", "")) for o in data["ops"])
    return StudyRuns(
        experiment, parent, trials, ops, json.loads(table) if table is not None else None
    )


def _artifact(client: Any, run_id: str, path: str) -> str | None:
    """An artifact's text, or None when the run has none at ``path``."""
    if path not in {a.path for a in client.list_artifacts(run_id)}:
        return None
    old = os.environ.get(_PROGRESS_BAR)
    os.environ[_PROGRESS_BAR] = "false"  # no tqdm on stderr
    try:
        with tempfile.TemporaryDirectory(prefix="inc_flow_report_") as tmp:
            with open(client.download_artifacts(run_id, path, tmp), encoding="utf-8") as f:
                return f.read()
    except MlflowException:
        return None
    finally:
        if old is None:
            os.environ.pop(_PROGRESS_BAR, None)
        else:
            os.environ[_PROGRESS_BAR] = old


# --- lookups for the tracker -----------------------------------------------------------------


def _trials_of(study: str) -> str:
    return f"{k.tag_is(k.TAG_STUDY, study)} and {k.tag_is(k.TAG_ROLE, k.ROLE_TRIAL)}"


def latest_parent(client: Any, experiment_id: str, study: str) -> str | None:
    """The latest parent run tagged for ``study`` in the experiment, or None."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"{k.tag_is(k.TAG_STUDY, study)} and {k.tag_is(k.TAG_ROLE, k.ROLE_STUDY)}",
        max_results=1,
        order_by=["attributes.start_time DESC"],
    )
    return runs[0].info.run_id if runs else None


def logged_trials(client: Any, experiment_id: str, study: str) -> set[str | None]:
    """The trial numbers (tags) of the study's trial runs that were not KILLED."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"{_trials_of(study)} and attributes.status != '{k.STATUS_KILLED}'",
        max_results=5000,
    )
    return {r.data.tags.get(k.TAG_TRIAL) for r in runs}


def running_trials(client: Any, experiment_id: str, study: str) -> list[tuple[str, str | None]]:
    """(run id, trial number tag) of the study's trial runs still RUNNING."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"{_trials_of(study)} and attributes.status = '{k.STATUS_RUNNING}'",
        max_results=1000,
    )
    return [(r.info.run_id, r.data.tags.get(k.TAG_TRIAL)) for r in runs]


__all__ = [
    "fetch_runs",
    "fetch_studies",
    "fetch_study",
    "latest_parent",
    "logged_trials",
    "mlflow_client",
    "resolve",
    "running_trials",
    "unique_studies",
]
