"""Scale-out: the roles one process plays in a study, and the study's one shared MLflow
parent run (the handshake between workers through the Optuna storage).

``tune`` does everything in one process; ``worker`` joins the study, runs trials and logs them
under the study's one parent run, but neither registers nor ends the parent; ``finalize`` runs
no trial: it rebuilds the best plan, logs and registers it once, and ends the parent run.
"""

from __future__ import annotations

import logging
from typing import Any

from inc_flow.errors import ConfigError
from inc_flow.search.settings import TuneSettings
from inc_flow.search.storage import claim_parent_run, parent_run, set_parent_run
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
    name, url = settings.study_name, settings.storage_url()
    try:
        if role == Role.WORKER:
            parent = claim_parent_run(url, name, settings.directions(), recorder.create_parent)
            if parent is not None:
                logger.info("created study %s and its MLflow parent run %s", name, parent)
                return parent
        parent = parent_run(url, name, PARENT_WAIT_S if role == Role.WORKER else 0)
    except KeyError as e:  # no such study
        raise ConfigError(
            "tuning.study_name", f"study {name!r} is not in {url}: run the workers first"
        ) from e
    if parent:
        return str(parent)
    if role == Role.FINALIZE:
        parent = recorder.create_parent(name)
        set_parent_run(url, name, parent)
        return parent
    raise ConfigError(
        "tuning.study_name",
        f"study {name!r} in {url} has no MLflow parent run after {PARENT_WAIT_S} s: it was "
        "made by a non-worker run, or its creating worker died before making the parent; "
        "run `inc-flow finalize` once (it makes the parent) and start the workers again",
    )
