"""The registry flavor: the best int8 model as an MLflow pyfunc, and its registration.

:func:`log_model` stages the output directory (``best_configure.yaml`` +
``best_model_weights.pt``) with a small sidecar, ``inc_flow_model.yaml`` (model factory, input
and output specs, thread count), and logs it as a pyfunc whose loader module is this one. The
factory's top-level package and the ``inc_flow`` package travel as ``code_paths``, so the model
loads where neither is installed. MLflow calls :func:`_load_pyfunc`, which rebuilds the fp32
architecture from the factory and the int8 model with :func:`inc_flow.io.load`: predictions
are the int8 model's outputs, bit for bit. No pickles, no TorchScript.

:func:`register` creates a registry version with the scores as tags and moves the alias
``champion`` only when the new version beats the current one (:func:`decide_alias`);
otherwise the version gets ``challenger``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import math
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
import yaml
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    RESOURCE_DOES_NOT_EXIST,
    ErrorCode,
)
from mlflow.types.schema import Schema, TensorSpec

from inc_flow import fx
from inc_flow.errors import IncFlowError, SaveLoadError
from inc_flow.io import CONFIGURE_FILE, WEIGHTS_FILE, QuantizedModel, load, read_configure
from inc_flow.modeling import build_model, import_factory

logger = logging.getLogger("inc_flow")

LOADER_MODULE = __name__  # "inc_flow.flavor"
PACKAGE_DIR = Path(__file__).resolve().parent  # shipped, so the loader needs no install
SIDECAR_FILE = "inc_flow_model.yaml"
SIDECAR_VERSION = 1
DATA_DIR = "inc_flow_model"  # the data dir's name inside the logged model (data/<DATA_DIR>)
CHAMPION, CHALLENGER = "champion", "challenger"
# Exact pins of what the loader imports; the model's own extra packages go in `extra_pip`.
REQUIREMENTS = ("torch", "torchvision", "pyyaml", "numpy", "pandas")
METRIC_TAGS = {"accuracy": "accuracy", "relative_drop": "drop", "speedup": "speedup"}
REQUIRED_METRICS = ("accuracy", "relative_drop", "latency_ms")
REQUIRED_TAGS = ("backend", "approach", "study")


class RegistryError(IncFlowError, ValueError):
    """A registration lacks the scores or facts the aliases are decided on."""


class InvalidInputError(MlflowException, IncFlowError):
    """A prediction input has the wrong type, dtype or shape (HTTP 400 when served)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)


# --- the pyfunc: loading and predicting ---------------------------------------------------
class Int8PyfuncModel:
    """What ``_load_pyfunc`` returns: the int8 model behind MLflow's ``predict``.

    Args:
        model: the int8 ``nn.Module``.
        input_shape: per-sample input shape; a batch is ``(N, *input_shape)``.
        threads: intra-op threads during ``predict`` (restored afterwards).
        backend: the quantized engine the model was built for.
    """

    def __init__(
        self, model: torch.nn.Module, input_shape: Sequence[int], threads: int, backend: str
    ) -> None:
        self.model = model.eval()
        self.input_shape = tuple(int(d) for d in input_shape)
        self.threads = int(threads)
        self.backend = backend

    @property
    def expected(self) -> str:
        return f"float32 array of shape (-1, {', '.join(map(str, self.input_shape))})"

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> np.ndarray:
        """The int8 model's outputs for a float32 batch (ndarray, DataFrame or nested list).

        Raises:
            InvalidInputError: (an ``MlflowException`` with ``INVALID_PARAMETER_VALUE``) when
                the input is not numeric, not float32 or not ``(N, *input_shape)``.
        """
        del params  # the model takes none; accepted because MLflow passes them
        batch = torch.from_numpy(self._batch(model_input))
        with torch.no_grad(), _threads(self.threads), fx.quiet():
            fx.set_engine(self.backend)
            out = self.model(batch)
        if not isinstance(out, torch.Tensor):
            raise IncFlowError(f"the int8 model returned {type(out).__name__}, not a tensor")
        return (out.dequantize() if out.is_quantized else out).numpy()

    def _batch(self, model_input: Any) -> np.ndarray:
        if isinstance(model_input, pd.DataFrame):
            try:
                arr = model_input.to_numpy(dtype=np.float32)
            except (ValueError, TypeError) as e:
                raise InvalidInputError(
                    f"expected a {self.expected}; got non-numeric columns"
                ) from e
            if arr.shape[1] != math.prod(self.input_shape):
                raise InvalidInputError(
                    f"expected a {self.expected} (or {math.prod(self.input_shape)} columns); "
                    f"got a DataFrame with {arr.shape[1]} columns"
                )
            arr = arr.reshape(-1, *self.input_shape)
        elif isinstance(model_input, list | tuple):
            try:
                arr = np.asarray(model_input, dtype=np.float32)
            except (ValueError, TypeError) as e:
                raise InvalidInputError(f"expected a {self.expected}; got non-numeric data") from e
        elif isinstance(model_input, np.ndarray):
            arr = model_input
        else:
            raise InvalidInputError(
                f"expected a {self.expected}; got {type(model_input).__name__}"
            )
        if arr.dtype != np.float32:
            raise InvalidInputError(f"expected a {self.expected}; got dtype {arr.dtype}")
        if (
            arr.ndim != len(self.input_shape) + 1
            or arr.shape[1:] != self.input_shape
            or not len(arr)
        ):
            raise InvalidInputError(f"expected a {self.expected}; got shape {tuple(arr.shape)}")
        return np.require(arr, np.float32, ["C", "W"])  # torch wants writable memory


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def read_sidecar(data_path: str | Path) -> dict[str, Any]:
    """Read and check ``inc_flow_model.yaml`` in a logged model's data directory."""
    path = Path(data_path) / SIDECAR_FILE
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise SaveLoadError(f"cannot read {str(path)!r}: {e}") from e
    if not isinstance(data, dict) or data.get("format_version") != SIDECAR_VERSION:
        raise SaveLoadError(
            f"{str(path)!r} must be an inc_flow sidecar with format_version {SIDECAR_VERSION}"
        )
    try:
        return {
            "factory": str(data["factory"]),
            "input_shape": [int(d) for d in data["input"]["shape"]],
            "threads": int(data.get("threads", 1)),
        }
    except (KeyError, TypeError, ValueError) as e:
        raise SaveLoadError(f"{str(path)!r} is malformed: {e!r}") from e


