"""After the search: the quantized model of the best trial, saved to its output folder first,
then its MLflow record (times, the logged and registered model, the HTML report); the closest
model kept when nothing passed; the outcome's log lines.

The speed verdict of the side-by-side round (``search.speed``) decides the alias: a model not
faster than fp32 is registered as ``challenger``, never ``champion``, with the verdict as its
reason; :func:`champion_rivals` brings the registry's champion into the round.

The MLflow tracker is opened per study by :func:`recording` (unless ``tracking.enabled`` is
false or the caller brings its own tracker); a ``worker`` neither publishes nor registers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inc_flow.assemble import Assembly, Stage
from inc_flow.config.preflight import default_output
from inc_flow.config.sections import Config
from inc_flow.model.output import QuantizedModel
from inc_flow.record import keys
from inc_flow.scaleout import study_parent
from inc_flow.search.final import Rivals
from inc_flow.search.ports import Engine, Tracker
from inc_flow.search.progress import LoggingTracker, MultiTracker
from inc_flow.search.records import TuneResult
from inc_flow.search.settings import TuneSettings
from inc_flow.search.speed import CHAMPION, Candidate
from inc_flow.vocab import Approach, Role

logger = logging.getLogger("inc_flow")

BEST_MODEL_DIR = "best_model"
"""Where, in the workspace, a model to be registered is saved first when no output is given."""
REPORTS_DIR = "reports"
"""Where, in the workspace, each study's HTML report is kept (``reports/<study>/report.html``)."""


@dataclass
class Recording:
    """One study's trackers: ``trackers`` for the search, ``recorder`` (MLflow, or None)."""

    trackers: MultiTracker
    recorder: Any
    role: str = Role.TUNE
    saved: Path | None = None  # where the best model was saved (publish)
    report: Path | None = None  # the study's HTML report, kept in the workspace (publish)

    @property
    def unrecorded(self) -> tuple[str, ...]:
        """What MLflow did not record (the store failed mid-study: ``record.outage``)."""
        return self.recorder.outage.missed if self.recorder is not None else ()


def open_recorder(cfg: Config, settings: TuneSettings, role: str = Role.TUNE) -> Any:
    """The MLflow tracker, unless ``tracking.enabled`` is false."""
    if not cfg.tracking.enabled:
        return None
    from inc_flow.record.tracking import MlflowTracker  # imports mlflow: only when tracking

    if role == Role.TUNE:
        return MlflowTracker(cfg, settings=settings)
    recorder = MlflowTracker(cfg, role=role, settings=settings)
    recorder.parent_id = study_parent(settings, recorder, role)
    return recorder


@contextmanager
def recording(
    cfg: Config, settings: TuneSettings, role: str = Role.TUNE, tracker: Tracker | None = None
) -> Iterator[Recording]:
    """The study's trackers (``tracker``, or the log and MLflow); closes the MLflow record,
    as failed when the block raised."""
    recorder = open_recorder(cfg, settings, role) if tracker is None else None
    failed = True
    try:
        yield Recording(MultiTracker(tracker or LoggingTracker(), recorder), recorder, role)
        failed = False
    finally:
        if recorder is not None:
            recorder.close(failed=failed)


def publish(
    rec: Recording,
    cfg: Config,
    parts: Assembly,
    stage: Stage,
    result: TuneResult,
    output: str | os.PathLike[str] | None = None,
) -> QuantizedModel | None:
    """The best trial's quantized model (None if nothing passed): saved to ``output`` first
    (else, when it is to be registered, to ``<workspace>/best_model``), then logged and
    registered; the closest kept when nothing passed; the HTML report on the parent run."""
    recorder, role = rec.recorder, rec.role
    if recorder is not None and role == Role.TUNE:
        recorder.log_times(time_split(parts, stage))
    q_model = None
    registers = recorder is not None and role != Role.WORKER
    if result.best is not None:
        q_model = QuantizedModel(
            model=result.best_model,
            plan=result.best.plan,
            example_inputs=parts.example,
            calibration_size=0 if stage.approach == Approach.DYNAMIC else parts.sampling_size,
            info=info(result),
        )
        if output is None and registers:
            output = Path(stage.settings.workspace) / BEST_MODEL_DIR
        saved = save(q_model, cfg, output) if output is not None else None
        rec.saved = saved
        if registers:
            logger.info(
                "logging trial %d's model to MLflow and registering it", result.best.number
            )
            _register(recorder, q_model, cfg, parts, result, saved)
    elif role != Role.WORKER:
        keep_closest(stage.engine, result, parts.example, stage.settings, parts.sampling_size)
    if recorder is not None and role != Role.WORKER:
        folder = Path(stage.settings.workspace) / REPORTS_DIR / stage.settings.study_name
        rec.report = _log_report(recorder, folder)
    return q_model


