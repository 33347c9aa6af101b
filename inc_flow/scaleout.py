"""Scale-out: the roles one process plays in a study, and the study's one shared MLflow
parent run (the handshake between workers through the Optuna storage).

``tune`` does everything in one process; ``worker`` joins the study, runs trials and logs them
under the study's one parent run, but neither registers nor ends the parent; ``finalize`` runs
no trial: it rebuilds the best plan, logs and registers it once, and ends the parent run.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import optuna

from inc_flow.errors import ConfigError
from inc_flow.search.loop import PARENT_ATTR, open_storage
from inc_flow.search.records import TuneSettings
from inc_flow.vocab import Role, names

logger = logging.getLogger("inc_flow")

PARENT_WAIT_S = 120  # how long a worker waits for the study's creator to make the parent run


def as_role(role: str) -> Role:
    """``role`` as a :class:`~inc_flow.vocab.Role`; a ConfigError naming the allowed values."""
    try:
        return Role(role)
    except ValueError:
        raise ConfigError("role", f"must be one of {list(names(Role))}, got {role!r}") from None


def study_parent(settings: TuneSettings, recorder: Any, role: str) -> str:
    """The id of the study's one MLflow parent run, kept in the Optuna study (user attr
    ``inc_flow.parent_run``). The worker whose ``create_study`` makes the study (the
    database's unique study name decides: exactly one does) creates the parent run and
    stores its id; the other workers wait for it. ``finalize`` reads it (or, for a study
    tuned without workers, adopts or creates the parent itself: it runs once).

    Args:
        settings: the study's settings (name, storage URL, directions).
        recorder: the MLflow tracker; ``recorder.create_parent(name)`` makes the parent run.
        role: ``worker`` or ``finalize``.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name, url = settings.study_name, settings.storage_url()
    try:
        storage = open_storage(url)
        if role == Role.WORKER:
            try:
                study = optuna.create_study(
                    storage=storage, study_name=name, directions=settings.directions()
                )
            except optuna.exceptions.DuplicatedStudyError:
                pass
            else:
                parent = recorder.create_parent(name)
                study.set_user_attr(PARENT_ATTR, parent)
                logger.info("created study %s and its MLflow parent run %s", name, parent)
                return parent
        deadline = time.monotonic() + (PARENT_WAIT_S if role == Role.WORKER else 0)
        while True:
            study = optuna.load_study(study_name=name, storage=storage)
            parent = study.user_attrs.get(PARENT_ATTR)
            if parent or time.monotonic() >= deadline:
                break
            time.sleep(0.5)
    except KeyError as e:  # load_study: no such study
        raise ConfigError(
            "tuning.study_name", f"study {name!r} is not in {url}: run the workers first"
        ) from e
    if parent:
        return str(parent)
    if role == Role.FINALIZE:
        parent = recorder.create_parent(name)
        study.set_user_attr(PARENT_ATTR, parent)
        return parent
    raise ConfigError(
        "tuning.study_name",
        f"study {name!r} in {url} has no MLflow parent run after {PARENT_WAIT_S} s: it was "
        "made by a non-worker run, or its creating worker died before making the parent; "
        "run `inc-flow finalize` once (it makes the parent) and start the workers again",
    )
