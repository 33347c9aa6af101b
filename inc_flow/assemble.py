"""Config -> the parts a study runs on: model, loaders, evaluator, benchmark, engine, search
space, :class:`~inc_flow.search.records.TuneSettings` and study name (no MLflow, no Optuna).

:func:`assemble` builds what every approach shares (INC's priority: ``eval_func`` >
``eval_dataloader`` + metric > yaml ``evaluation.accuracy``); :func:`stage` adds the engine,
space and settings of one approach. The study fingerprint (:mod:`inc_flow.fingerprint`) is
computed here: its shared parts in :func:`assemble`, one approach's in :func:`stage`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from inc_flow import fingerprint
from inc_flow.config.sections import Config
from inc_flow.data.batches import first_input
from inc_flow.data.loaders import build_dataloader
from inc_flow.errors import ConfigError, DataError
from inc_flow.metrics.build import apply_postprocess, build_metric, wants_reference
from inc_flow.model.factory import build_model
from inc_flow.quant.engine import FxEngine
from inc_flow.quant.evaluate import LatencyBenchmark, MetricEvaluator, batch_size_of
from inc_flow.quant.runtimes import RuntimeEngine, check_runtimes
from inc_flow.search.runtimes import RuntimeSpace
from inc_flow.search.settings import TuneSettings
from inc_flow.search.space import SearchSpace
from inc_flow.vocab import Approach, Objective, Role, Runtime

logger = logging.getLogger("inc_flow")

SHORT_APPROACH = {Approach.STATIC: "static", Approach.DYNAMIC: "dynamic", Approach.QAT: "qat"}


@dataclass
class Assembly:
    """What every approach of one quantization shares."""

    model: nn.Module  # the fp32 model, in eval mode
    example: Any  # example inputs (tracing, benchmark, the saved model)
    evaluator: MetricEvaluator | None  # None: nothing to evaluate accuracy with
    benchmark: LatencyBenchmark
    calib_loader: Iterable[Any] | None
    sampling_size: int
    approaches: tuple[str, ...]  # auto: static, then dynamic
    eval_func: Callable[[nn.Module], float] | None = None
    q_func: Callable[[nn.Module], Any] | None = None
    fingerprint: dict[str, str] = field(default_factory=dict)  # see inc_flow.fingerprint


@dataclass
class Stage:
    """One approach's study: its engine, search space and settings."""

    approach: str
    engine: FxEngine
    space: SearchSpace
    settings: TuneSettings


def unwrap(model: Any) -> nn.Module:
    """The ``nn.Module`` of ``model``, or of INC's ``common.Model`` wrapper / a q_model."""
    if isinstance(model, nn.Module):
        return model
    inner = getattr(model, "model", None) or getattr(model, "_model", None)
    if isinstance(inner, nn.Module):  # INC's common.Model wrapper, or a q_model
        return inner
    raise ConfigError("model", f"must be a torch.nn.Module, got {type(model).__name__}")


def study_name_for(cfg: Config, approach: str) -> str:
    """``tuning.study_name``, or one derived from the model and the config's content, so
    rerunning the same config resumes the same study and another config starts afresh."""
    if cfg.tuning.study_name:
        return (
            cfg.tuning.study_name
            if approach != Approach.DYNAMIC or cfg.quantization.approach != Approach.AUTO
            else f"{cfg.tuning.study_name}-dynamic"
        )
    body = cfg.to_dict()
    body.pop("tracking", None)
    body["tuning"].pop("finalists", None)  # the round after the search: not the study's
    digest = hashlib.sha1(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:8]
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", cfg.model.name)
    return f"{safe}-{SHORT_APPROACH.get(approach, approach)}-{digest}"


def _act_algorithms(act: Any, approach: str) -> tuple[str, ...]:
    if act is not None and act.algorithm:
        return tuple(act.algorithm)
    # QAT learns its ranges; a histogram fake-quant would only slow training down.
    return ("minmax",) if approach == Approach.QAT else ("minmax", "kl")


