"""The MLflow boundary: one parent run per study, one nested child run per trial.

Child runs are opened when a trial starts (so a killed process leaves a RUNNING run that the
next run of the study marks KILLED) and closed with the trial's plan as params, its scores
as metrics, its state as tags, and its op statistics and plan as artifacts. Every child run
has the same keys, so the MLflow UI's compare view lines trials up. Which run is the parent,
and the runs' names and context tags: ``record.parent``; the study's data as MLflow datasets
on the parent and each trial: ``record.datasets``; the best model: ``record.best``.

Scale out (``role``): a ``worker`` logs its trials under a parent run made once for the study
(:meth:`MlflowTracker.create_parent`, its id kept in the Optuna study) and leaves the parent's
summary, registration and end to ``finalize``, run once after the workers.

Outages (``record.outage``): the store is reached when the tracker opens (``record.store``:
seconds, not MLflow's minutes of retries); a failure later marks it down, and the rest of the
run records nothing more but tunes and saves; ``outage.missed`` says what is missing.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import mlflow
import yaml
from mlflow import MlflowClient
from mlflow.entities import DatasetInput, Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from inc_flow.config.sections import Config
from inc_flow.record import best, fetch, parent
from inc_flow.record import keys as k
from inc_flow.record.datasets import log_datasets, study_datasets
from inc_flow.record.outage import Outage, guarded
from inc_flow.record.store import reach
from inc_flow.record.values import (
    baseline_metrics,
    columns,
    plan_params,
    record_metrics,
    result_metrics,
    result_tags,
    study_params,
)
from inc_flow.search.plan import Plan
from inc_flow.search.records import StudyInfo, TrialRecord, TuneResult
from inc_flow.search.settings import TuneSettings
from inc_flow.vocab import Role, TrialState

logger = logging.getLogger("inc_flow")


def tracking_uri(cfg: Config | None = None) -> str | None:
    """``MLFLOW_TRACKING_URI``, else ``tracking.uri``, else None (MLflow's own default)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return cfg.tracking.uri if cfg is not None and cfg.tracking.uri else None


class MlflowTracker:
    """Writes a study to MLflow (a :class:`inc_flow.search.ports.Tracker`).

    Args:
        cfg: the config (experiment name, tracking URI, the config logged as an artifact).
        uri: tracking URI; default ``MLFLOW_TRACKING_URI``, then ``tracking.uri``.
        role: ``tune`` (one process does it all), ``worker`` (trials only: the parent run is
            neither summarised nor ended) or ``finalize`` (no trials; summarises and ends).
        parent_id: the study's parent run, made beforehand (``worker`` and ``finalize``).
        settings: the study's settings, for the parent run's name (else taken from the study).
    """

    def __init__(
        self,
        cfg: Config,
        uri: str | None = None,
        *,
        role: str = Role.TUNE,
        parent_id: str | None = None,
        settings: TuneSettings | None = None,
    ) -> None:
        self.cfg = cfg
        self.uri = uri or tracking_uri(cfg)
        if self.uri:
            mlflow.set_tracking_uri(self.uri)
        self.outage = Outage(reach(self.uri))  # TrackingError in seconds when unreachable
        self.client = MlflowClient()
        self.role = role
        self.parent_id: str | None = parent_id
        self.experiment_id: str | None = None
        self._owns_parent = False
        self._children: dict[int, str] = {}
        self._study = ""
        self.log_seconds = 0.0
        self.settings = settings
        self._datasets: list[DatasetInput] = []
        self._context: dict[str, str] = {}
        self.model_uri: str | None = None  # the logged model (publish)
        self.version: Any = None  # the registered version (publish)
        self.not_registered = ""  # why no version was registered, when none was

    # --- study -----------------------------------------------------------------------------
    @guarded("the study's parent run")
    def study_started(self, info: StudyInfo) -> None:
        start = time.perf_counter()
        self.settings = self.settings or info.settings
        self._study = info.study_name
        project_run = os.environ.get("MLFLOW_RUN_ID")
        if self.role != Role.TUNE:  # the parent made once for the study (create_parent)
            assert self.parent_id, "a worker or finalize tracker needs the study's parent run"
            self.experiment_id = self.client.get_run(self.parent_id).info.experiment_id
            self._owns_parent = self.role == Role.FINALIZE
        elif project_run:  # `mlflow run`: the project run, or the study's parent it points to
            self.parent_id, self.experiment_id, self._owns_parent = parent.for_project_run(
                self.client, project_run, self.cfg.experiment_name, self._study, self._run_name()
            )
        else:
            self.parent_id = self.create_parent(info.study_name)
            self._owns_parent = True
        run_id = self.parent_id
        self.client.set_tag(run_id, k.TAG_STUDY, info.study_name)
        self.client.set_tag(run_id, k.TAG_ROLE, k.ROLE_STUDY)
        have = self.client.get_run(run_id).data
        self._context = {key: have.tags[key] for key in parent.CONTEXT_TAGS if key in have.tags}
        params = study_params(self.cfg.model.name, info)
        new = [Param(key, v) for key, v in params.items() if key not in have.params]
        now = _now()
        metrics = [Metric(key, v, now, 0) for key, v in baseline_metrics(info).items()]
        try:
            self.client.log_batch(run_id, metrics=metrics, params=new)
        except MlflowException:
            if not new or self.role == Role.TUNE:
                raise
            # another worker logged the study params since our read: log what is missing
            have = self.client.get_run(run_id).data
            rest = [p for p in new if p.key not in have.params]
            self.client.log_batch(run_id, metrics=metrics, params=rest)
        self.client.log_text(run_id, self.cfg.to_yaml(), k.ARTIFACT_CONFIG)
        self._datasets = study_datasets(self.cfg.model.name, dict(info.settings.fingerprint))
        log_datasets(self.client, run_id, self._datasets)
        self._kill_orphans(info)
        self._log_resumed(info)
        self.log_seconds += time.perf_counter() - start

    def _log_resumed(self, info: StudyInfo) -> None:
        """Trials finished by an earlier run of the study get a child run here if they have
        none yet (e.g. the study was tuned with tracking off), so the parent shows them all."""
        if not info.resumed:
            return
        logged = fetch.logged_trials(self.client, self.experiment_id, info.study_name)
        for record in info.resumed:
            if str(record.number) not in logged:
                self.trial_finished(record)

    def create_parent(self, study: str) -> str:
        """The study's parent run: the latest one tagged for ``study``, else a new one. Called
        by the one process that created the Optuna study, so workers never race to make two."""
        self.experiment_id = parent.experiment_id(self.client, self.cfg.experiment_name)
        return parent.find_or_create(self.client, self.experiment_id, study, self._run_name())

    def _run_name(self) -> str:
        settings = self.settings
        if settings is None:  # no settings given: the study name is the best there is
            return self._study or self.cfg.model.name
        return parent.run_name(self.cfg.model.name, settings)

    def _kill_orphans(self, info: StudyInfo) -> None:
        """Child runs of trials a dead process left RUNNING become KILLED."""
        running = fetch.running_trials(self.client, self.experiment_id, info.study_name)
        stale = {str(n) for n in info.stale_trials}
        finished = {str(r.number) for r in info.resumed}
        for run_id, number in running:
            if number in stale or number in finished:
                self.client.set_tag(run_id, k.TAG_STATE, k.STATE_KILLED)
                self.client.set_terminated(run_id, status=k.STATUS_KILLED)
                logger.info("marked orphaned MLflow run of trial %s KILLED", number)

    # --- trials ----------------------------------------------------------------------------
    @guarded(lambda number, plan: f"trial {number}")
    def trial_started(self, number: int, plan: Plan) -> None:
        start = time.perf_counter()
        run = self.client.create_run(
            self.experiment_id,
            run_name=parent.trial_name(number, plan),
            tags={
                **self._context,
                k.TAG_PARENT: self.parent_id,
                k.TAG_STUDY: self._study,
                k.TAG_ROLE: k.ROLE_TRIAL,
                k.TAG_TRIAL: str(number),
                k.TAG_STATE: k.STATE_RUNNING,
            },
        )
        self._children[number] = run.info.run_id
        self.log_seconds += time.perf_counter() - start

    @guarded(lambda record: f"trial {record.number}")
    def trial_finished(self, record: TrialRecord) -> None:
        start = time.perf_counter()
        run_id = self._children.pop(record.number, None)
        if run_id is None:  # a tuner without trial_started
            self.trial_started(record.number, record.plan)
            run_id = self._children.pop(record.number)
        now = _now()
        tags = {k.TAG_STATE: record.state, k.TAG_PHASE: record.phase}
        if record.failure_reason:
            tags[k.TAG_REASON] = record.failure_reason[: k.MAX_VALUE]
        if record.duplicate_of is not None:
            tags[k.TAG_DUPLICATE_OF] = str(record.duplicate_of)
        self.client.log_batch(
            run_id,
            metrics=[Metric(key, v, now, 0) for key, v in record_metrics(record).items()],
            params=[Param(key, v) for key, v in plan_params(record.plan).items()],
            tags=[RunTag(key, v) for key, v in tags.items()],
        )
        log_datasets(self.client, run_id, self._datasets)
        if record.op_stats:
            self.client.log_table(run_id, columns(record.op_stats), k.ARTIFACT_OP_STATISTICS)
        self.client.log_text(run_id, yaml.safe_dump(record.plan.to_dict()), k.ARTIFACT_PLAN)
        failed = record.state == TrialState.ERROR
        self.client.set_terminated(run_id, status=k.STATUS_FAILED if failed else k.STATUS_FINISHED)
        self.log_seconds += time.perf_counter() - start

    # --- end -------------------------------------------------------------------------------
    @guarded("the study's result (tags, metrics, plots)")
    def study_finished(self, result: TuneResult) -> None:
        if self.role == Role.WORKER:  # the study's summary is finalize's
            return
        start = time.perf_counter()
        parent = self.parent_id
        for key, value in result_tags(result).items():
            self.client.set_tag(parent, key, value)
        now = _now()
        metrics = [Metric(key, v, now, 0) for key, v in result_metrics(result).items()]
        self.client.log_batch(parent, metrics=metrics)
        self._log_plots(result)
        self.log_seconds += time.perf_counter() - start
        self.client.log_metric(parent, k.METRIC_MLFLOW_LOGGING, self.log_seconds)

    def _log_plots(self, result: TuneResult) -> None:
        try:
            from inc_flow.record import plots
        except ImportError as e:  # matplotlib missing: the record is complete without them
            logger.warning("plots skipped: %s", e)
            return
        with tempfile.TemporaryDirectory() as tmp:
            for path in plots.study_plots(result, Path(tmp)):
                self.client.log_artifact(self.parent_id, str(path), k.ARTIFACT_PLOTS)

    @guarded("the time split")
    def log_times(self, seconds: dict[str, float]) -> None:
        """Where the time went (calibration, convert, evaluation, latency, logging)."""
        values = {**seconds, k.METRIC_TIME_LOGGING: self.log_seconds}
        now = _now()
        self.client.log_batch(
            self.parent_id, metrics=[Metric(key, float(v), now, 0) for key, v in values.items()]
        )

    @guarded("the best model (logged model and registered version)")
    def publish(
        self, q_model: Any, result: TuneResult, fp32_model: Any, eval_source: str, **terms: Any
    ) -> Any:
        """Log the best model on the parent run and register it (champion or challenger).

        Args:
            q_model: the chosen :class:`inc_flow.model.output.QuantizedModel`.
            result: the study's result (scores for the version tags).
            fp32_model: the fp32 model, for a factory when the config names none.
            eval_source: what the accuracy was measured on (compared before moving
                ``champion``: only results on the same data and criterion compete).
            terms: the speed verdict's terms for :func:`inc_flow.model.registry.register`
                (``champion_allowed``, ``veto_reason``, ``beats_champion``, ...).

        Returns:
            The registered ModelVersion, or None when the model could not be registered
            (``self.not_registered`` says why).
        """
        return best.publish(self, q_model, result, fp32_model, eval_source, **terms)

    def close(self, failed: bool = False) -> None:
        """End the parent run if this tracker opened it (a project run ends by itself); after
        an outage, say in the log what was not recorded."""
        self._end(failed)
        if self.outage.down:
            logger.warning(self.outage.summary())

    @guarded("the end of the parent run")
    def _end(self, failed: bool) -> None:
        for run_id in self._children.values():
            self.client.set_terminated(run_id, status=k.STATUS_FAILED)
        self._children.clear()
        if self._owns_parent and self.parent_id:
            status = k.STATUS_FAILED if failed else k.STATUS_FINISHED
            self.client.set_terminated(self.parent_id, status=status)


def _now() -> int:
    return int(time.time() * 1000)


__all__ = ["MlflowTracker", "tracking_uri"]