def _load_pyfunc(data_path: str) -> Int8PyfuncModel:
    """MLflow's loader entry point: the int8 model in ``data_path``, ready to predict."""
    side = read_sidecar(data_path)
    int8 = load(data_path, build_model(side["factory"]))
    backend = read_configure(data_path)["backend"]
    return Int8PyfuncModel(int8, side["input_shape"], side["threads"], backend)


# --- logging the model ---------------------------------------------------------------------
def pip_requirements(extra: Sequence[str] = ()) -> list[str]:
    """Exact pins of the installed packages the loader needs, then ``extra``."""
    return [f"{p}=={importlib.metadata.version(p)}" for p in REQUIREMENTS] + list(extra)


def factory_code_path(factory: str) -> Path:
    """The file or directory that makes ``factory`` importable: its top-level package."""
    import_factory(factory)  # imports the module (and its parents), or names the problem
    top = sys.modules[factory.partition(":")[0].split(".")[0]]
    locations = list(getattr(top, "__path__", []))
    return Path(locations[0] if locations else top.__file__).resolve()


def _check_code_paths(factory: str, code_paths: Sequence[str | Path]) -> list[Path]:
    paths = [Path(p).resolve() for p in code_paths]
    top = factory.partition(":")[0].split(".")[0]
    if not any((p.stem if p.is_file() else p.name) == top for p in paths):
        raise SaveLoadError(
            f"`code_paths` must hold the package {top!r} of factory {factory!r} (MLflow puts "
            f"each path's last component on sys.path), got {[str(p) for p in paths]}"
        )
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise SaveLoadError(f"`code_paths` do not exist: {missing}")
    return paths


def _example(example_input: Any, q_model: QuantizedModel | None) -> np.ndarray:
    if example_input is None and q_model is not None:
        inputs = q_model.example_inputs
        example_input = inputs[0] if isinstance(inputs, tuple | list) else inputs
    if isinstance(example_input, torch.Tensor):
        example_input = example_input.detach().cpu().numpy()
    if not isinstance(example_input, np.ndarray) or example_input.dtype != np.float32:
        raise SaveLoadError(
            "`example_input` must be a float32 batch (numpy or torch) of the model's single "
            f"input, got {type(example_input).__name__}"
            + (f" of dtype {example_input.dtype}" if hasattr(example_input, "dtype") else "")
        )
    if example_input.ndim < 1 or not len(example_input):
        raise SaveLoadError(
            f"`example_input` must be a non-empty batch, got {example_input.shape}"
        )
    return example_input[:1].copy()