# config tensor field -> the OpPlan setting it constrains
_SETTING_OF = {
    ("activation", "algorithm"): "act_algorithm",
    ("activation", "scheme"): "act_scheme",
    ("weight", "granularity"): "weight_granularity",
    ("weight", "scheme"): "weight_scheme",
}


def search_space(cfg: Config, ops: list[tuple[str, str]], approach: str) -> SearchSpace:
    """The search space of ``ops`` (name, op type) under the config's tuning space: model_wise
    gives the global choices, an op whose op_wise/optype_wise entry allows other values gets
    them as its own constraint (see ``SearchSpace.op_settings``)."""
    q = cfg.quantization
    allowed: dict[str, tuple[str, ...]] = {}
    model_wise = q.model_wise
    act = model_wise.activation if model_wise is not None else None
    weight = model_wise.weight if model_wise is not None else None
    globals_ = {
        "act_algorithm": _act_algorithms(act, approach),
        "act_scheme": tuple(act.scheme) if act is not None and act.scheme else ("asym",),
        "weight_granularity": (
            tuple(weight.granularity)
            if weight is not None and weight.granularity
            else ("per_channel", "per_tensor")
        ),
        "weight_scheme": tuple(weight.scheme)
        if weight is not None and weight.scheme
        else ("sym",),
    }
    op_settings: dict[str, dict[str, tuple[str, ...]]] = {}
    for name, op_type in ops:
        space = cfg.op_space_for(name, op_type)
        for (tensor, key), setting in _SETTING_OF.items():
            values = getattr(getattr(space, tensor), key)
            if values is not None and tuple(values) != globals_[setting]:
                op_settings.setdefault(name, {})[setting] = tuple(values)
        dtypes: set[str] = set()
        for tensor in (space.activation, space.weight):
            if tensor is not None and tensor.dtype is not None:
                dtypes |= {"fp32" if d == "fp32" else "int8" for d in tensor.dtype}
        if cfg.fallback_forced(name, op_type):
            allowed[name] = ("fp32",)
        elif dtypes == {"int8"}:
            allowed[name] = ("int8",)
    runtimes = tuple(q.runtime)
    more = {} if runtimes == (Runtime.TORCH_FX,) else {"runtimes": runtimes}
    return (RuntimeSpace if more else SearchSpace)(
        **more,
        ops=tuple(ops),
        allowed_dtypes=allowed,
        act_algorithms=globals_["act_algorithm"],
        act_schemes=globals_["act_scheme"],
        weight_granularities=globals_["weight_granularity"],
        weight_schemes=globals_["weight_scheme"],
        op_settings=op_settings,
        backends=tuple(q.backend),
        approach=approach,
        framework=cfg.model.framework,
    )


def tune_settings(cfg: Config, approach: str, study_name: str) -> TuneSettings:
    """The study settings of one approach from ``tuning`` (INC's footprint scored as size)."""
    t = cfg.tuning
    crit = t.accuracy_criterion
    footprint = t.objective == Objective.FOOTPRINT
    return TuneSettings(
        study_name=study_name,
        strategy=t.strategy.name,
        relative=crit.relative,
        absolute=crit.absolute,
        higher_is_better=crit.higher_is_better,
        objective=Objective.MODELSIZE.value if footprint else t.objective,
        timeout=float(t.exit_policy.timeout),
        max_trials=int(t.exit_policy.max_trials),
        performance_only=bool(t.exit_policy.performance_only),
        random_seed=int(t.random_seed),
        storage=t.storage,
        workspace=str(t.workspace.path),
        approach=approach,
        backends=tuple(cfg.quantization.backend),
        finalists=int(t.finalists),
    )


def _loader(spec: Any, path: str) -> Any:
    """A dataloader from the config; a data problem names the config key it came from."""
    try:
        return build_dataloader(spec)
    except DataError as e:
        raise ConfigError(path, f"cannot be built: {e}") from e


