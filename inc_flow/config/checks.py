"""The checks every config value goes through: scalars, paths, URLs, lists, name parameters.

Pure functions; no torch. Each ``check_*(problems, key, value, ...)`` adds a ``(key path,
message)`` pair to a :class:`~inc_flow.config.problems.Problems` collector for every problem it
finds and returns the value normalised (lists become tuples, "1%" becomes 0.01); on failure it
returns anything, as the collected problems are raised together.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from inc_flow.config.drivers import missing_driver
from inc_flow.config.names import (
    DEVICES,
    LAST_BATCH,
    REQUIRED,
    SCALAR_PARAM,
    STORAGE_SCHEMES,
    TENSOR_DTYPES,
    TRACKING_SCHEMES,
    Param,
)
from inc_flow.config.problems import Problems, join, not_one_of, show, unknown_key
from inc_flow.vocab import Framework, names


# --- scalar checks: return the normalised value (anything on failure, after p.add) ----------
def check_int(
    p: Problems, path: str, value: Any, minimum: int | None = None, optional: bool = False
) -> Any:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        p.add(path, f"must be an int, got {show(value)}")
    elif minimum is not None and value < minimum:
        p.add(path, f"must be >= {minimum}, got {value}")
    return value


def check_iteration(p: Problems, path: str, value: Any) -> Any:
    """INC iterations: -1 means the whole dataloader."""
    check_int(p, path, value)
    if isinstance(value, int) and not isinstance(value, bool) and value != -1 and value < 1:
        p.add(path, f"must be -1 (the whole dataloader) or >= 1, got {value}")
    return value


_PERCENT = re.compile(r"\s*([-+]?\d+(?:\.\d*)?|[-+]?\.\d+)\s*%\s*")


def to_float(value: Any, percent: bool = False) -> float | None:
    """int/float, or a numeric string (YAML 1.1 reads ``1e-2`` as a string); "1%" if percent."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        match = _PERCENT.fullmatch(value) if percent else None
        if match:
            return float(match.group(1)) / 100
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def check_float(
    p: Problems,
    path: str,
    value: Any,
    minimum: float | None = None,
    below: float | None = None,
    percent: bool = False,
    optional: bool = False,
) -> Any:
    """A finite float in ``[minimum, below)`` (either bound optional); None if ``optional``."""
    if value is None and optional:
        return None
    number = to_float(value, percent)
    if number is None or not math.isfinite(number):
        kind = "a number or a percentage such as '1%'" if percent else "a number"
        p.add(path, f"must be {kind}, got {show(value)}")
        return value
    if minimum is not None and below is not None and not minimum <= number < below:
        p.add(path, f"must be in [{minimum:g}, {below:g}), got {show(value)}")
    elif minimum is not None and number < minimum:
        p.add(path, f"must be >= {minimum:g}, got {show(value)}")
    return number


def check_bool(p: Problems, path: str, value: Any) -> Any:
    if not isinstance(value, bool):
        p.add(path, f"must be true or false, got {show(value)}")
    return value


def check_str(
    p: Problems, path: str, value: Any, choices: Iterable[str] = (), optional: bool = False
) -> Any:
    """A non-empty string, from ``choices`` when given; None allowed when ``optional``."""
    choices = tuple(choices)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        p.add(path, f"must be a non-empty string, got {show(value)}")
    elif choices and value not in choices:
        p.add(path, not_one_of(value, choices))
    return value


