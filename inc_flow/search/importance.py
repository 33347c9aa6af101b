"""Which plan params mattered: Optuna's param importances of a finished study, as plain data
(param -> importance) for :mod:`inc_flow.record.plots` to draw."""

from __future__ import annotations

import logging
import warnings

import optuna

from inc_flow.search.records import TuneResult
from inc_flow.vocab import TrialState

logger = logging.getLogger("inc_flow")

MIN_COMPLETED = 3  # fewer fully evaluated trials say nothing about importance


def param_importances(result: TuneResult) -> dict[str, float]:
    """Optuna's importances of the plan params (its default evaluator) for the first
    objective, latency; most important first, summing to 1.

    Empty when fewer than :data:`MIN_COMPLETED` trials were fully evaluated, when the study
    lives in memory only (nothing to load it from), or when Optuna cannot compute them (they
    need some variety among the trials).
    """
    completed = [r for r in result.records if r.state in (TrialState.PASSED, TrialState.FAILED)]
    if len(completed) < MIN_COMPLETED or result.storage == ":memory:":
        return {}
    try:
        study = optuna.load_study(study_name=result.study_name, storage=result.storage)
        trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if not trials:
            return {}
        with warnings.catch_warnings():
            # Optuna notes that its default evaluator ranks for low target values (latency:
            # what we want).
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            warnings.filterwarnings("ignore", message="PedAnovaImportanceEvaluator computes")
            importances = optuna.importance.get_param_importances(
                study, target=lambda t: t.values[0] if t.values else 0.0
            )
        return {name: float(value) for name, value in importances.items()}
    except Exception as e:  # noqa: BLE001 - importances need variety; the other plots suffice
        logger.info("param importances skipped: %s", e)
        return {}


__all__ = ["MIN_COMPLETED", "param_importances"]