def log_model(
    q_model: QuantizedModel | str | Path,
    factory: str,
    example_input: np.ndarray | torch.Tensor | None = None,
    *,
    code_paths: Sequence[str | Path] | None = None,
    name: str = "model",
    threads: int = 1,
    extra_pip: Sequence[str] = (),
) -> ModelInfo:
    """Log the int8 model as an MLflow pyfunc (loader ``inc_flow.flavor``) in the active run.

    The staged model is loaded back and run on the example before anything is logged; with a
    ``QuantizedModel`` its outputs must equal the in-memory model's.

    Args:
        q_model: the quantized model, or an output directory written by ``q_model.save``.
        factory: ``"package.module:callable"`` building the fp32 architecture (``model.factory``).
        example_input: a float32 batch of the single input (e.g. a calibration batch); its
            first sample is the input example, its per-sample shape the signature. Default: the
            ``QuantizedModel``'s example inputs (required with a directory).
        code_paths: what ships the model definition; default the factory's top-level package.
        name: the model's name in the run.
        threads: intra-op threads used by ``predict`` (the tuner measures with 1).
        extra_pip: pip requirements beyond torch, torchvision, pyyaml, numpy and pandas.

    Returns:
        MLflow's ModelInfo (``model_uri`` is what :func:`register` takes).
    """
    if threads < 1:
        raise SaveLoadError(f"`threads` must be >= 1, got threads={threads!r}")
    if not isinstance(q_model, QuantizedModel | str | Path):
        raise SaveLoadError(
            "`q_model` must be a QuantizedModel or an output directory, "
            f"got {type(q_model).__name__}"
        )
    in_memory = q_model if isinstance(q_model, QuantizedModel) else None
    example = _example(example_input, in_memory)
    code = _check_code_paths(factory, code_paths) if code_paths else [factory_code_path(factory)]
    with tempfile.TemporaryDirectory(prefix="inc_flow_log_") as tmp:
        stage = Path(tmp) / DATA_DIR
        if in_memory is not None:
            in_memory.save(stage)
        else:
            stage.mkdir()
            for file in (CONFIGURE_FILE, WEIGHTS_FILE):
                if not (Path(q_model) / file).is_file():
                    raise SaveLoadError(f"no {file} in the output directory {str(q_model)!r}")
                shutil.copy2(Path(q_model) / file, stage / file)
        sidecar = {
            "format_version": SIDECAR_VERSION,
            "factory": factory,
            "input": {"shape": list(example.shape[1:]), "dtype": "float32"},
            "output": {"type": "tensor"},
            "threads": int(threads),
        }
        (stage / SIDECAR_FILE).write_text(yaml.safe_dump(sidecar, sort_keys=False))
        pyfunc = _load_pyfunc(str(stage))
        out = pyfunc.predict(example)
        if in_memory is not None:
            with torch.no_grad(), _threads(threads), fx.quiet():
                ref = in_memory.model(torch.from_numpy(example))
            if not np.array_equal(out, (ref.dequantize() if ref.is_quantized else ref).numpy()):
                raise SaveLoadError("the staged int8 model does not reproduce the tuned model")
        sidecar["output"].update(shape=list(out.shape[1:]), dtype=str(out.dtype))
        (stage / SIDECAR_FILE).write_text(yaml.safe_dump(sidecar, sort_keys=False))
        signature = ModelSignature(
            inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *example.shape[1:]))]),
            outputs=Schema([TensorSpec(out.dtype, (-1, *out.shape[1:]))]),
        )
        return mlflow.pyfunc.log_model(
            name=name,
            loader_module=LOADER_MODULE,
            data_path=str(stage),
            code_paths=[str(p) for p in code] + [str(PACKAGE_DIR)],
            signature=signature,
            input_example=example,
            pip_requirements=pip_requirements(extra_pip),
        )