def check_path(p: Problems, path: str, value: Any, directory: bool, optional: bool = False) -> Any:
    """An existing file or directory; relative paths resolve against the current directory."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    check_str(p, path, value, optional=optional)
    if isinstance(value, str) and value:
        exists = os.path.isdir(value) if directory else os.path.isfile(value)
        if not exists:
            what = "directory" if directory else "file"
            where = "" if os.path.isabs(value) else f" (relative to {os.getcwd()})"
            p.add(path, f"{what} not found: {value!r}{where}")
    return value


def check_names(
    p: Problems, path: str, value: Any, choices: Iterable[str], optional: bool = True
) -> Any:
    """A list of names from ``choices`` as a tuple without duplicates.

    Like INC's model_wise values, a single string is accepted and split on commas/spaces.
    """
    choices = tuple(choices)
    if value is None and optional:
        return None
    if isinstance(value, str):
        value = [v for v in re.split(r"[,\s]+", value) if v]
    if not isinstance(value, (list, tuple)):
        p.add(path, f"must be a list of names from {list(choices)}, got {show(value)}")
        return value
    if not value:
        p.add(path, f"must not be empty; choose from {list(choices)}")
    bad = [item for item in value if not isinstance(item, str) or item not in choices]
    for item in bad:
        p.add(path, not_one_of(item, choices))
    return value if bad else tuple(dict.fromkeys(value))  # bad items may be unhashable


def check_ints(
    p: Problems,
    path: str,
    value: Any,
    allow_empty: bool = False,
    minimum: int = 1,
    optional: bool = False,
) -> Any:
    """A list of ints >= ``minimum`` (or an INC-style "1, 28, 28" / "50 100 500" string)."""
    if value is None and optional:
        return None
    if isinstance(value, str):
        try:
            value = [int(v) for v in re.split(r"[,\s]+", value) if v]  # "1, 2" or "1 2"
        except ValueError:
            p.add(path, f"must be a list of ints, got {show(value)}")
            return value
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    ok = isinstance(value, (list, tuple)) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    )
    if not ok:
        p.add(path, f"must be a list of ints, got {show(value)}")
        return value
    if not value and not allow_empty:
        p.add(path, "must not be empty")
    if any(v < minimum for v in value):
        p.add(path, f"must hold ints >= {minimum}, got {list(value)}")
    return tuple(value)


def check_floats(p: Problems, path: str, value: Any, nonzero: bool = False) -> Any:
    """A number or a list of numbers, as a tuple of floats."""
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    numbers = [to_float(v) for v in items]
    if not items or any(n is None or not math.isfinite(n) for n in numbers):
        p.add(path, f"must be a number or a non-empty list of numbers, got {show(value)}")
        return value
    if nonzero and 0.0 in numbers:
        p.add(path, f"must not contain 0 (it divides), got {show(value)}")
    return tuple(numbers)


# --- checks of particular fields ----------------------------------------------------------
def check_text(p: Problems, key: str, value: Any, optional: bool = False) -> Any:
    """A string or path-like (kept as a string)."""
    value = os.fspath(value) if isinstance(value, os.PathLike) else value
    return check_str(p, key, value, optional=optional)


def check_workspace(p: Problems, key: str, value: Any) -> Any:
    """A directory path; it may not exist yet, but it must not be a file."""
    value = check_text(p, key, value)
    if isinstance(value, str) and os.path.exists(value) and not os.path.isdir(value):
        p.add(key, f"must be a directory, got the file {value!r}")
    return value


def sqlite_folder(url: str) -> str | None:
    """The folder of an SQLite URL's file (``"."`` for a bare name); None for other URLs."""
    scheme, _, rest = url.partition("://")
    file = rest[1:].partition("?")[0] if scheme.split("+")[0] == "sqlite" else ""
    return os.path.dirname(file) or "." if file and file != ":memory:" else None


def folder_not_found(folder: str) -> str:
    where = "" if os.path.isabs(folder) else f" (relative to {os.getcwd()})"
    return f"directory not found: {folder!r}{where}; SQLite creates files, not folders"


def _check_url(p: Problems, key: str, value: str, schemes: tuple[str, ...], example: str) -> None:
    """``scheme://...`` with a known scheme (``+driver`` allowed)."""
    scheme = value.partition("://")[0]
    if scheme.split("+")[0] not in schemes:
        p.add(
            key,
            f"must be a URL such as {example}, with a scheme from {list(schemes)}, got {value!r}",
        )


def check_storage(p: Problems, key: str, value: Any) -> Any:
    """An Optuna storage URL (``sqlite``, ``postgresql``, ``mysql``), or ``:memory:``. (An
    SQLite file's folder is checked with the workspace, which is created before the study.)"""
    check_str(p, key, value, optional=True)
    if isinstance(value, str) and value and value != ":memory:":
        _check_url(p, key, value, STORAGE_SCHEMES, "'sqlite:///path/optuna.db'")
        if problem := missing_driver(value):
            p.add(key, f"{value!r} {problem}")
    return value


def check_tracking_uri(p: Problems, key: str, value: Any) -> Any:
    """An MLflow tracking URI; a plain path (a file store) or ``databricks`` has no scheme."""
    check_str(p, key, value, optional=True)
    if isinstance(value, str) and "://" in value:
        schemes = STORAGE_SCHEMES + TRACKING_SCHEMES
        _check_url(p, key, value, schemes, "'sqlite:///mlflow.db' or 'http://host:5000'")
        if problem := missing_driver(value):
            p.add(key, f"{value!r} {problem}")
    return value  # (MLflow creates an SQLite file's folder)


def check_last_batch(p: Problems, key: str, value: Any) -> Any:
    value = "no_rollover" if value == "discard" else value  # "discard" is INC's schema name
    return check_str(p, key, value, LAST_BATCH)


def check_no_filter(p: Problems, key: str, value: Any) -> Any:
    if value is not None:
        p.add(key, "is not supported (INC's LabelBalance filter); remove it")
    return value


