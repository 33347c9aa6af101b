"""The model registry: register a logged pyfunc and decide its alias (champion/challenger).

:func:`register` creates a registry version with the scores as tags and moves the alias
``champion`` only when the new version beats the current one (:func:`decide_alias`);
otherwise the version gets ``challenger``. The MLflow names this module writes and reads
(aliases, version tags, metric names) are the constants below.

Registering is idempotent: each version carries a :func:`content_digest` of the plan and the
int8 weights, and a model whose digest is registered already is not registered again; a
version left without an alias (a process killed between registering and aliasing) gets its
alias on the next attempt. :func:`fault_point` is a test hook that kills the process at a
named publishing step (``INC_FLOW_TEST_KILL_AT``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

from inc_flow.config.naming import default_registered_name
from inc_flow.errors import IncFlowError, SaveLoadError
from inc_flow.model.configure import model_files
from inc_flow.model.faults import (  # noqa: F401 - the test hook, re-exported
    AFTER_ALIAS,
    AFTER_LOG_MODEL,
    AFTER_REGISTER,
    KILL_AT_ENV,
    fault_point,
)
from inc_flow.model.output import read_configure
from inc_flow.model.shipping import logged_size
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
TAG_DIGEST = keys.VERSION_DIGEST
TAG_SIZE = keys.MODEL_SIZE_BYTES  # the logged model's bytes, also a tag of the logged model
BEATS_CHAMPION, CHAMPION_REASON = "beats_champion", "champion_reason"  # round vs champion
REQUIRED_METRICS = (METRIC_ACCURACY, METRIC_RELATIVE_DROP, METRIC_LATENCY)
REQUIRED_TAGS = (TAG_BACKEND, TAG_APPROACH, TAG_STUDY)
# What `load` reads from best_configure.yaml; the scores (`info`) and versions are left out,
# so the same model measured again has the same digest.
DIGEST_KEYS = ("format_version", "approach", "framework", "backend", "example_inputs", "op")


class RegistryError(IncFlowError, ValueError):
    """A registration lacks the scores or facts the aliases are decided on."""


def canonical(value: Any) -> str:
    """Sorted, compact JSON: the criterion tag, and what :func:`fingerprint` hashes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def fingerprint(value: Any) -> str:
    """A short stable hash of a description of the eval data (e.g. ``evaluation.accuracy``)."""
    return "sha256:" + hashlib.sha256(canonical(value).encode()).hexdigest()[:16]


def content_digest(directory: str | os.PathLike) -> str:
    """``sha256:<hex>`` of an output directory's model: the canonical JSON of the plan part
    of ``best_configure.yaml`` (:data:`DIGEST_KEYS`, and ``runtime`` when written) and the
    bytes of the weights file (runtime ``openvino``: of the IR files)."""
    data = read_configure(directory)
    files = [Path(directory) / name for name in model_files(data)]
    for path in files:
        if not path.is_file():
            raise SaveLoadError(f"no {path.name} in {str(directory)!r}")
    plan = {k: data.get(k) for k in DIGEST_KEYS}
    for key in ("output", "runtime"):  # only when written: digests of older files stay the same
        if key in data:
            plan[key] = data[key]
    digest = hashlib.sha256(canonical(plan).encode())
    for path in files:
        digest.update(b"\0")
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def registered_model_name(model_name: str, configured: str | None = None) -> str:
    """``tracking.registered_model_name``, else ``<model.name>-int8``."""
    return default_registered_name(model_name, configured)


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
    if new_ms is None:
        return CHALLENGER, "it has no latency to compare with the champion's"
    new_text, cur_text = same_digits(new_ms, cur_ms)
    if new_ms < cur_ms:
        return CHAMPION, f"it is faster ({new_text} ms < {cur_text} ms)"
    return CHALLENGER, f"it is not faster than the champion ({new_text} ms vs {cur_text} ms)"