# --- the registry --------------------------------------------------------------------------
def canonical(value: Any) -> str:
    """Sorted, compact JSON: the criterion tag, and what :func:`fingerprint` hashes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def fingerprint(value: Any) -> str:
    """A short stable hash of a description of the eval data (e.g. ``evaluation.accuracy``)."""
    return "sha256:" + hashlib.sha256(canonical(value).encode()).hexdigest()[:16]


def registered_model_name(model_name: str, configured: str | None = None) -> str:
    """``tracking.registered_model_name``, else ``<model.name>-int8``."""
    return configured or f"{model_name}-int8"


def _decide(new: Mapping[str, Any], current: Mapping[str, Any] | None) -> tuple[str, str]:
    if not new.get("meets_target"):
        return CHALLENGER, "it does not meet the accuracy target"
    if current is None:
        return CHAMPION, "there is no champion yet"
    for key, what in (("eval_data", "eval data"), ("criterion", "accuracy criterion")):
        if current.get(key) is None or current.get(key) != new.get(key):
            return CHAMPION, f"the champion was judged on another {what}"
    if current.get("meets_target") is False:
        return CHAMPION, "the champion does not meet the accuracy target"
    new_ms, cur_ms = new.get("latency_ms"), current.get("latency_ms")
    if cur_ms is None:
        return CHAMPION, "the champion has no latency to compare"
    if new_ms is not None and new_ms < cur_ms:
        return CHAMPION, f"it is faster ({new_ms:.4g} ms < {cur_ms:.4g} ms)"
    return CHALLENGER, f"it is not faster than the champion ({new_ms} ms vs {cur_ms:.4g} ms)"


def decide_alias(new: Mapping[str, Any], current: Mapping[str, Any] | None) -> str:
    """``champion`` or ``challenger`` for a new version.

    Both mappings hold ``meets_target`` (bool), ``latency_ms`` (float), ``eval_data`` and
    ``criterion`` (strings); ``current`` is the champion's (None when there is none). The new
    version becomes champion when it meets its accuracy target and either is faster than a
    champion judged on the same eval data and criterion, or the champion's judgement is not
    comparable (other eval data or criterion, missing facts, not meeting the target).
    """
    return _decide(new, current)[0]


def _facts_from_tags(tags: Mapping[str, str]) -> dict[str, Any]:
    def number(key: str) -> float | None:
        try:
            return float(tags[key])
        except (KeyError, ValueError):
            return None

    meets = tags.get("meets_target")
    return {
        "eval_data": tags.get("eval_data"),
        "criterion": tags.get("criterion"),
        "latency_ms": number("latency_ms"),
        "meets_target": None if meets is None else meets.lower() == "true",
    }


def champion(name: str) -> Any:
    """The registry version aliased ``champion`` under ``name``, or None."""
    client = mlflow.MlflowClient()
    try:
        # Stores differ in the error for a missing alias (the SQL store says
        # INVALID_PARAMETER_VALUE), so the alias is looked up on the model first.
        aliases = client.get_registered_model(name).aliases
    except MlflowException as e:
        if e.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return None
        raise
    return client.get_model_version_by_alias(name, CHAMPION) if CHAMPION in aliases else None


def register(
    model_uri: str,
    name: str,
    metrics: Mapping[str, float],
    tags: Mapping[str, Any],
    *,
    eval_data: str,
    criterion: str,
    meets_target: bool = True,
) -> Any:
    """Register ``model_uri`` under ``name`` and alias it ``champion`` or ``challenger``.

    Uses MLflow's current registry URI. Version tags: accuracy, drop (relative), speedup,
    latency_ms, backend, approach, study, eval_data, criterion, meets_target, alias_reason
    and any other ``tags``.

    Args:
        model_uri: ``ModelInfo.model_uri`` from :func:`log_model`.
        name: the registered model (see :func:`registered_model_name`).
        metrics: ``accuracy``, ``relative_drop``, ``latency_ms``; optional ``speedup``
            (fp32 latency / int8 latency) and ``absolute_drop``.
        tags: ``backend``, ``approach``, ``study``, and any others to set.
        eval_data: identifies the eval data and metric (see :func:`fingerprint`).
        criterion: the accuracy criterion (see :func:`canonical`).
        meets_target: whether the model met its accuracy target.

    Returns:
        The new ModelVersion (``.version``), with its alias set.
    """
    missing = [k for k in REQUIRED_METRICS if metrics.get(k) is None]
    missing += [k for k in REQUIRED_TAGS if tags.get(k) is None]
    if missing:
        raise RegistryError(
            f"register needs {missing} in `metrics`/`tags`, got "
            f"metrics={dict(metrics)!r}, tags={dict(tags)!r}"
        )
    # Read before creating the version, so it is never compared with itself. Two studies
    # registering the same name at once may both read the same champion; the last alias wins.
    current = champion(name)
    version_tags = {str(k): str(v) for k, v in tags.items()}
    for key, value in metrics.items():
        version_tags[METRIC_TAGS.get(key, key)] = repr(float(value))
    new = {
        "eval_data": eval_data,
        "criterion": criterion,
        "latency_ms": float(metrics["latency_ms"]),
        "meets_target": bool(meets_target),
    }
    old = None if current is None else _facts_from_tags(current.tags)
    alias, reason = _decide(new, old)
    version_tags.update(
        eval_data=eval_data,
        criterion=criterion,
        meets_target=str(bool(meets_target)).lower(),
        alias_reason=reason,
    )
    mv = mlflow.register_model(model_uri, name, tags=version_tags)
    client = mlflow.MlflowClient()
    client.set_registered_model_alias(name, alias, mv.version)
    logger.info("registered %s version %s as %s: %s", name, mv.version, alias, reason)
    return client.get_model_version(name, mv.version)
