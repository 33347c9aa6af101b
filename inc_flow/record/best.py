"""The best model on the study's parent run: its files (``best_configure.yaml``, the Mixed
Precision Statistics), the logged MLflow model, and its registered version (champion or
challenger). Called through :meth:`inc_flow.record.tracking.MlflowTracker.publish`.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import mlflow

from inc_flow.record import keys as k
from inc_flow.record.store import fail_orphaned_models
from inc_flow.search.records import TuneResult

logger = logging.getLogger("inc_flow")


def log_outputs(
    client: Any, run_id: str, output_dir: str | os.PathLike, statistics: list[str]
) -> None:
    """The best model's files and its Mixed Precision Statistics, on the parent run."""
    configure = Path(output_dir) / k.ARTIFACT_BEST_CONFIGURE
    client.log_artifact(run_id, str(configure))
    text = "\n".join(statistics) + "\n"
    client.log_text(run_id, text, k.ARTIFACT_STATISTICS)


def publish(
    tracker: Any,
    q_model: Any,
    result: TuneResult,
    fp32_model: Any,
    eval_source: str,
    **terms: Any,
) -> Any:
    """Log the best model on ``tracker``'s parent run and register it (see
    :meth:`inc_flow.record.tracking.MlflowTracker.publish`); the version, or None."""
    from inc_flow.model import pyfunc as flavor
    from inc_flow.model import registry

    client, parent_id, cfg = tracker.client, tracker.parent_id, tracker.cfg
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="inc_flow_best_") as tmp:
        q_model.save(tmp)
        log_outputs(client, parent_id, tmp, q_model.statistics_lines())
        digest = registry.content_digest(tmp)
    factory = cfg.model.factory or class_factory(fp32_model)
    if factory is None:
        tracker.not_registered = "set `model.factory` so the pyfunc loader can rebuild the model"
        logger.warning(
            "the best model is not logged as an MLflow model: set `model.factory` so the "
            "pyfunc loader can rebuild %s",
            type(fp32_model).__name__,
        )
        return None
    best = result.best
    checked = result.accuracy_checked and best is not None and best.accuracy is not None
    name = registry.registered_model_name(cfg.model.name, cfg.tracking.registered_model_name)
    # The same model (a rerun, a kill during publishing) is neither logged nor registered
    # again: the registered version's, else this run's logged model, is used.
    existing = registry.find_version(name, digest) if checked else None
    fail_orphaned_models(client, parent_id)  # PENDING ones of a killed upload
    uri = existing.source if existing else flavor.find_logged_model(parent_id, digest)
    if uri is None:
        with mlflow.start_run(run_id=parent_id):
            threads = tracker.cfg.tracking.predict_threads
            uri = flavor.log_model(q_model, factory, threads=threads).model_uri
        registry.fault_point(registry.AFTER_LOG_MODEL)
    tracker.model_uri = uri
    tracker.log_seconds += time.perf_counter() - start
    if not checked:
        tracker.not_registered = "accuracy was not checked"
        logger.warning("accuracy was not checked: the model is logged but not registered")
        return None
    metrics = {
        k.METRIC_ACCURACY: best.accuracy,
        k.METRIC_RELATIVE_DROP: best.relative_drop,
        k.METRIC_ABSOLUTE_DROP: best.absolute_drop,
        k.METRIC_LATENCY_MS: result.latency_ms,
    }
    if result.speedup is not None:
        metrics[k.METRIC_SPEEDUP] = result.speedup
    crit = cfg.tuning.accuracy_criterion
    version = registry.register(
        uri,
        name,
        {key: v for key, v in metrics.items() if v is not None},
        {
            k.VERSION_BACKEND: best.plan.backend,
            k.VERSION_RUNTIME: best.plan.runtime,
            k.VERSION_APPROACH: best.plan.approach,
            k.VERSION_STUDY: result.study_name,
            k.VERSION_RUN_ID: parent_id,
            k.VERSION_SPEED_VERDICT: result.verdict[: k.MAX_VALUE],
        },
        eval_data=registry.fingerprint(eval_source),
        criterion=registry.canonical(crit.to_dict()),
        meets_target=best.passed,
        digest=digest,
        **terms,
    )
    client.set_tag(parent_id, k.TAG_REGISTERED_MODEL, name)
    client.set_tag(parent_id, k.TAG_REGISTERED_VERSION, str(version.version))
    tracker.version = version
    return version


def class_factory(model: Any) -> str | None:
    """``module:Class`` when the model's class builds with no arguments outside ``__main__``."""
    cls = type(model)
    if cls.__module__ in ("__main__", "builtins") or "<locals>" in cls.__qualname__:
        return None
    if cls.__module__.startswith("torch."):
        return None
    try:
        cls()
    except Exception:  # noqa: BLE001 - needs arguments: no factory to offer
        return None
    return f"{cls.__module__}:{cls.__qualname__}"


__all__ = ["class_factory", "log_outputs", "publish"]
