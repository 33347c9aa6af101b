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
:func:`quantize` assembles the parts from the config (:mod:`inc_flow.assemble`), searches
(:func:`inc_flow.search.loop.tune`) and publishes the result (:mod:`inc_flow.publish`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from torch import nn

from inc_flow import bars
from inc_flow.assemble import assemble, stage, unwrap
from inc_flow.config.preflight import preflight
from inc_flow.config.sections import Config
from inc_flow.errors import ConfigError
from inc_flow.logs import default_handler
from inc_flow.model.output import QuantizedModel
from inc_flow.publish import champion_rivals, log_outcome, next_steps, publish, recording
from inc_flow.scaleout import as_role
from inc_flow.search.loop import tune
from inc_flow.search.ports import Tracker
from inc_flow.search.progress import MultiTracker
from inc_flow.search.records import TuneResult
from inc_flow.vocab import Role

__all__ = ["MultiTracker", "Outcome", "Quantization", "as_config", "fit", "quantize"]

logger = logging.getLogger("inc_flow")


@dataclass
class Outcome:
    """Everything one quantization produced: the model (None if nothing passed), the tuning
    result of the study that decided, and the config used."""

    q_model: QuantizedModel | None
    result: TuneResult
    config: Config
    results: tuple[TuneResult, ...] = ()
    unrecorded: tuple[str, ...] = ()  # what MLflow missed after an outage (README: faults)
    next_steps: str = ""  # the UI link, registered model, report, load line (the CLI prints it)


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
    role: str = Role.TUNE,
    output: str | os.PathLike[str] | None = None,
) -> Outcome:
    """Tune the fastest int8 plan meeting the accuracy target; everything that came out.

    Python objects win over the config (INC's priority: ``eval_func`` > ``eval_dataloader``
    + metric > yaml ``evaluation.accuracy``). With no way to evaluate, the default plan is
    quantized once and the log says accuracy was not checked.

    ``role`` scales a study out (see README, "Scale out"): ``tune`` does everything in this
    process; ``worker`` joins the study, runs trials and logs them under the study's one
    parent run, but neither registers nor ends the parent; ``finalize`` runs no trial: it
    rebuilds the best plan, logs and registers it once, and ends the parent run.

    ``output``: the folder the best model is saved to (``best_configure.yaml`` + weights),
    before anything goes to MLflow. Without it, a model about to be registered is saved to
    ``<workspace>/best_model`` first, so a registration failure loses nothing. The workspace
    and ``output`` are checked before any work (:func:`inc_flow.config.preflight.preflight`).

    Returns:
        An :class:`Outcome`; ``outcome.q_model`` is None when no plan met the target.
    """
    default_handler()  # INC's default: trial lines on stderr unless logging is configured
    bars.mode()  # a bad INC_FLOW_PROGRESS is refused before any work
    cfg = as_config(conf)
    role = as_role(role)
    preflight(cfg, None if role == Role.WORKER else output)  # before any work
    parts = assemble(
        cfg, model, calib_dataloader, eval_dataloader, metric, eval_func, q_func, postprocess
    )
    results: list[TuneResult] = []
    unrecorded: list[str] = []
    q_model: QuantizedModel | None = None
    last = None  # the last study's recording, for the next steps
    for approach in parts.approaches:  # auto: dynamic only when static found nothing
        step = stage(cfg, parts, approach, role)
        with recording(cfg, step.settings, role, tracker) as rec:
            result = tune(
                step.engine,
                parts.evaluator,
                parts.benchmark,
                step.settings,
                space=step.space,
                tracker=rec.trackers,
                rivals=champion_rivals(rec, cfg),
            )
            results.append(result)
            q_model = publish(rec, cfg, parts, step, result, output)
            last = rec
        unrecorded += rec.unrecorded
        if q_model is not None:
            break
    log_outcome(q_model)
    steps = next_steps(last, cfg, q_model)
    return Outcome(q_model, results[-1], cfg, tuple(results), tuple(unrecorded), steps)


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
        self._model = unwrap(value)

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
