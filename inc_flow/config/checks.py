"""What a config may contain: the allowed names, and the checks every value goes through.

Pure data and pure functions; no torch. ``config.py`` builds its dataclasses on these.
``data.py`` and ``metrics.py`` implement exactly the names in DATASETS, TRANSFORMS, METRICS and
POSTPROCESS. Every check adds a ``(key path, message)`` pair to a :class:`Problems` collector, so
that one :class:`~inc_flow.errors.ConfigError` can report every problem found in a config.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import reprlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from inc_flow.errors import ConfigError

FRAMEWORKS = ("pytorch_fx", "pytorch")
DEVICES = ("cpu",)
APPROACHES = (
    "post_training_static_quant",
    "post_training_dynamic_quant",
    "quant_aware_training",
    "post_training_auto_quant",
)
BACKENDS = ("x86", "onednn", "fbgemm")
STRATEGIES = ("basic", "tpe", "random", "exhaustive", "bayesian", "multi_objective")
OBJECTIVES = ("performance", "accuracy", "modelsize", "footprint")
LAST_BATCH = ("rollover", "no_rollover")
DTYPES = ("int8", "uint8", "fp32")
SCHEMES = ("sym", "asym")
GRANULARITIES = ("per_channel", "per_tensor")
ACTIVATION_ALGORITHMS = ("minmax", "kl")
WEIGHT_ALGORITHMS = ("minmax",)
TENSOR_DTYPES = (
    "float32", "float64", "float16", "bfloat16", "int8", "uint8", "int32", "int64", "bool",
)  # fmt: skip
INTERPOLATIONS = ("bilinear", "nearest", "bicubic")


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()
"""Default of a parameter the user must give."""


@dataclass(frozen=True)
class Param:
    """One parameter of a dataset, transform, metric or postprocess.

    Attributes:
        kind: how the value is checked and normalised (see ``check_param``).
        default: the value used when the key is absent, or ``REQUIRED``.
        choices: allowed values for kind ``choice``.
    """

    kind: str
    default: Any = REQUIRED
    choices: tuple = ()


_DUMMY_RANGE = {
    "low": Param("float_or_list", -1.0),
    "high": Param("float_or_list", 1.0),
    "dtype": Param("dtype_or_list", "float32"),
}
DATASETS: dict[str, dict[str, Param]] = {
    # INC meaning: shape[0] is the number of samples; a list of shapes gives several inputs.
    "dummy": {"shape": Param("shape"), **_DUMMY_RANGE, "label": Param("bool", True)},
    "dummy_v2": {
        "input_shape": Param("shape_per_sample"),
        "label_shape": Param("shape_per_sample_or_empty", ()),
        **_DUMMY_RANGE,
        "length": Param("positive_int", 1000),
    },
    "FashionMNIST": {
        "root": Param("dir", "/usr/share/datasets/fashion-mnist"),
        "train": Param("bool", False),
        "download": Param("no_download", False),
    },
    "MNIST": {
        "root": Param("dir", "/usr/share/datasets/mnist"),
        "train": Param("bool", False),
        "download": Param("no_download", False),
    },
    "ImageFolder": {"root": Param("dir")},
    # inc_flow: a dataset from your own code, ``factory(**kwargs[, transform=...])``.
    "custom": {"factory": Param("factory"), "kwargs": Param("mapping", {})},
}
TRANSFORMS: dict[str, dict[str, Param]] = {
    "ToTensor": {},
    "Normalize": {"mean": Param("floats", (0.0,)), "std": Param("nonzero_floats", (1.0,))},
    "Resize": {
        "size": Param("size"),
        "interpolation": Param("choice", "bilinear", INTERPOLATIONS),
    },
    "CenterCrop": {"size": Param("size")},
}
_COMPARE_LABEL = {"compare_label": Param("bool", True)}
METRICS: dict[str, dict[str, Param]] = {
    "topk": {"k": Param("choice", REQUIRED, (1, 5))},
    "Accuracy": {},
    "Loss": {},
    "MSE": _COMPARE_LABEL,
    "RMSE": _COMPARE_LABEL,
    "MAE": _COMPARE_LABEL,
    "F1": {},
    # inc_flow: mean cosine similarity of outputs and labels (agreement with fp32 embeddings).
    "CosineSimilarity": {"compare_label": Param("bool", False)},
}
POSTPROCESS: dict[str, dict[str, Param]] = {"LabelShift": {"label_shift": Param("int")}}
SCALAR_PARAM = {"topk": "k", "LabelShift": "label_shift"}
"""Entries whose yaml value is their single parameter (``topk: 1``, ``LabelShift: -1``)."""

# INC 1.x keys that inc_flow knows but does not implement: rejected with the reason.
_CONFIGS = "is not supported: inc_flow measures in one process (no multi-instance runs)"
INC_UNSUPPORTED: dict[str, dict[str, str]] = {
    "config": {
        k: "is not supported: inc_flow does quantization only"
        for k in ("graph_optimization", "mixed_precision", "pruning", "distillation", "nas")
    }
    | {
        "use_bf16": "is not supported: inc_flow produces int8/fp32 models only",
        "optimization_level": "is not supported (an INC TensorFlow/ONNX option)",
        "train": "is not supported; set `Quantization.q_func` in Python for training",
    },
    "model": {
        "inputs": "is not needed for PyTorch (an INC TensorFlow/ONNX key); remove it",
        "outputs": "is not needed for PyTorch (an INC TensorFlow/ONNX key); remove it",
    },
    "quantization": {
        "train": "is not supported; set `Quantization.q_func` in Python for training",
        "recipes": "is not supported (INC TensorFlow/ONNX graph recipes)",
        "advance": "is not supported (INC bias correction)",
        "optimization_level": "is not supported (an INC TensorFlow/ONNX option)",
    },
    "tuning": {
        "tensorboard": "is not supported; inc_flow records to MLflow (see `tracking`)",
        "diagnosis": "is not supported; inc_flow records every trial to MLflow",
        "multi_objectives": "is not supported; use `strategy.name: multi_objective`",
    },
    "accuracy": {"configs": _CONFIGS},
    "performance": {
        "configs": _CONFIGS,
        "postprocess": "is not used for performance; put it under `evaluation.accuracy`",
    },
    "dataloader": {"distributed": "is not supported: inc_flow tunes in one process"},
    "strategy": {
        k: "is not supported (an option of INC strategies inc_flow does not have)"
        for k in (
            "sigopt_api_token",
            "sigopt_project_id",
            "sigopt_experiment_name",
            "accuracy_weight",
            "latency_weight",
            "confidence_batches",
            "hawq_v2_loss",
        )
    },  # fmt: skip
    "tensor": {
        "bit": "is not supported (an INC TensorFlow option)",
        "compute_dtype": "is not supported; activations are quantized to `dtype`",
    },
}


# --- collecting problems -------------------------------------------------------------------
def join(prefix: str, key: Any) -> str:
    """``join("tuning", "random_seed") == "tuning.random_seed"``; an empty side is dropped."""
    key = str(key)
    if not prefix:
        return key
    return f"{prefix}.{key}" if key else prefix


class Problems:
    """Collects ``(key path, message)`` pairs; ``raise_if_any`` turns them into one error."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def __len__(self) -> int:
        return len(self.items)

    def add(self, path: str, message: str) -> None:
        self.items.append((path, message))

    def merge(self, prefix: str, error: ConfigError) -> None:
        """Adds the problems of ``error``, raised for the section found at ``prefix``."""
        for path, message in getattr(error, "problems", ((error.path, str(error)),)):
            self.add(join(prefix, path), message)

    def raise_if_any(self, note: str = "") -> None:
        if self.items:
            raise config_error(self.items, note)


