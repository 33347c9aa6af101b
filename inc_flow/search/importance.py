"""Which plan params mattered: fANOVA importances of a finished study, as plain data for
:mod:`inc_flow.record.plots` to draw.

One :class:`Importances` per target: the latency (or model size / accuracy) objective and,
when the study checks accuracy, the accuracy the constraint is on. Optuna 5's default
evaluator is PED-ANOVA (it ranks params by how they separate the best trials, and on a small
study it gives constant params weight); we pass the seeded fANOVA evaluator explicitly and
only the params that actually took more than one value among the trials measured.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import optuna

from inc_flow.search.records import TuneResult
from inc_flow.search.settings import ACCURACY_NAME
from inc_flow.vocab import TrialState

logger = logging.getLogger("inc_flow")

MIN_COMPLETED = 3  # fewer fully evaluated trials say nothing about importance
EVALUATOR = "fANOVA"
SEED = 0  # fANOVA fits a random forest: a fixed seed gives the same ranking every time
ACCURACY_TARGET = ACCURACY_NAME  # the constraint's target: the same name as the objective


@dataclass(frozen=True)
class Importances:
    """``values``: param -> importance, most important first, summing to 1 (all 0 when
    the target did not move). ``target`` is the metric name, e.g. ``latency (ms)``."""

    target: str
    values: dict[str, float]
    evaluator: str = EVALUATOR
    n_trials: int = 0


def _varied(trials: list[optuna.trial.FrozenTrial]) -> list[str]:
    """Params present in every trial that took more than one value among them."""
    if not trials:
        return []
    common = set.intersection(*(set(t.params) for t in trials))
    return sorted(p for p in common if len({repr(t.params[p]) for t in trials}) > 1)


def fanova(
    study: optuna.Study, target: Callable[[optuna.trial.FrozenTrial], float], name: str
) -> Importances | None:
    """fANOVA importances of the params that varied among the COMPLETE trials for which
    ``target`` is finite; None when fewer than :data:`MIN_COMPLETED` such trials or no
    param varied."""
    trials = [
        t
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if math.isfinite(target(t))
    ]
    params = _varied(trials)
    if len(trials) < MIN_COMPLETED or not params:
        return None
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=SEED)
    with warnings.catch_warnings():
        # The normalisation divides by the total variance: 0/0 when the target never moved.
        warnings.filterwarnings("ignore", message="invalid value encountered in divide")
        values = optuna.importance.get_param_importances(
            study, evaluator=evaluator, params=params, target=target
        )
    clean = {p: (float(v) if math.isfinite(v) else 0.0) for p, v in values.items()}
    return Importances(name, clean, n_trials=len(trials))


def _value(index: int) -> Callable[[optuna.trial.FrozenTrial], float]:
    def target(t: optuna.trial.FrozenTrial) -> float:
        return float(t.values[index]) if t.values and t.values[index] is not None else math.nan

    return target


def param_importances(result: TuneResult) -> list[Importances]:
    """fANOVA importances for each objective of the study (named by its metric names) and
    for the accuracy when the study checks it and accuracy is not an objective already.

    Empty when fewer than :data:`MIN_COMPLETED` trials were fully evaluated, when the study
    lives in memory only (nothing to load it from), or when Optuna cannot compute them.
    """
    completed = [r for r in result.records if r.state in (TrialState.PASSED, TrialState.FAILED)]
    if len(completed) < MIN_COMPLETED or result.storage == ":memory:":
        return []
    try:
        study = optuna.load_study(study_name=result.study_name, storage=result.storage)
        names = study.metric_names or [f"objective {i}" for i in range(len(study.directions))]
        out = [fanova(study, _value(i), name) for i, name in enumerate(names)]
        if result.accuracy_checked and ACCURACY_TARGET not in names:
            accuracy = {r.number: r.accuracy for r in completed if r.accuracy is not None}
            out.append(fanova(study, lambda t: accuracy.get(t.number, math.nan), ACCURACY_TARGET))
        return [imp for imp in out if imp is not None]
    except Exception as e:  # noqa: BLE001 - importances need variety; the other plots suffice
        logger.info("param importances skipped: %s", e)
        return []


__all__ = ["EVALUATOR", "MIN_COMPLETED", "Importances", "fanova", "param_importances"]
