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
predictions are the int8 model's outputs, bit for bit. No pickles, no TorchScript. What
``predict`` does per call is :mod:`inc_flow.model.predict`'s.
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

import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
import yaml
from mlflow.entities import LoggedModelStatus
from mlflow.models.model import ModelInfo

from inc_flow.errors import SaveLoadError
from inc_flow.locks import this_process
from inc_flow.model.configure import model_files
from inc_flow.model.factory import build_model
from inc_flow.model.output import (
    CONFIGURE_FILE,
    QuantizedModel,
    load,
    read_configure,
)
from inc_flow.model.predict import Int8PyfuncModel
from inc_flow.model.registry import TAG_DIGEST, content_digest
from inc_flow.model.requirements import model_requirements
from inc_flow.model.serving import (  # InvalidInputError: where callers found it before
    DEFAULTS,
    InvalidInputError,  # noqa: F401
    Limits,
    guard_scoring_server,
)
from inc_flow.model.shipping import logged_size, stage_code
from inc_flow.model.signature import (
    SIDECAR_FILE,
    example_batches,
    input_specs,
    model_signature,
    read_sidecar,
    sidecar_data,
)
from inc_flow.model.threads import check_threads, intra_op_threads, predict_threads
from inc_flow.quant.ao import quiet
from inc_flow.quant.openvino import pip_pin as openvino_pin
from inc_flow.record.keys import MODEL_OWNER, MODEL_SIZE_BYTES
from inc_flow.vocab import Runtime

LOADER_MODULE = __name__  # "inc_flow.model.pyfunc": from the installed inc_flow (a requirement)
DATA_DIR = "inc_flow_model"  # the data dir's name inside the logged model (data/<DATA_DIR>)
# set in `mlflow models serve`'s process (mlflow.pyfunc.scoring_server._SERVER_MODEL_PATH)
SERVER_MODEL_PATH_ENV = "__pyfunc_model_path__"
logger = logging.getLogger("inc_flow")


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