def same_digits(a: float, b: float) -> tuple[str, str]:
    """``a`` and ``b`` with the same number of decimals: 3 significant digits of the smaller,
    or more (up to 8) until different values read differently (``1.5499`` vs ``1.5500``)."""
    sizes = [abs(x) for x in (a, b) if x and math.isfinite(x)]
    magnitude = math.floor(math.log10(min(sizes))) if sizes else 0
    for digits in range(3, 9):
        decimals = min(max(digits - 1 - magnitude, 0), 12)
        a_text, b_text = f"{a:.{decimals}f}", f"{b:.{decimals}f}"
        if a == b or a_text != b_text:
            break
    return a_text, b_text


def decide_alias(new: Mapping[str, Any], current: Mapping[str, Any] | None) -> str:
    """``champion`` or ``challenger`` for a new version.

    Both mappings hold ``meets_target`` (bool), ``latency_ms`` (float), ``eval_data`` and
    ``criterion`` (strings); ``current`` is the champion's (None when there is none). The new
    version becomes champion when it meets its accuracy target and either is faster than a
    champion judged on the same eval data and criterion, or the champion's judgement is not
    comparable (other eval data or criterion, missing facts, not meeting the target).
    """
    return _decide(new, current)[0]


def alias_reason(new: Mapping[str, Any], current: Mapping[str, Any] | None) -> str:
    """Why :func:`decide_alias` decides as it does (the version's ``alias_reason`` tag)."""
    return _decide(new, current)[1]


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


def find_version(name: str, digest: str) -> Any:
    """The oldest version of ``name`` tagged with content ``digest`` (with its aliases), or
    None."""
    client = mlflow.MlflowClient()
    where = f"name = {keys.quoted(name)} AND {keys.tag_is(TAG_DIGEST, digest)}"
    found = client.search_model_versions(where)
    if not found:
        return None
    oldest = min(found, key=lambda v: int(v.version))
    return client.get_model_version(name, oldest.version)


def _logged_tags(model_uri: str) -> dict[str, str]:
    """The tags of a logged model (``models:/m-...``); none for another URI."""
    if not model_uri.startswith("models:/m-"):
        return {}
    try:
        return dict(mlflow.get_logged_model(model_uri.removeprefix("models:/")).tags)
    except MlflowException:
        return {}


def logged_digest(model_uri: str) -> str | None:
    """The content digest tag of a logged model (``models:/m-...``), or None."""
    return _logged_tags(model_uri).get(TAG_DIGEST)


def _logged_size(model_uri: str) -> str | None:
    """The logged model's ``model_size_bytes`` tag, else its size measured now (a model
    logged before the tag existed); None for another URI."""
    size = _logged_tags(model_uri).get(TAG_SIZE)
    if size is None and model_uri.startswith("models:/m-"):
        size = str(logged_size(model_uri.removeprefix("models:/")))
    return size