def config_error(items: Iterable[tuple[str, str]], note: str = "") -> ConfigError:
    """One ConfigError for all problems: ``path`` is the first path, one line per problem."""
    items = tuple(items)
    (path, message), rest = items[0], items[1:]
    lines = [message] + [f"`{p}` {m}" if p else m for p, m in rest]
    if note:
        lines.append(note)
    error = ConfigError(path, "\n".join(lines))
    error.problems = items  # type: ignore[attr-defined]  # read back by Problems.merge
    return error


_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxlevel, _SHORT_REPR.maxstring, _SHORT_REPR.maxother = 3, 40, 40


def _small(value: Any, limit: int = 200) -> bool:
    """True when ``value`` holds fewer than ``limit`` nested items, so its repr is cheap.

    yaml aliases let a few lines of text build a structure with billions of items
    ("billion laughs"); a full repr of it would take hours.
    """
    stack, count = [value], 0
    while stack:
        count += 1
        if count > limit:
            return False
        item = stack.pop()
        if isinstance(item, Mapping):
            stack += [*item.keys(), *item.values()]
        elif isinstance(item, (list, tuple, set)):
            stack += item
    return True


def show(value: Any) -> str:
    """The value as messages echo it: its repr, shortened, plus the type for containers."""
    text = repr(value) if _small(value) else _SHORT_REPR.repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    if value is None or isinstance(value, (str, bool, int, float)):
        return text
    return f"{text} ({type(value).__name__})"


def unknown_key(key: Any, allowed: Iterable[str], section: str) -> str:
    """Message for a key the closed schema does not have."""
    reason = INC_UNSUPPORTED.get(section, {}).get(str(key))
    if reason:
        return reason
    allowed = list(allowed)
    return f"is not a known key; allowed here: {allowed}{did_you_mean(key, allowed)}"


def did_you_mean(word: Any, options: Iterable[Any]) -> str:
    if not isinstance(word, (str, int, float)):
        return ""  # a container is no misspelt name (and its str may be huge)
    lower = {str(o).lower(): o for o in options}
    match = difflib.get_close_matches(str(word).lower(), list(lower), n=1, cutoff=0.6)
    return f"; did you mean {lower[match[0]]!r}?" if match else ""


def not_one_of(value: Any, allowed: Iterable[Any]) -> str:
    allowed = list(allowed)
    return f"must be one of {allowed}, got {show(value)}{did_you_mean(value, allowed)}"


def unknown_name(what: str, value: Any, allowed: Iterable[Any]) -> str:
    allowed = list(allowed)
    return f"unknown {what} {value!r}; expected one of {allowed}{did_you_mean(value, allowed)}"


# --- scalar checks: return the normalised value (anything on failure, after p.add) ----------
def check_int(p: Problems, path: str, value: Any, minimum: int | None = None) -> Any:
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
    """A list of ints >= ``minimum`` (or an INC-style "1, 28, 28" string) as a tuple."""
    if value is None and optional:
        return None
    if isinstance(value, str):
        try:
            value = [int(v) for v in value.split(",") if v.strip()]
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


STORAGE_SCHEMES = ("sqlite", "postgresql", "mysql")
TRACKING_SCHEMES = ("file", "http", "https", "databricks", "databricks-uc", "uc", "mssql")


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
    return value


def check_tracking_uri(p: Problems, key: str, value: Any) -> Any:
    """An MLflow tracking URI; a plain path (a file store) or ``databricks`` has no scheme."""
    check_str(p, key, value, optional=True)
    if isinstance(value, str) and "://" in value:
        schemes = STORAGE_SCHEMES + TRACKING_SCHEMES
        _check_url(p, key, value, schemes, "'sqlite:///mlflow.db' or 'http://host:5000'")
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
    return check_str(p, key, value, FRAMEWORKS)


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
    return out
