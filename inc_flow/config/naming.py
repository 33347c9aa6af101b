"""The rules for the names a config gives MLflow, Optuna and the file system.

Pure functions on strings, no mlflow import (``config/`` stays mlflow-free): each
``*_problem(name)`` returns what is wrong with ``name``, or None. The MLflow rules are copies
of MLflow 3.17's own validators; ``tests/test_preflight.py`` runs both on the same names, so
a drift between MLflow and this copy fails a test.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from typing import Any

from inc_flow.config.checks import check_str
from inc_flow.config.problems import Problems

MAX_NAME = 256
"""Registered model and experiment names: the ``name`` column width (``String(256)``) of
MLflow's SQL stores (``mlflow/store/model_registry/dbmodels/models.py`` and
``mlflow/store/tracking/dbmodels/models.py``). MLflow's validator lets experiment names run to
500 characters, but PostgreSQL and MySQL refuse more than 256."""
MAX_STUDY_NAME = 500
"""Optuna's ``study_name`` column is ``String(512)``; an auto study adds ``-dynamic``."""


def default_registered_name(model_name: str, configured: str | None = None) -> str:
    """``tracking.registered_model_name``, else ``<model.name>-int8``."""
    return configured or f"{model_name}-int8"


def filter_problem(name: str) -> str | None:
    """Why ``name`` cannot be a value in an MLflow search filter, or None.

    MLflow's filter parser (``SearchUtils._strip_quotes``) takes a value between single or
    double quotes and has no escape: a value with ``'`` is quoted with ``"`` (see
    :func:`inc_flow.record.keys.quoted`), so only a value holding both quote kinds, or a
    backslash (the SQL tokenizer reads ``\\'`` as an escaped quote), cannot be written.
    """
    if "'" in name and '"' in name:
        return "must not contain both ' and \" (MLflow search filters cannot quote it)"
    if "\\" in name:
        return "must not contain a backslash (MLflow search filters cannot quote it)"
    return None


def registered_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a registered model name, or None.

    MLflow 3.17, ``mlflow/utils/validation.py::_validate_model_name``: not blank; no ``/`` or
    ``:``; ``posixpath.normpath(name) == name``, not ``.``, not starting with ``..`` or ``/``
    (``path_not_unique``). Its file store adds (``mlflow/store/model_registry/file_store.py``):
    no path separator, no ``%``. Then the SQL column width and the filter rule above (inc_flow
    finds versions with ``search_model_versions("name = ...")``).
    """
    if not name.strip():
        return "must not be blank"
    bad = sorted({c for c in name if c in "/:%"})
    if bad:
        return f"must not contain {' or '.join(repr(c) for c in bad)}"
    norm = posixpath.normpath(name)
    if norm != name or norm == "." or norm.startswith("..") or norm.startswith("/"):
        return f"must not read as a path that resolves to another name (it resolves to {norm!r})"
    if len(name) > MAX_NAME:
        return f"must be at most {MAX_NAME} characters, got {len(name)}"
    return filter_problem(name)


def experiment_problem(name: str) -> str | None:
    """Why ``name`` cannot be an MLflow experiment name, or None.

    MLflow 3.17, ``mlflow/utils/validation.py::_validate_experiment_name``: a non-empty string
    of at most 500 characters; here at most 256 (the SQL column, see :data:`MAX_NAME`).
    """
    if not name:
        return "must not be empty"
    if len(name) > MAX_NAME:
        return f"must be at most {MAX_NAME} characters, got {len(name)}"
    return None


def study_problem(name: str) -> str | None:
    """Why ``name`` cannot be a study name: it is an Optuna study name and an MLflow tag value
    that inc_flow searches for."""
    if len(name) > MAX_STUDY_NAME:
        return f"must be at most {MAX_STUDY_NAME} characters, got {len(name)}"
    return filter_problem(name)


_FOLDER = "it names the default output folder outputs/<model.name>"


def path_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be one folder name (``model.name`` names ``outputs/<model.name>``),
    or None: no path separator, not ``.`` or ``..``, no NUL."""
    if "/" in name or "\\" in name:
        return f"must not contain a path separator ('/' or '\\'): {_FOLDER}"
    if name in (".", ".."):
        return f"must not be '.' or '..': {_FOLDER}"
    if "\0" in name:
        return "must not contain a NUL character"
    return None


def check_name(
    p: Problems, key: str, value: Any, rule: Callable[[str], str | None], optional: bool = False
) -> Any:
    """A non-empty string that ``rule`` finds nothing wrong with (None when ``optional``)."""
    value = check_str(p, key, value, optional=optional)
    if isinstance(value, str) and value:
        problem = rule(value)
        if problem:
            p.add(key, f"{problem}, got {value!r}")
    return value


def check_derived_names(
    p: Problems, model_name: str, experiment: str | None, registered: str | None
) -> None:
    """The names ``model.name`` stands in for when ``tracking`` does not give them: the
    experiment (``model.name``) and the registered model (``<model.name>-int8``)."""
    if experiment is None:
        problem = experiment_problem(model_name)
        if problem:
            p.add("model.name", f"{problem} (it is the MLflow experiment), got {model_name!r}")
    if registered is None:
        name = default_registered_name(model_name)
        problem = registered_name_problem(name)
        if problem:
            p.add(
                "model.name",
                f"is not usable in the MLflow registered model name {name!r}: {problem}; "
                "rename the model or set `tracking.registered_model_name`",
            )