def _register(
    recorder: Any,
    q_model: QuantizedModel,
    cfg: Config,
    parts: Assembly,
    result: TuneResult,
    saved: Path | None,
) -> None:
    """Log and register the model saved in ``saved``; on failure, say where it is kept."""
    terms = alias_terms(result)
    if not terms["champion_allowed"] and result.accuracy_checked:
        logger.warning("the model may not be @champion: %s", terms["veto_reason"])
    source = eval_source(cfg, parts.eval_func)
    try:
        recorder.publish(q_model, result, parts.model, source, **terms)
    except BaseException as e:  # a kill (KeyboardInterrupt) too: the saved model stays
        note = (
            f"the model is saved in {saved} (best_configure.yaml + weights), but MLflow did "
            "not finish logging and registering it: rerun the same tuning to record it "
            "(finished trials do not run again)"
        )
        logger.error("%s (%s: %s)", note, type(e).__name__, e)
        e.add_note(note)
        raise


def alias_terms(result: TuneResult) -> dict[str, Any]:
    """What registration is told about speed (``model.registry.register``): no ``champion``
    unless faster than fp32 in the side-by-side round (the verdict is the reason), and the
    round's comparison with the current champion, when it was timed too."""
    speed = result.speed
    return {
        "champion_allowed": result.faster_than_fp32,
        "veto_reason": "" if result.faster_than_fp32 else result.verdict,
        "beats_champion": speed.beats_champion if speed is not None else None,
        "champion_reason": speed.champion_text if speed is not None else "",
    }


def champion_rivals(rec: Recording, cfg: Config) -> Rivals | None:
    """The registry's ``@champion`` for the side-by-side round, loaded when the round runs;
    None when this process does not register (no MLflow, a worker)."""
    if rec.recorder is None or rec.role == Role.WORKER:
        return None

    def load() -> list[Candidate]:
        if rec.recorder.outage.down:  # no champion to read; MLflow's retries are not waited
            return []
        import mlflow

        from inc_flow.model import registry

        name = registry.registered_model_name(cfg.model.name, cfg.tracking.registered_model_name)
        version = registry.champion(name)
        if version is None:
            return []
        uri = f"models:/{name}@{keys.ALIAS_CHAMPION}"
        model = mlflow.pyfunc.load_model(uri).get_raw_model()
        backend = version.tags.get(keys.VERSION_BACKEND)
        return [Candidate(f"champion v{version.version}", model, CHAMPION, backend)]

    return load


def time_split(parts: Assembly, stage: Stage) -> dict[str, float]:
    """Where the tuning time went, in seconds (this process's share of the study)."""
    engine, evaluator, benchmark = stage.engine, parts.evaluator, parts.benchmark
    return {
        keys.METRIC_TIME_CALIBRATION: engine.calibration_seconds,
        keys.METRIC_TIME_CONVERT: engine.convert_seconds,
        keys.METRIC_TIME_EVALUATION: evaluator.seconds if evaluator is not None else 0.0,
        keys.METRIC_TIME_LATENCY: benchmark.seconds,
    }


def eval_source(cfg: Config, eval_func: Any) -> str:
    """What the accuracy was measured on, for comparing registered versions fairly."""
    if eval_func is not None:
        where = getattr(eval_func, "__module__", "")
        return f"eval_func:{where}.{getattr(eval_func, '__qualname__', '')}"
    acc = cfg.evaluation.accuracy
    return repr(acc.to_dict()) if acc is not None else "python dataloader and metric"


