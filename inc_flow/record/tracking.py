"""The MLflow boundary: one parent run per study, one nested child run per trial.

Child runs are opened when a trial starts (so a killed process leaves a RUNNING run that the
next run of the study marks KILLED) and closed with the trial's plan as params, its scores
as metrics, its state as tags, and its op statistics and plan as artifacts. Every child run
has the same keys, so the MLflow UI's compare view lines trials up.

Scale out (``role``): a ``worker`` logs its trials under a parent run made once for the study
(:meth:`MlflowTracker.create_parent`, its id kept in the Optuna study) and leaves the parent's
summary, registration and end to ``finalize``, run once after the workers.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import mlflow
import yaml
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from inc_flow.config.sections import Config
from inc_flow.search.plan import Plan
from inc_flow.search.records import StudyInfo, TrialRecord, TuneResult

logger = logging.getLogger("inc_flow")

TAG_STUDY = "inc_flow.study"
TAG_ROLE = "inc_flow.role"  # "study" (parent) or "trial" (child)
TAG_TRIAL = "inc_flow.trial"
TAG_STATE = "inc_flow.state"
TAG_REASON = "inc_flow.failure_reason"
TAG_PHASE = "inc_flow.phase"
TAG_PARENT = "mlflow.parentRunId"
MAX_KEY = 250
MAX_VALUE = 6000
_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. :/]")


def tracking_uri(cfg: Config | None = None) -> str | None:
    """``MLFLOW_TRACKING_URI``, else ``tracking.uri``, else None (MLflow's own default)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return cfg.tracking.uri if cfg is not None and cfg.tracking.uri else None


def safe_key(key: str) -> str:
    """An MLflow-safe key: ``[ ] #`` and other characters MLflow rejects become ``_``; long
    keys are cut to 250 characters keeping their end (where op names differ)."""
    key = _UNSAFE.sub("_", key)
    return key if len(key) <= MAX_KEY else key[:40] + "~" + key[-(MAX_KEY - 41) :]


def plan_params(plan: Plan) -> dict[str, str]:
    """The plan as flat params: approach, backend, observer settings, one ``op.<name>``."""
    int8 = [op for op in plan.ops if op.quantized]
    first = int8[0] if int8 else None
    params = {
        "approach": plan.approach,
        "backend": plan.backend,
        "framework": plan.framework,
        "act_algorithm": first.act_algorithm if first else "-",
        "act_scheme": first.act_scheme if first else "-",
        "weight_granularity": first.weight_granularity if first else "-",
        "n_int8_ops": str(len(int8)),
        "n_fp32_ops": str(len(plan.ops) - len(int8)),
    }
    for op in plan.ops:
        params[safe_key(f"op.{op.name}")] = op.dtype
    return params


def record_metrics(record: TrialRecord) -> dict[str, float]:
    """The trial's scores as MLflow metrics (absent scores are left out, not zero)."""
    values: dict[str, Any] = {
        "accuracy": record.accuracy,
        "relative_drop": record.relative_drop,
        "absolute_drop": record.absolute_drop,
        "latency_ms": record.latency_ms,
        "model_size_bytes": record.model_size,
        "int8_ops": record.int8_ops,
        "fp32_ops": record.fp32_ops,
        "eval_samples": record.eval_samples,
        "eval_samples_saved": record.samples_saved,
        "calibration_passes": record.calibration_passes,
        "trial_wall_time_s": record.wall_time_s,
    }
    for key, value in record.perf.items():
        values.setdefault(key, value)
    return {safe_key(k): float(v) for k, v in values.items() if v is not None}


class MlflowTracker:
    """Writes a study to MLflow (a :class:`inc_flow.search.ports.Tracker`).

    Args:
        cfg: the config (experiment name, tracking URI, the config logged as an artifact).
        uri: tracking URI; default ``MLFLOW_TRACKING_URI``, then ``tracking.uri``.
        role: ``tune`` (one process does it all), ``worker`` (trials only: the parent run is
            neither summarised nor ended) or ``finalize`` (no trials; summarises and ends).
        parent_id: the study's parent run, made beforehand (``worker`` and ``finalize``).
    """

    def __init__(
        self,
        cfg: Config,
        uri: str | None = None,
        *,
        role: str = "tune",
        parent_id: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.uri = uri or tracking_uri(cfg)
        if self.uri:
            mlflow.set_tracking_uri(self.uri)
        self.client = MlflowClient()
        self.role = role
        self.parent_id: str | None = parent_id
        self.experiment_id: str | None = None
        self._owns_parent = False
        self._children: dict[int, str] = {}
        self._study = ""
        self.log_seconds = 0.0

    # --- study -----------------------------------------------------------------------------
    def study_started(self, info: StudyInfo) -> None:
        start = time.perf_counter()
        project_run = os.environ.get("MLFLOW_RUN_ID")
        if self.role != "tune":  # the parent made once for the study (create_parent)
            assert self.parent_id, "a worker or finalize tracker needs the study's parent run"
            self.experiment_id = self.client.get_run(self.parent_id).info.experiment_id
            self._owns_parent = self.role == "finalize"
            project_run = None
        elif project_run:  # `mlflow run`: the project run is the study's parent
            run = self.client.get_run(project_run)
            self.parent_id, self.experiment_id = project_run, run.info.experiment_id
        else:
            self.experiment_id = self._experiment()
            existing = self._find_parent(info.study_name)
            if existing is not None:
                self.parent_id = existing
                self.client.update_run(existing, status="RUNNING")
            else:
                run = self.client.create_run(
                    self.experiment_id,
                    run_name=info.study_name,
                    tags={TAG_STUDY: info.study_name, TAG_ROLE: "study"},
                )
                self.parent_id = run.info.run_id
            self._owns_parent = True
        parent = self.parent_id
        self._study = info.study_name
        self.client.set_tag(parent, TAG_STUDY, info.study_name)
        self.client.set_tag(parent, TAG_ROLE, "study")
        s = info.settings
        params = {
            "model": self.cfg.model.name,
            "approach": s.approach,
            "backends": ",".join(s.backends),
            "strategy": s.strategy,
            "objective": s.objective,
            "criterion": _criterion(s),
            "max_trials": str(s.max_trials),
            "timeout": str(s.timeout),
            "random_seed": str(s.random_seed),
            "n_ops": str(len(info.ops)),
            "study_storage": info.storage,
        }
        have = self.client.get_run(parent).data.params
        new = [Param(k, v[:MAX_VALUE]) for k, v in params.items() if k not in have]
        metrics = {"fp32_latency_ms": info.baseline_latency_ms}
        if info.baseline_accuracy is not None:
            metrics["fp32_accuracy"] = info.baseline_accuracy
        if info.required_accuracy is not None:
            metrics["required_accuracy"] = info.required_accuracy
        now = _now()
        self.client.log_batch(
            parent, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()], params=new
        )
        self.client.log_text(parent, self.cfg.to_yaml(), "config.yaml")
        if project_run:
            self.client.update_run(parent, name=info.study_name)
        self._kill_orphans(info)
        self._log_resumed(info)
        self.log_seconds += time.perf_counter() - start

    def _log_resumed(self, info: StudyInfo) -> None:
        """Trials finished by an earlier run of the study get a child run here if they have
        none yet (e.g. the study was tuned with tracking off), so the parent shows them all."""
        if not info.resumed:
            return
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=(
                f"tags.`{TAG_STUDY}` = '{info.study_name}' and tags.`{TAG_ROLE}` = 'trial' "
                "and attributes.status != 'KILLED'"
            ),
            max_results=5000,
        )
        logged = {r.data.tags.get(TAG_TRIAL) for r in runs}
        for record in info.resumed:
            if str(record.number) not in logged:
                self.trial_finished(record)

    def create_parent(self, study: str) -> str:
        """The study's parent run: the latest one tagged for ``study``, else a new one. Called
        by the one process that created the Optuna study, so workers never race to make two."""
        self.experiment_id = self._experiment()
        existing = self._find_parent(study)
        if existing is not None:
            self.client.update_run(existing, status="RUNNING")
            return existing
        run = self.client.create_run(
            self.experiment_id, run_name=study, tags={TAG_STUDY: study, TAG_ROLE: "study"}
        )
        return run.info.run_id

    def _experiment(self) -> str:
        env = os.environ.get("MLFLOW_EXPERIMENT_ID")
        if env:
            return env
        name = self.cfg.experiment_name
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        try:
            return self.client.create_experiment(name, artifact_location=_artifact_location())
        except MlflowException as e:  # another worker created it a moment ago
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            logger.debug("experiment %s created concurrently: %s", name, e)
            return exp.experiment_id

    def _find_parent(self, study: str) -> str | None:
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{TAG_STUDY}` = '{study}' and tags.`{TAG_ROLE}` = 'study'",
            max_results=1,
            order_by=["attributes.start_time DESC"],
        )
        return runs[0].info.run_id if runs else None

    def _kill_orphans(self, info: StudyInfo) -> None:
        """Child runs of trials a dead process left RUNNING become KILLED."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=(
                f"tags.`{TAG_STUDY}` = '{info.study_name}' and tags.`{TAG_ROLE}` = 'trial' "
                "and attributes.status = 'RUNNING'"
            ),
            max_results=1000,
        )
        stale = {str(n) for n in info.stale_trials}
        finished = {str(r.number) for r in info.resumed}
        for run in runs:
            number = run.data.tags.get(TAG_TRIAL)
            if number in stale or number in finished:
                self.client.set_tag(run.info.run_id, TAG_STATE, "killed")
                self.client.set_terminated(run.info.run_id, status="KILLED")
                logger.info("marked orphaned MLflow run of trial %s KILLED", number)

    # --- trials ----------------------------------------------------------------------------
    def trial_started(self, number: int, plan: Plan) -> None:
        start = time.perf_counter()
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"trial-{number:03d}",
            tags={
                TAG_PARENT: self.parent_id,
                TAG_STUDY: self._study,
                TAG_ROLE: "trial",
                TAG_TRIAL: str(number),
                TAG_STATE: "running",
            },
        )
        self._children[number] = run.info.run_id
        self.log_seconds += time.perf_counter() - start

    def trial_finished(self, record: TrialRecord) -> None:
        start = time.perf_counter()
        run_id = self._children.pop(record.number, None)
        if run_id is None:  # a tuner without trial_started
            self.trial_started(record.number, record.plan)
            run_id = self._children.pop(record.number)
        now = _now()
        tags = {TAG_STATE: record.state, TAG_PHASE: record.phase}
        if record.failure_reason:
            tags[TAG_REASON] = record.failure_reason[:MAX_VALUE]
        if record.duplicate_of is not None:
            tags["inc_flow.duplicate_of"] = str(record.duplicate_of)
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, v, now, 0) for k, v in record_metrics(record).items()],
            params=[Param(k, v) for k, v in plan_params(record.plan).items()],
            tags=[RunTag(k, v) for k, v in tags.items()],
        )
        if record.op_stats:
            self.client.log_table(run_id, _columns(record.op_stats), "op_statistics.json")
        self.client.log_text(run_id, yaml.safe_dump(record.plan.to_dict()), "plan.yaml")
        status = "FAILED" if record.state == "error" else "FINISHED"
        self.client.set_terminated(run_id, status=status)
        self.log_seconds += time.perf_counter() - start

    # --- end -------------------------------------------------------------------------------
    def study_finished(self, result: TuneResult) -> None:
        if self.role == "worker":  # the study's summary is finalize's
            return
        start = time.perf_counter()
        parent = self.parent_id
        metrics: dict[str, Any] = {
            "n_trials": result.n_trials,
            "n_pruned": result.n_pruned,
            "n_errors": result.n_errors,
            "n_duplicates": result.n_duplicates,
            "calibration_passes": result.calibration_passes,
            "eval_samples_saved": result.eval_samples_saved,
            "tuning_wall_time_s": result.wall_time_s,
        }
        if result.best is not None:
            best = record_metrics(result.best)
            metrics.update({f"best_{k}": v for k, v in best.items()})
            metrics["speedup"] = result.speedup
            self.client.set_tag(parent, "inc_flow.best_trial", str(result.best.number))
        self.client.set_tag(parent, "inc_flow.stop_reason", result.stop_reason)
        self.client.set_tag(parent, "inc_flow.slower_than_fp32", str(result.slower_than_fp32))
        now = _now()
        self.client.log_batch(
            parent,
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items() if v is not None],
        )
        self._log_plots(result)
        self.log_seconds += time.perf_counter() - start
        self.client.log_metric(parent, "mlflow_logging_s", self.log_seconds)

    def _log_plots(self, result: TuneResult) -> None:
        try:
            from inc_flow.record import plots
        except ImportError as e:  # matplotlib missing: the record is complete without them
            logger.warning("plots skipped: %s", e)
            return
        with tempfile.TemporaryDirectory() as tmp:
            for path in plots.study_plots(result, Path(tmp)):
                self.client.log_artifact(self.parent_id, str(path), "plots")

    def log_times(self, seconds: dict[str, float]) -> None:
        """Where the time went (calibration, convert, evaluation, latency, logging)."""
        values = {**seconds, "time_logging_s": self.log_seconds}
        now = _now()
        self.client.log_batch(
            self.parent_id, metrics=[Metric(k, float(v), now, 0) for k, v in values.items()]
        )

    def log_outputs(self, output_dir: str | os.PathLike, statistics: list[str]) -> None:
        """The best model's files and its Mixed Precision Statistics, on the parent run."""
        self.client.log_artifact(self.parent_id, str(Path(output_dir) / "best_configure.yaml"))
        self.client.log_text(
            self.parent_id, "\n".join(statistics) + "\n", "mixed_precision_statistics.txt"
        )

    def publish(self, q_model: Any, result: TuneResult, fp32_model: Any, eval_source: str) -> Any:
        """Log the best model on the parent run and register it (champion or challenger).

        Args:
            q_model: the chosen :class:`inc_flow.model.output.QuantizedModel`.
            result: the study's result (scores for the version tags).
            fp32_model: the fp32 model, for a factory when the config names none.
            eval_source: what the accuracy was measured on (compared before moving
                ``champion``: only results on the same data and criterion compete).

        Returns:
            The registered ModelVersion, or None when the model could not be registered.
        """
        from inc_flow.model import pyfunc as flavor
        from inc_flow.model import registry

        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="inc_flow_best_") as tmp:
            q_model.save(tmp)
            self.log_outputs(tmp, q_model.statistics_lines())
        factory = self.cfg.model.factory or _class_factory(fp32_model)
        if factory is None:
            logger.warning(
                "the best model is not logged as an MLflow model: set `model.factory` so the "
                "pyfunc loader can rebuild %s",
                type(fp32_model).__name__,
            )
            return None
        with mlflow.start_run(run_id=self.parent_id):
            info = flavor.log_model(q_model, factory)
        self.log_seconds += time.perf_counter() - start
        best = result.best
        if not result.accuracy_checked or best is None or best.accuracy is None:
            logger.warning("accuracy was not checked: the model is logged but not registered")
            return None
        name = registry.registered_model_name(
            self.cfg.model.name, self.cfg.tracking.registered_model_name
        )
        metrics = {
            "accuracy": best.accuracy,
            "relative_drop": best.relative_drop,
            "absolute_drop": best.absolute_drop,
            "latency_ms": best.latency_ms,
        }
        if result.speedup is not None:
            metrics["speedup"] = result.speedup
        crit = self.cfg.tuning.accuracy_criterion
        version = registry.register(
            info.model_uri,
            name,
            {k: v for k, v in metrics.items() if v is not None},
            {
                "backend": best.plan.backend,
                "approach": best.plan.approach,
                "study": result.study_name,
                "run_id": self.parent_id,
            },
            eval_data=registry.fingerprint(eval_source),
            criterion=registry.canonical(crit.to_dict()),
            meets_target=best.passed,
        )
        self.client.set_tag(self.parent_id, "inc_flow.registered_model", name)
        self.client.set_tag(self.parent_id, "inc_flow.registered_version", str(version.version))
        return version

    def close(self, failed: bool = False) -> None:
        """End the parent run if this tracker opened it (a project run ends by itself)."""
        for run_id in self._children.values():
            self.client.set_terminated(run_id, status="FAILED")
        self._children.clear()
        if self._owns_parent and self.parent_id:
            self.client.set_terminated(self.parent_id, status="FAILED" if failed else "FINISHED")


def _artifact_location() -> str | None:
    """For an SQLite store, artifacts go beside the database file (``<dir>/mlruns/<name>``)
    rather than under whatever directory the process happens to run in."""
    uri = mlflow.get_tracking_uri()
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri.removeprefix("sqlite:///")).resolve()
    return (db.parent / "mlruns").as_uri() + f"/{int(time.time() * 1000)}"


def _class_factory(model: Any) -> str | None:
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


def _criterion(settings: Any) -> str:
    if settings.absolute is not None:
        return f"absolute {settings.absolute}"
    rel = settings.relative if settings.relative is not None else 0.01
    return f"relative {rel}"


def _columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    keys = list(rows[0])
    return {k: [row.get(k) for row in rows] for k in keys}


def _now() -> int:
    return int(time.time() * 1000)


__all__ = [
    "MlflowTracker",
    "plan_params",
    "record_metrics",
    "safe_key",
    "tracking_uri",
]
