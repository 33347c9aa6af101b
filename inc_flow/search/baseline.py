"""The fp32 baseline of a study: its accuracy and latency, measured once and stored."""

from __future__ import annotations

import logging
from typing import Any

from inc_flow.errors import DataError, IncFlowError, MetricError
from inc_flow.search import storage as st
from inc_flow.search.accuracy import check_baseline
from inc_flow.search.records import why

logger = logging.getLogger("inc_flow")


def measure_baseline(t: Any) -> tuple[float | None, float]:
    """(accuracy, latency ms) of ``t.engine.fp32_model`` for tuning state ``t``
    (``search.loop._Tuning``); a stored baseline is reused. A degenerate accuracy (NaN, inf,
    at or below chance) is refused before the first trial (``check_baseline``)."""
    stored = st.stored_baseline(t.study)
    if stored and (stored[0] is not None or not t.checked):
        logger.info("fp32 baseline: stored with the study, not measured again")
        return stored
    what = "accuracy and latency" if t.checked else "latency"
    logger.info("fp32 baseline: measuring %s", what)
    accuracy = None
    fp32 = t.engine.fp32_model
    if t.checked:
        try:
            outcome = t.evaluator.evaluate(fp32, None)
        except IncFlowError:
            raise  # e.g. DataError: NaN or inf in the eval inputs
        except Exception as e:  # noqa: BLE001 -- user code: say which step failed
            raise MetricError(f"evaluating the fp32 model failed: {why(e)}") from e
        accuracy = check_baseline(outcome.value, outcome.chance, t.settings.higher_is_better)
    try:
        latency = float(t.benchmark.latency(fp32))
    except IncFlowError:
        raise
    except Exception as e:  # noqa: BLE001 -- e.g. example inputs the model cannot take
        raise DataError(f"timing the fp32 model on example inputs failed: {why(e)}") from e
    st.set_baseline(t.study, accuracy, latency)
    return accuracy, latency