def _metric_object(metric: Any) -> Any:
    create = getattr(metric, "create", None)
    if callable(create) and not hasattr(metric, "update"):  # INC's common.Metric wrapper
        return create()
    if isinstance(metric, type):
        return metric()
    return metric


def _example_inputs(cfg: Config, *loaders: Iterable[Any] | None) -> Any:
    for loader in loaders:
        if loader is not None:
            inputs = first_input(loader)
            return inputs[0] if len(inputs) == 1 else inputs
    if cfg.model.input_shape:
        return torch.zeros(1, *cfg.model.input_shape)
    raise DataError(
        "cannot tell the model's input shape: give a calibration or evaluation dataloader, "
        "or `model.input_shape` in the config"
    )


def threads_of(section: Any, default: int | None) -> int | None:
    """The threads ``section.configs`` (INC's ``evaluation.*.configs``) sets, else ``default``:
    ``intra_num_of_threads``, else ``cores_per_instance``."""
    configs = getattr(section, "configs", None)
    threads = configs.threads if configs is not None else None
    return default if threads is None else threads


def bench_batch(cfg: Config, eval_dataloader: Any, example: Any) -> int:
    """The batch size latency is measured at: the performance loader's, the eval loader's,
    else the example's."""
    perf = cfg.evaluation.performance if cfg.evaluation is not None else None
    if perf is not None and perf.dataloader is not None:
        return int(perf.dataloader.batch_size)
    size = getattr(eval_dataloader, "batch_size", None)
    return int(size) if size else max(1, batch_size_of(example))


def _evaluator(
    cfg: Config,
    model: nn.Module,
    eval_func: Callable[[nn.Module], float] | None,
    eval_dataloader: Iterable[Any] | None,
    metric: Any,
    postprocess: Callable[[Any, Any], tuple[Any, Any]] | None,
    calib_dataloader: Iterable[Any] | None = None,
) -> MetricEvaluator | None:
    """The accuracy evaluator: ``eval_func``, else loader + metric, else None. With an
    ``eval_func``, the default strategy ranks plans on the calibration data."""
    acc = cfg.evaluation.accuracy if cfg.evaluation is not None else None
    if metric is None and acc is not None and (acc.metric or acc.multi_metrics):
        metric = build_metric(acc.metric or acc.multi_metrics)
    metric = _metric_object(metric)
    if postprocess is None and acc is not None and acc.postprocess:
        specs = acc.postprocess

        def postprocess(out: Any, label: Any) -> tuple[Any, Any]:
            return apply_postprocess(specs, out, label)

    higher = cfg.tuning.accuracy_criterion.higher_is_better
    threads = threads_of(acc, None)  # None: torch's default, all cores
    if eval_func is not None:
        return MetricEvaluator(
            eval_func=eval_func, higher_is_better=higher, threads=threads,
            probe_loader=calib_dataloader,
        )  # fmt: skip
    if eval_dataloader is None or metric is None:
        return None
    evaluator = MetricEvaluator(
        dataloader=eval_dataloader,
        metric=metric,
        postprocess=postprocess,
        iteration=acc.iteration if acc is not None else -1,
        higher_is_better=higher,
        threads=threads,
    )
    # compare_label false: fp32 outputs are the labels (a copy: the engine never
    # touches it, whatever the user does with `model` afterwards).
    if wants_reference(metric):
        evaluator.reference = copy.deepcopy(model)
    return evaluator


