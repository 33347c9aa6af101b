"""The model registry: register a logged pyfunc and decide its alias (champion/challenger).

:func:`register` creates a registry version with the scores as tags and moves the alias
``champion`` only when the new version beats the current one (:func:`decide_alias`);
otherwise the version gets ``challenger``. The MLflow names this module writes and reads
(aliases, version tags, metric names) are the constants below.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

from inc_flow.errors import IncFlowError
from inc_flow.record import keys

logger = logging.getLogger("inc_flow")

# Every name below is defined once in inc_flow.record.keys; these are the registry's views.
CHAMPION, CHALLENGER = keys.ALIAS_CHAMPION, keys.ALIAS_CHALLENGER
# Metric names `register` takes (the study's scores); the version tags store them.
METRIC_ACCURACY = keys.METRIC_ACCURACY
METRIC_RELATIVE_DROP = keys.METRIC_RELATIVE_DROP
METRIC_ABSOLUTE_DROP = keys.METRIC_ABSOLUTE_DROP
METRIC_LATENCY = keys.METRIC_LATENCY_MS
METRIC_SPEEDUP = keys.METRIC_SPEEDUP
# Version tags: a metric's tag is its name, except those renamed here.
METRIC_TAGS = {
    METRIC_ACCURACY: keys.VERSION_ACCURACY,
    METRIC_RELATIVE_DROP: keys.VERSION_DROP,
    METRIC_SPEEDUP: keys.VERSION_SPEEDUP,
}
TAG_BACKEND, TAG_APPROACH, TAG_STUDY = (
    keys.VERSION_BACKEND,
    keys.VERSION_APPROACH,
    keys.VERSION_STUDY,
)
TAG_LATENCY = keys.VERSION_LATENCY_MS  # the alias is decided on the version's `latency_ms` tag
TAG_EVAL_DATA = keys.VERSION_EVAL_DATA
TAG_CRITERION = keys.VERSION_CRITERION
TAG_MEETS_TARGET = keys.VERSION_MEETS_TARGET
TAG_ALIAS_REASON = keys.VERSION_ALIAS_REASON
BEATS_CHAMPION, CHAMPION_REASON = "beats_champion", "champion_reason"  # round vs champion
REQUIRED_METRICS = (METRIC_ACCURACY, METRIC_RELATIVE_DROP, METRIC_LATENCY)
REQUIRED_TAGS = (TAG_BACKEND, TAG_APPROACH, TAG_STUDY)


class RegistryError(IncFlowError, ValueError):
    """A registration lacks the scores or facts the aliases are decided on."""


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
    if not new.get(TAG_MEETS_TARGET):
        return CHALLENGER, "it does not meet the accuracy target"
    if current is None:
        return CHAMPION, "there is no champion yet"
    for key, what in ((TAG_EVAL_DATA, "eval data"), (TAG_CRITERION, "accuracy criterion")):
        if current.get(key) is None or current.get(key) != new.get(key):
            return CHAMPION, f"the champion was judged on another {what}"
    if current.get(TAG_MEETS_TARGET) is False:
        return CHAMPION, "the champion does not meet the accuracy target"
    new_ms, cur_ms = new.get(TAG_LATENCY), current.get(TAG_LATENCY)
    if new.get(BEATS_CHAMPION) is not None:  # timed beside the champion: the round decides
        return (CHAMPION if new[BEATS_CHAMPION] else CHALLENGER), new[CHAMPION_REASON]
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

    meets = tags.get(TAG_MEETS_TARGET)
    return {
        TAG_EVAL_DATA: tags.get(TAG_EVAL_DATA),
        TAG_CRITERION: tags.get(TAG_CRITERION),
        TAG_LATENCY: number(TAG_LATENCY),
        TAG_MEETS_TARGET: None if meets is None else meets.lower() == "true",
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
    champion_allowed: bool = True,
    veto_reason: str = "",
    beats_champion: bool | None = None,
    champion_reason: str = "",
) -> Any:
    """Register ``model_uri`` under ``name`` and alias it ``champion`` or ``challenger``.

    Uses MLflow's current registry URI. Version tags: accuracy, drop (relative), speedup,
    latency_ms, backend, approach, study, eval_data, criterion, meets_target, alias_reason
    and any other ``tags``.

    Args:
        model_uri: ``ModelInfo.model_uri`` from :func:`inc_flow.model.pyfunc.log_model`.
        name: the registered model (see :func:`registered_model_name`).
        metrics: ``accuracy``, ``relative_drop``, ``latency_ms``; optional ``speedup``
            (fp32 latency / int8 latency) and ``absolute_drop``.
        tags: ``backend``, ``approach``, ``study``, and any others to set.
        eval_data: identifies the eval data and metric (see :func:`fingerprint`).
        criterion: the accuracy criterion (see :func:`canonical`).
        meets_target: whether the model met its accuracy target.
        champion_allowed: False: never ``champion`` (e.g. not faster than fp32 in the
            side-by-side round); the version is a ``challenger`` with ``veto_reason``.
        beats_champion: the side-by-side round's comparison with the current champion
            (None: not timed together); replaces the latency tags' comparison, with
            ``champion_reason`` as the alias reason.

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
        TAG_EVAL_DATA: eval_data,
        TAG_CRITERION: criterion,
        TAG_LATENCY: float(metrics[METRIC_LATENCY]),
        TAG_MEETS_TARGET: bool(meets_target),
        BEATS_CHAMPION: beats_champion,
        CHAMPION_REASON: champion_reason,
    }
    old = None if current is None else _facts_from_tags(current.tags)
    alias, reason = _decide(new, old)
    if not champion_allowed:
        alias, reason = CHALLENGER, veto_reason or "it may not be champion"
    version_tags.update(
        {
            TAG_EVAL_DATA: eval_data,
            TAG_CRITERION: criterion,
            TAG_MEETS_TARGET: str(bool(meets_target)).lower(),
            TAG_ALIAS_REASON: reason,
        }
    )
    mv = mlflow.register_model(model_uri, name, tags=version_tags)
    client = mlflow.MlflowClient()
    client.set_registered_model_alias(name, alias, mv.version)
    logger.info("registered %s version %s as %s: %s", name, mv.version, alias, reason)
    return client.get_model_version(name, mv.version)
