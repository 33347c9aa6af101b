"""INC's object API (``Quantization("conf.yaml")``) and the plain function API over the tuner.

A script written for ``neural_compressor.experimental.Quantization`` runs after changing only
its imports::

    from inc_flow import Quantization, common
    quantizer = Quantization("conf.yaml")
    quantizer.model = model
    quantizer.calib_dataloader = common.DataLoader(dataset, batch_size=32)
    quantizer.eval_func = eval_func          # or eval_dataloader (+ metric)
    q_model = quantizer()                    # None when nothing meets the target
    q_model.save("./output")

New code can call :func:`quantize` (everything returned) or :func:`fit` (the model or None).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from inc_flow.config.sections import Config
from inc_flow.data.batches import first_input
from inc_flow.data.loaders import build_dataloader
from inc_flow.errors import ConfigError, DataError
from inc_flow.metrics.build import apply_postprocess, build_metric, wants_reference
from inc_flow.model.factory import build_model
from inc_flow.model.output import QuantizedModel
from inc_flow.quant.engine import FxEngine
from inc_flow.quant.evaluate import LatencyBenchmark, MetricEvaluator, batch_size_of
from inc_flow.search.loop import tune
from inc_flow.search.ports import Tracker
from inc_flow.search.progress import LoggingTracker, MultiTracker
from inc_flow.search.records import TuneResult
from inc_flow.search.settings import TuneSettings
from inc_flow.search.space import SearchSpace

logger = logging.getLogger("inc_flow")

ROLES = ("tune", "worker", "finalize")
PARENT_WAIT_S = 120  # how long a worker waits for the study's creator to make the parent run
AUTO = "post_training_auto_quant"
STATIC = "post_training_static_quant"
DYNAMIC = "post_training_dynamic_quant"


@dataclass
class Outcome:
    """Everything one quantization produced: the model (None if nothing passed), the tuning
    result of the study that decided, and the config used."""

    q_model: QuantizedModel | None
    result: TuneResult
    config: Config
    results: tuple[TuneResult, ...] = ()


def as_config(conf: Any = None) -> Config:
    """A Config from a yaml path, a dict, a Config, or None (needs ``model.name`` later)."""
    if isinstance(conf, Config):
        return conf
    if isinstance(conf, dict):
        return Config.from_dict(conf)
    if isinstance(conf, str | os.PathLike):
        return Config.from_yaml(conf)
    if conf is None:
        return Config.from_dict({"model": {"name": "model"}})
    raise ConfigError(
        "", f"config must be a yaml path, a dict or a Config, got {type(conf).__name__}"
    )


def _unwrap(model: Any) -> nn.Module:
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
            if approach != DYNAMIC or cfg.quantization.approach != AUTO
            else f"{cfg.tuning.study_name}-dynamic"
        )
    body = cfg.to_dict()
    body.pop("tracking", None)
    digest = hashlib.sha1(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:8]
    short = {
        "post_training_static_quant": "static",
        DYNAMIC: "dynamic",
        "quant_aware_training": "qat",
    }
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", cfg.model.name)
    return f"{safe}-{short.get(approach, approach)}-{digest}"


def _act_algorithms(act: Any, approach: str) -> tuple[str, ...]:
    if act is not None and act.algorithm:
        return tuple(act.algorithm)
    # QAT learns its ranges; a histogram fake-quant would only slow training down.
    return ("minmax",) if approach == "quant_aware_training" else ("minmax", "kl")


def _space(cfg: Config, ops: list[tuple[str, str]], approach: str) -> SearchSpace:
    q = cfg.quantization
    allowed: dict[str, tuple[str, ...]] = {}
    for name, op_type in ops:
        space = cfg.op_space_for(name, op_type)
        dtypes: set[str] = set()
        for tensor in (space.activation, space.weight):
            if tensor is not None and tensor.dtype is not None:
                dtypes |= {"fp32" if d == "fp32" else "int8" for d in tensor.dtype}
        if cfg.fallback_forced(name, op_type):
            allowed[name] = ("fp32",)
        elif dtypes == {"int8"}:
            allowed[name] = ("int8",)
    model_wise = q.model_wise
    act = model_wise.activation if model_wise is not None else None
    weight = model_wise.weight if model_wise is not None else None
    return SearchSpace(
        ops=tuple(ops),
        allowed_dtypes=allowed,
        act_algorithms=_act_algorithms(act, approach),
        act_schemes=tuple(act.scheme) if act is not None and act.scheme else ("asym",),
        weight_granularities=(
            tuple(weight.granularity)
            if weight is not None and weight.granularity
            else ("per_channel", "per_tensor")
        ),
        backends=tuple(q.backend),
        approach=approach,
        framework=cfg.model.framework,
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


def _settings(cfg: Config, approach: str, study_name: str) -> TuneSettings:
    t = cfg.tuning
    crit = t.accuracy_criterion
    return TuneSettings(
        study_name=study_name,
        strategy=t.strategy.name,
        relative=crit.relative,
        absolute=crit.absolute,
        higher_is_better=crit.higher_is_better,
        objective="modelsize" if t.objective == "footprint" else t.objective,
        timeout=float(t.exit_policy.timeout),
        max_trials=int(t.exit_policy.max_trials),
        performance_only=bool(t.exit_policy.performance_only),
        random_seed=int(t.random_seed),
        storage=t.storage,
        workspace=str(t.workspace.path),
        approach=approach,
        backends=tuple(cfg.quantization.backend),
    )


def quantize(
    conf: Any = None,
    model: nn.Module | None = None,
    calib_dataloader: Iterable[Any] | None = None,
    eval_dataloader: Iterable[Any] | None = None,
    metric: Any = None,
    eval_func: Callable[[nn.Module], float] | None = None,
    q_func: Callable[[nn.Module], Any] | None = None,
    postprocess: Callable[[Any, Any], tuple[Any, Any]] | None = None,
    tracker: Tracker | None = None,
    role: str = "tune",
) -> Outcome:
    """Tune the fastest int8 plan meeting the accuracy target; everything that came out.

    Python objects win over the config (INC's priority: ``eval_func`` > ``eval_dataloader``
    + metric > yaml ``evaluation.accuracy``). With no way to evaluate, the default plan is
    quantized once and the log says accuracy was not checked.

    ``role`` scales a study out (see README, "Scale out"): ``tune`` does everything in this
    process; ``worker`` joins the study, runs trials and logs them under the study's one
    parent run, but neither registers nor ends the parent; ``finalize`` runs no trial: it
    rebuilds the best plan, logs and registers it once, and ends the parent run.

    Returns:
        An :class:`Outcome`; ``outcome.q_model`` is None when no plan met the target.
    """
    cfg = as_config(conf)
    if role not in ROLES:
        raise ValueError(f"`role` must be one of {list(ROLES)}, got {role!r}")
    if model is None:
        if not cfg.model.factory:
            raise ConfigError("model.factory", "is required when no model object is given")
        model = build_model(cfg.model.factory, cfg.model.weights)
    model = _unwrap(model).eval()
    torch.manual_seed(cfg.tuning.random_seed)

    q = cfg.quantization
    acc = cfg.evaluation.accuracy if cfg.evaluation is not None else None
    if calib_dataloader is None and q.calibration.dataloader is not None:
        calib_dataloader = _loader(q.calibration.dataloader, "quantization.calibration.dataloader")
    if eval_dataloader is None and acc is not None and acc.dataloader is not None:
        eval_dataloader = _loader(acc.dataloader, "evaluation.accuracy.dataloader")
    if metric is None and acc is not None and (acc.metric or acc.multi_metrics):
        metric = build_metric(acc.metric or acc.multi_metrics)
    metric = _metric_object(metric)
    if postprocess is None and acc is not None and acc.postprocess:
        specs = acc.postprocess

        def postprocess(out: Any, label: Any) -> tuple[Any, Any]:
            return apply_postprocess(specs, out, label)

    evaluator = None
    higher = cfg.tuning.accuracy_criterion.higher_is_better
    if eval_func is not None:
        evaluator = MetricEvaluator(eval_func=eval_func, higher_is_better=higher)
    elif eval_dataloader is not None and metric is not None:
        iteration = acc.iteration if acc is not None else -1
        evaluator = MetricEvaluator(
            dataloader=eval_dataloader,
            metric=metric,
            postprocess=postprocess,
            iteration=iteration,
            higher_is_better=higher,
        )
        # compare_label false: fp32 outputs are the labels (a copy: the engine never
        # touches it, whatever the user does with `model` afterwards).
        if wants_reference(metric):
            evaluator.reference = copy.deepcopy(model)
    example = _example_inputs(cfg, calib_dataloader, eval_dataloader)
    perf = cfg.evaluation.performance if cfg.evaluation is not None else None
    bench_batch = _bench_batch(cfg, eval_dataloader, example)
    benchmark = LatencyBenchmark(
        example,
        batch_size=bench_batch,
        warmup=perf.warmup if perf is not None else 5,
        iterations=perf.iteration if perf is not None and perf.iteration > 0 else 30,
        threads=1,
    )
    approaches = [STATIC, DYNAMIC] if q.approach == AUTO else [q.approach]
    results: list[TuneResult] = []
    sampling_size = int(q.calibration.sampling_size[0])
    if len(q.calibration.sampling_size) > 1:
        logger.info(
            "calibration.sampling_size %s: using %d (one calibration per observer setting)",
            list(q.calibration.sampling_size),
            sampling_size,
        )
    outcome_model: QuantizedModel | None = None
    for approach in approaches:
        engine = FxEngine(
            model,
            example,
            approach=approach,
            framework=cfg.model.framework,
            calib_loader=calib_dataloader,
            sampling_size=sampling_size,
            q_func=q_func,
        )
        space = _space(cfg, engine.ops(), approach)
        settings = _settings(cfg, approach, study_name_for(cfg, approach))
        if evaluator is None and not settings.performance_only:
            # INC: with nothing to evaluate, quantize once with the default plan.
            settings = replace(settings, performance_only=True)
        if role == "finalize":
            settings = replace(settings, new_trials=False)
        Path(settings.workspace).mkdir(parents=True, exist_ok=True)
        recorder = _mlflow_tracker(cfg, settings, role) if tracker is None else None
        trackers = MultiTracker(tracker or LoggingTracker(), recorder)
        failed = True
        try:
            result = tune(engine, evaluator, benchmark, settings, space=space, tracker=trackers)
            results.append(result)
            if recorder is not None and role == "tune":
                recorder.log_times(_time_split(engine, evaluator, benchmark))
            if result.best is not None:
                outcome_model = QuantizedModel(
                    model=result.best_model,
                    plan=result.best.plan,
                    example_inputs=example,
                    calibration_size=0 if approach == DYNAMIC else sampling_size,
                    info=_info(result),
                )
                if recorder is not None and role != "worker":
                    recorder.publish(outcome_model, result, model, _eval_source(cfg, eval_func))
            elif role != "worker":
                _keep_closest(engine, result, example, settings, sampling_size)
            if recorder is not None and role != "worker":
                _log_report(recorder)
            failed = False
        finally:
            if recorder is not None:
                recorder.close(failed=failed)
        if outcome_model is not None:
            break
    result = results[-1]
    _log_outcome(outcome_model)
    return Outcome(q_model=outcome_model, result=result, config=cfg, results=tuple(results))


def _time_split(
    engine: FxEngine, evaluator: MetricEvaluator | None, benchmark: LatencyBenchmark
) -> dict:
    """Where the tuning time went, in seconds (this process's share of the study)."""
    return {
        "time_calibration_s": engine.calibration_seconds,
        "time_convert_s": engine.convert_seconds,
        "time_evaluation_s": evaluator.seconds if evaluator is not None else 0.0,
        "time_latency_s": benchmark.seconds,
    }


def _eval_source(cfg: Config, eval_func: Any) -> str:
    """What the accuracy was measured on, for comparing registered versions fairly."""
    if eval_func is not None:
        where = getattr(eval_func, "__module__", "")
        return f"eval_func:{where}.{getattr(eval_func, '__qualname__', '')}"
    acc = cfg.evaluation.accuracy
    return repr(acc.to_dict()) if acc is not None else "python dataloader and metric"


def _log_report(recorder: Any) -> None:
    """The study's HTML dashboard on its parent run; a report failure never fails tuning."""
    try:
        from inc_flow.record.report import log_report

        log_report(recorder.client, recorder.parent_id, None)
    except Exception as e:  # noqa: BLE001 - the report is a view of a record already kept
        logger.warning("the HTML report was not logged: %s", e)


def _mlflow_tracker(cfg: Config, settings: TuneSettings, role: str = "tune") -> Any:
    """The MLflow tracker, unless ``tracking.enabled`` is false."""
    if not cfg.tracking.enabled:
        return None
    from inc_flow.record.tracking import MlflowTracker  # imports mlflow: only when tracking

    if role == "tune":
        return MlflowTracker(cfg)
    recorder = MlflowTracker(cfg, role=role)
    recorder.parent_id = _study_parent(settings, recorder, role)
    return recorder


def _study_parent(settings: TuneSettings, recorder: Any, role: str) -> str:
    """The id of the study's one MLflow parent run, kept in the Optuna study (user attr
    ``inc_flow.parent_run``). The worker whose ``create_study`` makes the study (the
    database's unique study name decides: exactly one does) creates the parent run and
    stores its id; the other workers wait for it. ``finalize`` reads it (or, for a study
    tuned without workers, adopts or creates the parent itself: it runs once)."""
    from inc_flow.search.storage import claim_parent_run, parent_run, set_parent_run

    name, url = settings.study_name, settings.storage_url()
    try:
        if role == "worker":
            parent = claim_parent_run(url, name, settings.directions(), recorder.create_parent)
            if parent is not None:
                logger.info("created study %s and its MLflow parent run %s", name, parent)
                return parent
        parent = parent_run(url, name, PARENT_WAIT_S if role == "worker" else 0)
    except KeyError as e:  # load_study: no such study
        raise ConfigError(
            "tuning.study_name", f"study {name!r} is not in {url}: run the workers first"
        ) from e
    if parent:
        return str(parent)
    if role == "finalize":
        parent = recorder.create_parent(name)
        set_parent_run(url, name, parent)
        return parent
    raise ConfigError(
        "tuning.study_name",
        f"study {name!r} in {url} has no MLflow parent run after {PARENT_WAIT_S} s: it was "
        "made by a non-worker run, or its creating worker died before making the parent; "
        "run `inc-flow finalize` once (it makes the parent) and start the workers again",
    )


def _bench_batch(cfg: Config, eval_dataloader: Any, example: Any) -> int:
    perf = cfg.evaluation.performance if cfg.evaluation is not None else None
    if perf is not None and perf.dataloader is not None:
        return int(perf.dataloader.batch_size)
    size = getattr(eval_dataloader, "batch_size", None)
    return int(size) if size else max(1, batch_size_of(example))


def _info(result: TuneResult) -> dict[str, Any]:
    best = result.best
    return {
        "accuracy": best.accuracy if best else None,
        "baseline_accuracy": result.baseline_accuracy,
        "relative_drop": best.relative_drop if best else None,
        "latency_ms": best.latency_ms if best else None,
        "baseline_latency_ms": result.baseline_latency_ms,
        "speedup": result.speedup,
        "slower_than_fp32": result.slower_than_fp32,
        "accuracy_checked": result.accuracy_checked,
        "trial": best.number if best else None,
        "trials": result.n_trials,
        "study": result.study_name,
    }


def _keep_closest(
    engine: FxEngine, result: TuneResult, example: Any, settings: TuneSettings, size: int
) -> None:
    """Nothing passed: keep the closest trial's model in the workspace and say why."""
    closest = result.closest
    if closest is None:
        logger.warning("no trial completed; nothing to keep (see the trial log above)")
        return
    target = Path(settings.workspace) / "closest_model"
    try:
        model = engine.build(closest.plan)
        QuantizedModel(model, closest.plan, example, size, _info(result)).save(target)
    except Exception as e:  # noqa: BLE001 - keeping the closest model is best effort
        logger.warning("could not keep the closest trial's model: %s", e)
        return
    logger.warning(
        "no plan met the accuracy target %s: the closest, trial %d (%s), reached %s, "
        "missing by %s; its model is kept in %s",
        _fmt(result.required_accuracy),
        closest.number,
        closest.plan.summary(),
        _fmt(closest.accuracy),
        _fmt(result.closest_miss),
        target,
    )


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _log_outcome(q_model: QuantizedModel | None) -> None:
    # The tuner has already logged its warnings (slower than fp32, accuracy not checked).
    if q_model is None:
        logger.warning("Not found any quantized model that meets the accuracy target.")
        return
    for line in q_model.statistics_lines():
        logger.info(line)
    fallbacks = q_model.plan.fp32_ops
    logger.info(
        "fp32 fallbacks (%d of %d ops): %s",
        len(fallbacks),
        len(q_model.plan.ops),
        ", ".join(fallbacks) if fallbacks else "none",
    )


def fit(model: nn.Module, conf: Any = None, **kwargs: Any) -> QuantizedModel | None:
    """Plain function API: the quantized model, or None when nothing meets the target."""
    return quantize(conf, model=model, **kwargs).q_model


class Quantization:
    """INC 1.x's ``neural_compressor.experimental.Quantization`` for PyTorch.

    Args:
        conf_fname_or_obj: a yaml path, a dict, or a :class:`~inc_flow.config.sections.Config`.
    """

    def __init__(self, conf_fname_or_obj: Any = None) -> None:
        self.conf = as_config(conf_fname_or_obj)
        self._model: nn.Module | None = None
        self.calib_dataloader: Iterable[Any] | None = None
        self.eval_dataloader: Iterable[Any] | None = None
        self.metric: Any = None
        self.eval_func: Callable[[nn.Module], float] | None = None
        self.q_func: Callable[[nn.Module], Any] | None = None
        self.postprocess: Callable[[Any, Any], tuple[Any, Any]] | None = None
        self.tracker: Tracker | None = None
        self.outcome: Outcome | None = None

    @property
    def model(self) -> nn.Module | None:
        return self._model

    @model.setter
    def model(self, value: Any) -> None:
        self._model = _unwrap(value)

    def __call__(self) -> QuantizedModel | None:
        return self.fit()

    def fit(self) -> QuantizedModel | None:
        """Tune; the quantized model, or None when nothing meets the target (see
        ``self.outcome`` for the closest trial and why)."""
        start = time.perf_counter()
        self.outcome = quantize(
            self.conf,
            model=self._model,
            calib_dataloader=self.calib_dataloader,
            eval_dataloader=self.eval_dataloader,
            metric=self.metric,
            eval_func=self.eval_func,
            q_func=self.q_func,
            postprocess=self.postprocess,
            tracker=self.tracker,
        )
        logger.debug("quantization took %.1f s", time.perf_counter() - start)
        return self.outcome.q_model