def assemble(
    cfg: Config,
    model: Any = None,
    calib_dataloader: Iterable[Any] | None = None,
    eval_dataloader: Iterable[Any] | None = None,
    metric: Any = None,
    eval_func: Callable[[nn.Module], float] | None = None,
    q_func: Callable[[nn.Module], Any] | None = None,
    postprocess: Callable[[Any, Any], tuple[Any, Any]] | None = None,
) -> Assembly:
    """What every approach shares; Python objects win over the config (see the module doc)."""
    if model is None:
        if not cfg.model.factory:
            raise ConfigError("model.factory", "is required when no model object is given")
        model = build_model(cfg.model.factory, cfg.model.weights)
    model = unwrap(model).eval()
    torch.manual_seed(cfg.tuning.random_seed)

    q = cfg.quantization
    acc = cfg.evaluation.accuracy if cfg.evaluation is not None else None
    if calib_dataloader is None and q.calibration.dataloader is not None:
        calib_dataloader = _loader(q.calibration.dataloader, "quantization.calibration.dataloader")
    if eval_dataloader is None and acc is not None and acc.dataloader is not None:
        eval_dataloader = _loader(acc.dataloader, "evaluation.accuracy.dataloader")
    evaluator = _evaluator(
        cfg, model, eval_func, eval_dataloader, metric, postprocess, calib_dataloader
    )
    example = _example_inputs(cfg, calib_dataloader, eval_dataloader)
    perf = cfg.evaluation.performance if cfg.evaluation is not None else None
    benchmark = LatencyBenchmark(
        example,
        batch_size=bench_batch(cfg, eval_dataloader, example),
        warmup=perf.warmup if perf is not None else 5,
        iterations=perf.iteration if perf is not None and perf.iteration > 0 else 30,
        threads=threads_of(perf, 1),
    )
    auto = q.approach == Approach.AUTO
    approaches = (Approach.STATIC.value, Approach.DYNAMIC.value) if auto else (q.approach,)
    sampling_size = int(q.calibration.sampling_size[0])
    if len(q.calibration.sampling_size) > 1:
        logger.info(
            "calibration.sampling_size %s: using %d (one calibration per observer setting)",
            list(q.calibration.sampling_size),
            sampling_size,
        )
    static = Approach.STATIC.value in approaches
    checked = evaluator if not cfg.tuning.exit_policy.performance_only else None
    parts, used = fingerprint.inputs(
        cfg, model, calib_dataloader, sampling_size, static, checked, eval_func,
        eval_dataloader, benchmark, q_func,
    )  # fmt: skip
    if static and calib_dataloader is not None and used < sampling_size:
        logger.warning(
            "quantization.calibration.sampling_size is %d but the calibration data has %d "
            "samples: calibrating on %d, and %d is what is recorded",
            sampling_size, used, used, used,
        )  # fmt: skip
    if static and calib_dataloader is not None:
        sampling_size = used  # what calibration reads (whole batches), the recorded size
    return Assembly(
        model, example, evaluator, benchmark, calib_dataloader, sampling_size, approaches,
        eval_func=eval_func, q_func=q_func, fingerprint=parts,
    )  # fmt: skip


def stage(cfg: Config, parts: Assembly, approach: str, role: str = Role.TUNE) -> Stage:
    """The engine, search space and settings of one approach; makes its workspace."""
    runtimes = tuple(cfg.quantization.runtime)
    if runtimes != (Runtime.TORCH_FX,):
        check_runtimes(runtimes, approach)
    kind = FxEngine if runtimes == (Runtime.TORCH_FX,) else RuntimeEngine
    engine = kind(
        parts.model,
        parts.example,
        approach=approach,
        framework=cfg.model.framework,
        calib_loader=parts.calib_loader,
        sampling_size=parts.sampling_size,
        q_func=parts.q_func,
    )
    space = search_space(cfg, engine.ops(), approach)
    settings = tune_settings(cfg, approach, study_name_for(cfg, approach))
    if parts.fingerprint:
        ident = fingerprint.for_stage(parts.fingerprint, approach, space)
        settings = replace(settings, fingerprint=ident)
    if parts.evaluator is None and not settings.performance_only:
        # INC: with nothing to evaluate, quantize once with the default plan.
        settings = replace(settings, performance_only=True)
    if role == Role.FINALIZE:
        settings = replace(settings, new_trials=False)
    if role == Role.WORKER:  # publishes nothing: no side-by-side round
        settings = replace(settings, final_round=False)
    Path(settings.workspace).mkdir(parents=True, exist_ok=True)
    return Stage(approach, engine, space, settings)
