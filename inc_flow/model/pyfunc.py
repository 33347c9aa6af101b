"""The registry flavor: the best int8 model as an MLflow pyfunc, logged and loaded.

:func:`log_model` stages the output directory (``best_configure.yaml`` +
``best_model_weights.pt``) with a small sidecar, ``inc_flow_model.yaml`` (model factory, input
and output specs, thread count; see :mod:`inc_flow.model.signature`), and logs it as a pyfunc
whose loader module is this one. The factory's module and its local imports travel as
``code_paths`` (:mod:`inc_flow.model.shipping`), so the model loads where the factory's
project is not installed; inc_flow itself is a pip requirement, and all requirements are
exact pins (:mod:`inc_flow.model.requirements`). The logged model is tagged with its size
(``model_size_bytes``). MLflow calls :func:`_load_pyfunc`, which
rebuilds the fp32 architecture from the factory and the int8 model with `inc_flow.load`:
predictions are the int8 model's outputs, bit for bit. No pickles, no TorchScript.
``predict`` runs with torch's default intra-op threads (the serving machine's cores), or the
count logged with the model / set by ``INC_FLOW_NUM_THREADS`` (:mod:`inc_flow.model.threads`).
Inputs holding NaN/inf, or more values than a limit, are refused with HTTP 400, and under
``mlflow models serve`` oversized or unparseable bodies get 413/400
(:mod:`inc_flow.model.serving`; the limits are the logged ``model_config``).
The logged model is tagged with its content digest (:func:`inc_flow.model.registry.
content_digest`), so :func:`find_logged_model` finds it again instead of logging it twice.
Registering the logged model is :mod:`inc_flow.model.registry`'s.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
import yaml
from mlflow.entities import LoggedModelStatus
from mlflow.models.model import ModelInfo

from inc_flow.errors import IncFlowError, SaveLoadError
from inc_flow.locks import this_process
from inc_flow.model.configure import model_files
from inc_flow.model.factory import build_model
from inc_flow.model.output import (
    CONFIGURE_FILE,
    QuantizedModel,
    load,
    read_configure,
)
from inc_flow.model.registry import TAG_DIGEST, content_digest
from inc_flow.model.requirements import model_requirements
from inc_flow.model.serving import DEFAULTS, InvalidInputError, Limits, guard_scoring_server
from inc_flow.model.shipping import logged_size, stage_code
from inc_flow.model.signature import (
    FLOAT32,
    SIDECAR_FILE,
    InputSpec,
    as_specs,
    example_batches,
    input_specs,
    model_signature,
    read_sidecar,
    sidecar_data,
    supported_dtype,
)
from inc_flow.model.threads import check_threads, intra_op_threads, predict_threads
from inc_flow.quant.ao import quiet, set_backend
from inc_flow.quant.openvino import pip_pin as openvino_pin
from inc_flow.record.keys import MODEL_OWNER, MODEL_SIZE_BYTES
from inc_flow.vocab import Runtime

LOADER_MODULE = __name__  # "inc_flow.model.pyfunc": from the installed inc_flow (a requirement)
DATA_DIR = "inc_flow_model"  # the data dir's name inside the logged model (data/<DATA_DIR>)
# set in `mlflow models serve`'s process (mlflow.pyfunc.scoring_server._SERVER_MODEL_PATH)
SERVER_MODEL_PATH_ENV = "__pyfunc_model_path__"
logger = logging.getLogger("inc_flow")


class Int8PyfuncModel:
    """What ``_load_pyfunc`` returns: the int8 model behind MLflow's ``predict``.

    Args:
        model: the int8 ``nn.Module``.
        inputs: the model's :class:`InputSpec` list, in ``forward`` order; or a per-sample
            shape, for one unnamed float32 input (a batch is ``(N, *input_shape)``).
        threads: intra-op threads during ``predict`` (restored afterwards); None: torch's
            default, the count is left alone (:mod:`inc_flow.model.threads`).
        backend: the quantized engine the model was built for.
        limits: NaN/inf and size limits on the inputs (:mod:`inc_flow.model.serving`).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        inputs: Sequence[InputSpec] | Sequence[int],
        threads: int | None,
        backend: str,
        limits: Limits | None = None,
    ) -> None:
        self.model = model.eval()
        self.inputs = as_specs(inputs)
        self.threads = check_threads(threads, "`threads`")
        self.backend = backend
        self.limits = limits or Limits()
        self._labels = [s.label for s in self.inputs]
        self._warm = False  # set after the first predict (which runs under `quiet()`)

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
                ``(N, *shape)``, when the inputs' batch sizes differ, when a float input
                holds NaN or ±inf (unless ``model_config`` ``allow_non_finite``), or when
                the inputs hold more than ``max_elements`` values. The message names the
                input and what was expected.
        """
        del params  # the model takes none; accepted because MLflow passes them
        arrays = self._arrays(model_input)
        self.limits.check(arrays, self._labels)
        tensors = [torch.from_numpy(a) for a in arrays]
        if torch.backends.quantized.engine != self.backend:  # set once, or if changed since
            set_backend(self.backend)
        # torch.ao's warnings come once per process, when the int8 kernels first run: only the
        # first call pays for (and races on) warnings.catch_warnings' global filter list
        silence = contextlib.nullcontext() if self._warm else quiet()
        with torch.inference_mode(), intra_op_threads(self.threads), silence:
            out = self.model(*tensors)
        self._warm = True
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
            if not supported_dtype(arr.dtype):
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
            except (ValueError, TypeError, RecursionError) as e:
                why = str(e).partition(". ")[2][:120] or str(e)[:120]
                raise self._fail(spec, f"got non-numeric or ragged data ({why})") from e
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


# MLflow's PyFuncModel.predict calls inspect.signature(predict) on every call (to see whether
# it takes `params`): ~20-30 us of parsing, a lookup with the signature computed once here.
_predict = Int8PyfuncModel.predict
_predict.__signature__ = inspect.signature(_predict)  # type: ignore[attr-defined]


def _load_pyfunc(data_path: str, model_config: dict[str, Any] | None = None) -> Int8PyfuncModel:
    """MLflow's loader entry point: the int8 model in ``data_path``, ready to predict.

    ``model_config`` sets the input limits (:mod:`inc_flow.model.serving`); the thread count
    is ``INC_FLOW_NUM_THREADS``, else the logged one (:mod:`inc_flow.model.threads`). Loaded by
    ``mlflow models serve`` (its ``__pyfunc_model_path__`` is set), it also guards the scoring
    server: bodies over ``max_request_bytes`` get 413, unparseable ones 400.
    """
    limits = Limits.from_config(model_config)
    side = read_sidecar(data_path)
    configure = read_configure(data_path)
    backend = configure["backend"]
    if configure.get("runtime", Runtime.TORCH_FX) != Runtime.TORCH_FX:
        int8 = load(data_path)  # the saved IR: no factory, no fp32 model needed
    else:
        int8 = load(data_path, build_model(side["factory"]))
    if os.environ.get(SERVER_MODEL_PATH_ENV):
        guard_scoring_server(limits)
    threads = predict_threads(side["threads"])
    return Int8PyfuncModel(int8, side["inputs"], threads, backend, limits)


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


def log_model(
    q_model: QuantizedModel | str | Path,
    factory: str,
    example_input: Any = None,
    *,
    code_paths: Sequence[str | Path] | None = None,
    name: str = "model",
    threads: int | None = None,
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
        code_paths: what ships the model definition; default the factory's module and its
            local imports (:func:`inc_flow.model.shipping.stage_code`), never data files.
        name: the model's name in the run.
        threads: intra-op threads used by ``predict``; None (default): torch's default where
            the model is loaded, its cores. ``INC_FLOW_NUM_THREADS`` overrides it at load time
            (:mod:`inc_flow.model.threads`).
        extra_pip: pip requirements beyond inc-flow, torch, torchvision, pyyaml, numpy, pandas
            (exact pins of the installed versions); one naming a package already pinned or
            inferred replaces that pin.
        infer_pip: also pin what the factory's module imports
            (:func:`inc_flow.model.requirements.factory_requirements`).
        input_names: names of the inputs in the signature (not for a single float32 input,
            which stays unnamed); default the model's ``forward`` parameters, else
            ``input_0``, ``input_1``...

    Returns:
        MLflow's ModelInfo (``model_uri`` is what :func:`inc_flow.model.registry.register`
        takes). The logged model is tagged ``content_digest``
        (:func:`inc_flow.model.registry.content_digest`) and ``model_size_bytes``.
    """
    check_threads(threads, "`threads`")
    if not isinstance(q_model, QuantizedModel | str | Path):
        raise SaveLoadError(
            "`q_model` must be a QuantizedModel or an output directory, "
            f"got {type(q_model).__name__}"
        )
    in_memory = q_model if isinstance(q_model, QuantizedModel) else None
    examples = example_batches(example_input, in_memory)
    code = _check_code_paths(factory, code_paths) if code_paths else None
    specs = input_specs(
        examples, input_names, in_memory.model if in_memory is not None else None, factory
    )
    saved = Path(str(q_model)) / CONFIGURE_FILE
    runtime = in_memory.plan.runtime if in_memory is not None else None
    if in_memory is None and saved.is_file():
        runtime = read_configure(saved).get("runtime")
    if runtime == Runtime.OPENVINO:  # the loader needs it too (exact pin, unless given)
        extra_pip = [openvino_pin(), *extra_pip]
    requirements = model_requirements(factory, extra_pip, infer_pip)
    with tempfile.TemporaryDirectory(prefix="inc_flow_log_") as tmp:
        stage = Path(tmp) / DATA_DIR
        if code is None:
            code = stage_code(factory, Path(tmp) / "code")
        if in_memory is not None:
            in_memory.save(stage)
        else:
            stage.mkdir()
            for file in (CONFIGURE_FILE, *model_files(read_configure(q_model))):
                if not (Path(q_model) / file).is_file():
                    raise SaveLoadError(f"no {file} in the output directory {str(q_model)!r}")
                shutil.copy2(Path(q_model) / file, stage / file)
        sidecar = sidecar_data(factory, specs, threads)
        (stage / SIDECAR_FILE).write_text(yaml.safe_dump(sidecar, sort_keys=False))
        pyfunc = _load_pyfunc(str(stage))
        named = specs[0].name is not None
        example = (
            {s.name: a for s, a in zip(specs, examples, strict=True)} if named else examples[0]
        )
        out = pyfunc.predict(example)
        if in_memory is not None:
            with torch.no_grad(), intra_op_threads(pyfunc.threads), quiet():
                ref = in_memory.model(*(torch.from_numpy(a.copy()) for a in examples))
            if not isinstance(ref, torch.Tensor) or not np.array_equal(
                out, (ref.dequantize() if ref.is_quantized else ref).numpy()
            ):
                raise SaveLoadError("the staged int8 model does not reproduce the tuned model")
        sidecar["output"].update(shape=list(out.shape[1:]), dtype=str(out.dtype))
        (stage / SIDECAR_FILE).write_text(yaml.safe_dump(sidecar, sort_keys=False))
        signature = model_signature(specs, out)
        info = mlflow.pyfunc.log_model(
            name=name,
            loader_module=LOADER_MODULE,
            data_path=str(stage),
            code_paths=[str(p) for p in code],
            signature=signature,
            input_example=example,
            pip_requirements=requirements,
            tags={TAG_DIGEST: content_digest(stage), MODEL_OWNER: this_process()},
            model_config=dict(DEFAULTS),  # the input limits, overridable at load time
        )
    size = logged_size(info.model_id)
    mlflow.set_logged_model_tags(info.model_id, {MODEL_SIZE_BYTES: str(size)})
    logger.info("logged the model %s: %.0f KB", info.model_uri, size / 1024)
    return info


def find_logged_model(run_id: str, digest: str) -> str | None:
    """The URI of a model logged (completely) on run ``run_id`` whose content digest is
    ``digest``, or None: a model logged before a process was killed is used again."""
    experiment = mlflow.MlflowClient().get_run(run_id).info.experiment_id
    found = mlflow.search_logged_models(
        experiment_ids=[experiment],
        filter_string=f"tags.`{TAG_DIGEST}` = '{digest}'",
        output_format="list",
    )
    ready = [m for m in found if m.source_run_id == run_id and m.status == LoggedModelStatus.READY]
    return min(ready, key=lambda m: m.creation_timestamp).model_uri if ready else None