def check_seed(p: Problems, key: str, value: Any) -> Any:
    check_int(p, key, value, minimum=0)
    if isinstance(value, int) and value >= 2**32:
        p.add(key, f"must be < 2**32, got {value}")
    return value


def check_framework(p: Problems, key: str, value: Any) -> Any:
    if value == "pytorch_ipex":
        p.add(
            key,
            "'pytorch_ipex' is not supported: inc_flow uses PyTorch's own int8 kernels; "
            "use 'pytorch_fx' (default) or 'pytorch' (eager)",
        )
        return value
    return check_str(p, key, value, names(Framework))


_FACTORY = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def check_factory(p: Problems, key: str, value: Any) -> Any:
    check_str(p, key, value, optional=True)
    if isinstance(value, str) and value and not _FACTORY.fullmatch(value):
        p.add(key, f"must look like 'package.module:callable', got {value!r}")
    return value


def check_device(p: Problems, key: str, value: Any) -> Any:
    if value in ("gpu", "cuda", "xpu"):
        p.add(
            key,
            f"must be 'cpu', got {value!r}: the int8 kernels inc_flow uses "
            "(x86/onednn/fbgemm) run on CPU",
        )
        return value
    return check_str(p, key, value, DEVICES)


def check_version(p: Problems, key: str, value: Any) -> Any:
    if to_float(value) != 1.0:
        p.add(key, f"must be 1.0 (the INC 1.x config format), got {show(value)}")
        return value
    return 1.0


# --- parameters of datasets, transforms, metrics, postprocess -------------------------------
def check_param(p: Problems, path: str, param: Param, value: Any) -> Any:
    """Checks one parameter value against its ``Param`` and returns it normalised."""
    kind = param.kind
    if kind == "bool":
        return check_bool(p, path, value)
    if kind == "int":
        return check_int(p, path, value)
    if kind == "positive_int":
        return check_int(p, path, value, minimum=1)
    if kind == "choice":
        if not any(value == c and type(value) is type(c) for c in param.choices):
            p.add(path, f"must be one of {list(param.choices)}, got {show(value)}")
        return value
    if kind == "dir":
        return check_path(p, path, value, directory=True)
    if kind == "no_download":
        check_bool(p, path, value)
        if value is True:
            p.add(path, "downloads are not supported; point `root` at local IDX files")
        return value
    if kind == "factory":
        if isinstance(value, str) and value:
            return check_factory(p, path, value)
        return check_str(p, path, value)
    if kind == "mapping":
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            p.add(path, f"must be a mapping of keyword arguments, got {show(value)}")
            return {}
        return dict(value)
    if kind in ("floats", "nonzero_floats"):
        return check_floats(p, path, value, nonzero=kind == "nonzero_floats")
    if kind == "float_or_list":
        if isinstance(value, (list, tuple)):
            return check_floats(p, path, value)
        return check_float(p, path, value)
    if kind == "dtype_or_list":
        if isinstance(value, (list, tuple)):
            return check_names(p, path, value, TENSOR_DTYPES, optional=False)
        return check_str(p, path, value, TENSOR_DTYPES)
    if kind in ("shape_per_sample", "shape_per_sample_or_empty"):
        return check_ints(p, path, value, allow_empty=kind.endswith("empty"))
    if kind == "shape":
        if isinstance(value, (list, tuple)) and value and isinstance(value[0], (list, tuple)):
            return tuple(check_ints(p, f"{path}[{i}]", v) for i, v in enumerate(value))
        return check_ints(p, path, value)
    if kind == "size":
        if isinstance(value, int) and not isinstance(value, bool):
            return check_int(p, path, value, minimum=1)
        size = check_ints(p, path, value)
        if isinstance(size, tuple) and len(size) != 2:
            p.add(path, f"must be an int or [height, width], got {show(value)}")
        return size
    raise ValueError(f"unknown Param kind {kind!r}")  # a bug in the tables above


def check_params(
    p: Problems, path: str, name: str, params: Any, table: Mapping[str, Param]
) -> dict[str, Any]:
    """Checks the parameters of the entry ``name`` (errors under ``path``); fills defaults."""
    out: dict[str, Any] = {}
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        p.add(path, f"must be a mapping of parameters {list(table)}, got {show(params)}")
        return out
    scalar = SCALAR_PARAM.get(name)
    for key in params:
        if key not in table:
            p.add(join(path, key), unknown_key(key, table, ""))
    for key, param in table.items():
        where = path if key == scalar else join(path, key)
        if key in params:
            out[key] = check_param(p, where, param, params[key])
        elif param.default is REQUIRED:
            p.add(where, "is required")
        else:
            out[key] = param.default
            if param.kind == "dir" and not os.path.isdir(param.default):  # MNIST's root
                p.add(where, f"is not given, and its default {param.default!r} does not exist")
    return out
