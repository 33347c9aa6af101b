"""The study's parent run: which run it is, in which experiment, under which name.

- Its experiment is the config's (``tracking.experiment``, else ``model.name``), unless
  ``MLFLOW_EXPERIMENT_ID`` names one. Under ``mlflow run`` (``MLFLOW_RUN_ID`` set) the project
  run's experiment is used when the user chose one (``--experiment-name``/``-id``); a project
  run in MLflow's "Default" experiment (the user chose none) does not take the study there.
- A study has one parent run: a rerun of a study records into the run tagged for it (found by
  the ``inc_flow.study`` tag, i.e. the study hash, never by the run name). The project run of
  ``mlflow run`` is the parent when the study has none yet in that experiment; otherwise it
  stays a small pointer run (tag ``inc_flow.recorded_in``, a note with the link).
- Its name is readable (``<model>-<approach>-<target>-<YYYYmmdd-HHMM>``); trial runs are
  ``trial-<n>-<short plan>``. Both carry MLflow's ``mlflow.source.*``/``mlflow.user`` tags.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException

from inc_flow.record import fetch
from inc_flow.record import keys as k

logger = logging.getLogger("inc_flow")

DEFAULT_EXPERIMENT_ID = "0"  # MLflow's "Default" experiment
TRIAL_NAME_CHARS = 60  # a trial run's name is cut here (the plan is in its params)
CONTEXT_TAGS = (k.TAG_SOURCE_NAME, k.TAG_SOURCE_TYPE, k.TAG_USER, k.TAG_GIT_COMMIT)


def target_text(relative: float | None, absolute: float | None) -> str:
    """The accuracy target in a run name: ``rel1%`` (INC's default), ``abs0.02``."""
    if absolute is not None and relative is None:
        return f"abs{absolute:g}"
    return f"rel{(0.01 if relative is None else relative) * 100:g}%"


def run_name(model: str, settings: Any, when: float | None = None) -> str:
    """``<model>-<approach>-<target>-<YYYYmmdd-HHMM>`` (local time) for a study's parent."""
    stamp = time.strftime("%Y%m%d-%H%M", time.localtime(when))
    target = target_text(settings.relative, settings.absolute)
    return f"{model}-{settings.approach}-{target}-{stamp}"


def trial_name(number: int, plan: Any) -> str:
    """``trial-<n>-<short plan>``: the trial number (as in the log), backend, int8 op count
    and the first fp32 ops, e.g. ``trial-003-x86-int8-9/10-fp32:conv1``."""
    name = f"trial-{number:03d}-{plan.backend}-int8-{len(plan.int8_ops)}/{len(plan.ops)}"
    fp32 = list(plan.fp32_ops)
    if fp32:
        name += "-fp32:" + ",".join(fp32[:2]) + (",..." if len(fp32) > 2 else "")
    return name if len(name) <= TRIAL_NAME_CHARS else name[: TRIAL_NAME_CHARS - 3] + "..."


def context_tags() -> dict[str, str]:
    """MLflow's own run context tags, as ``mlflow.start_run`` sets them: source name and type,
    user, git commit (when in a repository)."""
    from mlflow.tracking.context.registry import resolve_tags

    try:
        tags = resolve_tags({})
    except Exception as e:  # noqa: BLE001 - context tags are a nicety: never fail the study
        logger.debug("MLflow context tags not resolved: %s", e)
        return {}
    return {key: str(v) for key, v in tags.items() if key in CONTEXT_TAGS}


def experiment_id(client: Any, name: str, use_env: bool = True) -> str:
    """``MLFLOW_EXPERIMENT_ID`` (with ``use_env``), else the experiment ``name`` (created
    when missing; another worker may create it at the same moment)."""
    env = os.environ.get("MLFLOW_EXPERIMENT_ID") if use_env else None
    if env:
        return env
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name, artifact_location=_artifact_location())
    except MlflowException as e:  # another worker created it a moment ago
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        logger.debug("experiment %s created concurrently: %s", name, e)
        return exp.experiment_id


def find_or_create(client: Any, exp_id: str, study: str, name: str) -> str:
    """The latest run tagged for ``study`` in ``exp_id`` (set RUNNING again), else a new one
    named ``name``."""
    existing = fetch.latest_parent(client, exp_id, study)
    if existing is not None:
        client.update_run(existing, status=k.STATUS_RUNNING)
        logger.info("recording into the study's MLflow parent run %s", existing)
        return existing
    tags = {k.TAG_STUDY: study, k.TAG_ROLE: k.ROLE_STUDY, **context_tags()}
    return client.create_run(exp_id, run_name=name, tags=tags).info.run_id


def for_project_run(
    client: Any, project_run: str, experiment: str, study: str, name: str
) -> tuple[str, str, bool]:
    """Under ``mlflow run``: (parent run, its experiment, whether inc_flow must end it).

    The project run is the parent when the study has no parent yet in the experiment it is
    to be recorded in (the project run's, unless that is "Default": then ``experiment``).
    Otherwise the study's parent is found or made there, and the project run points at it.
    """
    run = client.get_run(project_run)
    chosen = run.info.experiment_id != DEFAULT_EXPERIMENT_ID
    exp_id = run.info.experiment_id if chosen else experiment_id(client, experiment, False)
    if exp_id == run.info.experiment_id and fetch.latest_parent(client, exp_id, study) is None:
        # the project run's own source tags (type PROJECT, its URI, git commit) are kept
        missing = {key: v for key, v in context_tags().items() if key not in run.data.tags}
        tags = {**missing, k.TAG_STUDY: study, k.TAG_ROLE: k.ROLE_STUDY}
        for key, value in tags.items():
            client.set_tag(project_run, key, value)
        client.update_run(project_run, name=name)
        return project_run, exp_id, False
    parent = find_or_create(client, exp_id, study, name)
    where = client.get_experiment(exp_id).name
    client.set_tag(project_run, k.TAG_RECORDED_IN, f"{where}/{parent}")
    note = (
        f"inc_flow study {study} is recorded in experiment {where!r}, run {parent} "
        f"(this project run only launched it)"
    )
    client.set_tag(project_run, k.TAG_NOTE, note)
    logger.info(note)
    return parent, exp_id, True


def _artifact_location() -> str | None:
    """For an SQLite store, artifacts go beside the database file (``<dir>/mlruns/<name>``)
    rather than under whatever directory the process happens to run in."""
    uri = mlflow.get_tracking_uri()
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri.removeprefix("sqlite:///")).resolve()
    return (db.parent / "mlruns").as_uri() + f"/{int(time.time() * 1000)}"


__all__ = [
    "context_tags",
    "experiment_id",
    "find_or_create",
    "for_project_run",
    "run_name",
    "target_text",
    "trial_name",
]