def register(
    model_uri: str,
    name: str,
    metrics: Mapping[str, float],
    tags: Mapping[str, Any],
    *,
    eval_data: str,
    criterion: str,
    meets_target: bool = True,
    digest: str | None = None,
    champion_allowed: bool = True,
    veto_reason: str = "",
    beats_champion: bool | None = None,
    champion_reason: str = "",
) -> Any:
    """Register ``model_uri`` under ``name`` and alias it ``champion`` or ``challenger``;
    a model registered already is not registered again.

    Uses MLflow's current registry URI. Version tags: accuracy, drop (relative), speedup,
    latency_ms, backend, approach, study, eval_data, criterion, meets_target, alias_reason,
    content_digest, model_size_bytes (the logged model's bytes) and any other ``tags``.

    When a version of ``name`` carries the same content digest, no version is created: that
    version is returned (and the log names it). If it holds no alias (its registration was
    cut short), the alias is decided from its own tags and set now; an alias it holds is kept.

    Args:
        model_uri: ``ModelInfo.model_uri`` from :func:`inc_flow.model.pyfunc.log_model`.
        name: the registered model (see :func:`registered_model_name`).
        metrics: ``accuracy``, ``relative_drop``, ``latency_ms``; optional ``speedup``
            (fp32 latency / int8 latency) and ``absolute_drop``.
        tags: ``backend``, ``approach``, ``study``, and any others to set.
        eval_data: identifies the eval data and metric (see :func:`fingerprint`).
        criterion: the accuracy criterion (see :func:`canonical`).
        meets_target: whether the model met its accuracy target.
        digest: the model's :func:`content_digest`; default the logged model's
            ``content_digest`` tag (set by ``log_model``). Without one, nothing is
            deduplicated.
        champion_allowed: False: never ``champion`` (e.g. not faster than fp32 in the
            side-by-side round); the version is a ``challenger`` with ``veto_reason``.
        beats_champion: the side-by-side round's comparison with the current champion
            (None: not timed together); replaces the latency tags' comparison, with
            ``champion_reason`` as the alias reason.

    Returns:
        The ModelVersion (``.version``), new or existing, with its alias set.
    """
    missing = [k for k in REQUIRED_METRICS if metrics.get(k) is None]
    missing += [k for k in REQUIRED_TAGS if tags.get(k) is None]
    if missing:
        raise RegistryError(
            f"register needs {missing} in `metrics`/`tags`, got "
            f"metrics={dict(metrics)!r}, tags={dict(tags)!r}"
        )
    digest = digest or logged_digest(model_uri)
    existing = None if digest is None else find_version(name, digest)
    veto = None if champion_allowed else (veto_reason or "it may not be champion")
    if existing is not None:
        return _settle(name, existing, veto)
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
    if veto is not None:
        alias, reason = CHALLENGER, veto
    version_tags.update(
        {
            TAG_EVAL_DATA: eval_data,
            TAG_CRITERION: criterion,
            TAG_MEETS_TARGET: str(bool(meets_target)).lower(),
            TAG_ALIAS_REASON: reason,
        }
    )
    if digest is not None:
        version_tags[TAG_DIGEST] = digest
    size = _logged_size(model_uri)
    if size is not None:
        version_tags[TAG_SIZE] = size
    mv = mlflow.register_model(model_uri, name, tags=version_tags)
    client = mlflow.MlflowClient()
    twin = None if digest is None else find_version(name, digest)
    if twin is not None and str(twin.version) != str(mv.version):
        # another process registered the same model a moment earlier: keep the older one
        client.delete_model_version(name, str(mv.version))
        return _settle(name, twin, veto)
    fault_point(AFTER_REGISTER)
    client.set_registered_model_alias(name, alias, mv.version)
    fault_point(AFTER_ALIAS)
    logger.info("registered %s version %s as %s: %s", name, mv.version, alias, reason)
    return client.get_model_version(name, mv.version)


def _settle(name: str, version: Any, veto: str | None = None) -> Any:
    """An existing version of the same model: not registered again; its alias set if it has
    none (decided from its own tags, against the current champion; ``veto``: challenger)."""
    client = mlflow.MlflowClient()
    held = list(version.aliases)
    what = f"{name} version {version.version} holds this model already"
    why = f"{TAG_DIGEST} {version.tags.get(TAG_DIGEST)}"
    if held:
        logger.info("%s (%s), as %s: not registered again", what, why, ", ".join(held))
        return version
    current = champion(name)
    old = None if current is None else _facts_from_tags(current.tags)
    alias, reason = _decide(_facts_from_tags(version.tags), old)
    if veto is not None:
        alias, reason = CHALLENGER, veto
    client.set_model_version_tag(name, str(version.version), TAG_ALIAS_REASON, reason)
    client.set_registered_model_alias(name, alias, version.version)
    logger.info(
        "%s (%s), with no alias: not registered again; now %s: %s", what, why, alias, reason
    )
    return client.get_model_version(name, version.version)