def _log_report(recorder: Any, folder: Path) -> Path | None:
    """The study's HTML dashboard on its parent run, its file kept in ``folder``; a report
    failure never fails tuning."""
    if recorder.outage.down:  # what is not recorded is said once, when the recorder closes
        return None
    try:
        from inc_flow.record.report import log_report

        return log_report(recorder.client, recorder.parent_id, None, folder)
    except Exception as e:  # noqa: BLE001 - the report is a view of a record already kept
        logger.warning("the HTML report was not logged: %s", e)
        return None


def next_steps(rec: Recording | None, cfg: Config, q_model: QuantizedModel | None) -> str:
    """The "next steps" block: the parent run in the MLflow UI (training view), the registered
    model (``models:/NAME@champion``, or why it is not the champion), the report, and how to
    load the model (``record.links``). Empty for a worker."""
    if rec is None or rec.role == Role.WORKER:
        return ""
    recorder = rec.recorder
    steps: dict[str, Any] = {}
    if recorder is not None and recorder.parent_id and recorder.experiment_id:
        from inc_flow.record import links  # imports no mlflow, but lives with the record

        base, start_ui = links.ui_base(recorder.uri or _default_uri())
        steps["url"] = links.run_url(base, recorder.experiment_id, recorder.parent_id)
        steps["start_ui"] = start_ui
        steps["model"] = (
            links.model_line(recorder)
            if q_model is not None
            else "none: no plan met the accuracy target (the log names the closest trial)"
        )
        steps["report"] = str(rec.report) if rec.report is not None else ""
        if q_model is not None and recorder.version is not None:
            uri = f"models:/{recorder.version.name}/{recorder.version.version}"
            steps["load"] = (f'mlflow.pyfunc.load_model("{uri}").predict(x)',)
    if q_model is not None and rec.saved is not None:
        module, _, name = (cfg.model.factory or "").partition(":")
        fp32 = f"{name}()" if name else "<your fp32 model>"
        line = f'inc_flow.load("{rec.saved}", {fp32})'
        if name:
            line += f"  # from {module} import {name}"
        steps["load"] = (line, *steps.get("load", ()))
    if not steps:
        return ""
    from inc_flow.record.links import Steps

    return Steps(**steps).text()


def _default_uri() -> str:
    import mlflow

    return mlflow.get_tracking_uri()


def info(result: TuneResult) -> dict[str, Any]:
    """The ``info`` of a saved model: accuracy, latency and the study it came from."""
    best = result.best
    return {
        "accuracy": best.accuracy if best else None,
        "baseline_accuracy": result.baseline_accuracy,
        "relative_drop": best.relative_drop if best else None,
        "latency_ms": result.latency_ms,
        "baseline_latency_ms": result.fp32_latency_ms,
        "speedup": result.speedup,
        "slower_than_fp32": result.slower_than_fp32,
        "faster_than_fp32": result.faster_than_fp32,
        "speed_verdict": result.verdict,
        "accuracy_checked": result.accuracy_checked,
        "trial": best.number if best else None,
        "trials": result.n_trials,
        "study": result.study_name,
    }


def keep_closest(
    engine: Engine, result: TuneResult, example: Any, settings: TuneSettings, size: int
) -> None:
    """Nothing passed: keep the closest trial's model in the workspace and say why."""
    closest = result.closest
    if closest is None:
        logger.warning("no trial completed; nothing to keep (see the trial log above)")
        return
    target = Path(settings.workspace) / "closest_model"
    try:
        model = engine.build(closest.plan)
        QuantizedModel(model, closest.plan, example, size, info(result)).save(target)
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


def log_outcome(q_model: QuantizedModel | None) -> None:
    """The outcome in the log: the statistics and fp32 fallbacks, or that nothing passed."""
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


def save(
    q_model: QuantizedModel, cfg: Config, output: str | os.PathLike[str] | None = None
) -> Path:
    """Write ``q_model`` to ``output`` (default ``outputs/<model.name>``); the directory."""
    path = Path(output) if output is not None else default_output(cfg)
    q_model.save(path)
    logger.info("saved best_configure.yaml and weights to %s", path)
    return path
