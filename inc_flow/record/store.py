"""The tracking store before and around a study: reached at start with a short timeout,
SQLite stores created under a file lock, and PENDING logged models a dead process left.

:func:`reach` runs when the MLflow tracker opens, before the fp32 baseline: one request with
no retries and a timeout of ``INC_FLOW_TRACKING_PROBE_S`` seconds (default 5), so that a
wrong URI or a stopped server fails in seconds with a :class:`~inc_flow.errors.TrackingError`
naming the URI (MLflow's own client retries a refused connection for about four minutes).
The rest of the run keeps MLflow's retry settings (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``,
``MLFLOW_HTTP_REQUEST_TIMEOUT``). For a SQLite store the same call creates and migrates the
database, under the lock ``<db>.lock`` (:func:`inc_flow.locks.sqlite_lock`), so processes
started together on a fresh directory never migrate it twice.

:func:`fail_orphaned_models` marks FAILED the logged models of a run that are still PENDING
while the process that logged them (tag ``inc_flow.owner``, ``host:pid``) is gone: a kill
during the artifact upload leaves one behind.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import mlflow
from mlflow import MlflowClient

from inc_flow.config.drivers import missing_driver
from inc_flow.errors import ConfigError, TrackingError
from inc_flow.locks import process_gone, sqlite_file, sqlite_lock
from inc_flow.record import keys as k
from inc_flow.search.records import why

logger = logging.getLogger("inc_flow")

PROBE_ENV = "INC_FLOW_TRACKING_PROBE_S"
PROBE_DEFAULT_S = 5
# MLflow's client settings the probe overrides for its one request
RETRIES_ENV, TIMEOUT_ENV = "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"
MAX_ERROR = 300  # characters of the store's error quoted in the TrackingError


def probe_seconds() -> int:
    """``INC_FLOW_TRACKING_PROBE_S`` (whole seconds, 1 to 600), default 5; a ConfigError
    naming the variable and echoing its value otherwise."""
    raw = os.environ.get(PROBE_ENV, "").strip()
    if not raw:
        return PROBE_DEFAULT_S
    if not raw.isdigit() or not 1 <= int(raw) <= 600:
        raise ConfigError(
            PROBE_ENV, f"must be a whole number of seconds from 1 to 600, got {raw!r}"
        )
    return int(raw)


@contextmanager
def _quick(seconds: int) -> Iterator[None]:
    """MLflow's HTTP client without retries and with a ``seconds`` timeout while the block runs
    (MLflow reads both variables at each request); the caller's values come back after."""
    saved = {name: os.environ.get(name) for name in (RETRIES_ENV, TIMEOUT_ENV)}
    os.environ[RETRIES_ENV], os.environ[TIMEOUT_ENV] = "0", str(seconds)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def reach(uri: str | None = None) -> str:
    """Open the tracking store (and a SQLite registry store) once, quickly; the tracking URI.

    Raises:
        TrackingError: the store did not answer within the probe's timeout, or cannot be
            opened; the message names the URI and what to do.
    """
    uri = uri or mlflow.get_tracking_uri()
    registry = mlflow.get_registry_uri() if uri == mlflow.get_tracking_uri() else uri
    for store in dict.fromkeys((uri, registry)):  # e.g. MLFLOW_TRACKING_URI, not the config
        if problem := missing_driver(store):
            raise TrackingError(f"the MLflow tracking store {store!r} {problem}")
    seconds = probe_seconds()
    files = {str(f.resolve()): u for u in (uri, registry) if (f := sqlite_file(u)) is not None}
    try:
        with ExitStack() as locks:
            for path in sorted(files):  # one lock per file, always in the same order
                locks.enter_context(sqlite_lock(files[path]))
            with _quick(seconds):
                client = MlflowClient(tracking_uri=uri, registry_uri=registry)
                client.search_experiments(max_results=1)
                if sqlite_file(registry) is not None:  # creates the registry's tables too
                    client.search_registered_models(max_results=1)
    except Exception as e:  # noqa: BLE001 -- refused, timed out, bad file: all say the same
        text = why(e)
        text = text if len(text) <= MAX_ERROR else text[:MAX_ERROR] + "..."
        raise TrackingError(
            f"the MLflow tracking store {uri!r} cannot be reached or opened ({PROBE_ENV}="
            f"{seconds} s, no retries): {text}; start it or fix MLFLOW_TRACKING_URI / "
            "`tracking.uri`, or set `tracking.enabled: false` to tune without MLflow"
        ) from e
    return uri


def fail_orphaned_models(client: Any, run_id: str) -> list[str]:
    """Mark FAILED the logged models of run ``run_id`` still PENDING whose owner (tag
    ``inc_flow.owner``) is a process of this host that is gone; their ids. A model without the
    tag, or logged from another host, is left alone: whether its process lives is unknown."""
    from mlflow.entities import LoggedModelStatus

    experiment = client.get_run(run_id).info.experiment_id
    found = client.search_logged_models(experiment_ids=[experiment], max_results=1000)
    failed = []
    for model in found:
        if model.source_run_id != run_id or model.status != LoggedModelStatus.PENDING:
            continue
        owner = model.tags.get(k.MODEL_OWNER)
        if owner is None or not process_gone(owner):
            continue
        client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
        failed.append(model.model_id)
        logger.info(
            "logged model %s of run %s was left PENDING by a stopped process (%s): marked FAILED",
            model.model_id,
            run_id,
            owner,
        )
    return failed


__all__ = ["PROBE_ENV", "fail_orphaned_models", "probe_seconds", "reach"]
