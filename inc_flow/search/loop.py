"""The tuning loop: one Optuna trial = one Plan, scored against the fp32 baseline.

``tune`` asks Optuna for a plan (the space's seeds are enqueued one at a time, then the
sampler proposes), has the engine build it, evaluates it with the accuracy target as
early-rejection threshold, measures its latency and tells Optuna: the objective as value, the
accuracy shortfall as constraint (> 0 misses). A plan already evaluated in the study is never
evaluated again: its stored outcome is told again. Imports optuna; never mlflow or torch.ao.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from inc_flow.errors import ConfigError, DataError, IncFlowError, MetricError
from inc_flow.search.accuracy import shortfall
from inc_flow.search.plan import Plan
from inc_flow.search.records import (
    MEMORY_STORAGE,
    Benchmark,
    Engine,
    Evaluator,
    LoggingTracker,
    StudyInfo,
    Tracker,
    TrialRecord,
    TuneResult,
    TuneSettings,
    closest_miss,
)
from inc_flow.search.records import (
    EvalOutcome as EvalOutcome,  # re-exported: the evaluator's result
)
from inc_flow.search.space import SearchSpace

ALL_FP32 = "every op is fp32: that is the fp32 model, not an int8 one (not evaluated)"

logger = logging.getLogger("inc_flow")

CONSTRAINT = "accuracy"
# Optuna attributes: trial user attrs, then study user attrs.
RECORD_ATTR, PHASE_ATTR, WORKER_ATTR = "inc_flow.record", "inc_flow.phase", "inc_flow.worker"
BASELINE_ATTR, SENSITIVITY_ATTR = "inc_flow.baseline", "inc_flow.sensitivity"
SPACE_ATTR = "inc_flow.space"
PARENT_ATTR = "inc_flow.parent_run"  # study user attr: the MLflow parent run of the study
# RDB heartbeat (server databases: PostgreSQL, MySQL): seconds between beats of a running
# trial, and seconds without a beat after which another worker fails and retries it.
HEARTBEAT_ENV, GRACE_ENV = "INC_FLOW_HEARTBEAT_S", "INC_FLOW_GRACE_S"
_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def _plain(value: Any) -> Any:
    """JSON-friendly scalars for Optuna user attrs (numpy ints from pandas rows)."""
    return value.item() if hasattr(value, "item") else value


def _seed_torch(seed: int) -> None:
    # Only when torch is already loaded: a real engine has imported it by now, and the
    # fake engines of the unit tests must not pay for importing it.
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)


def _why(error: Exception) -> str:
    """``Type: first line of the message`` of an exception from user code or a library."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_stale(trial: optuna.trial.FrozenTrial) -> bool:
    """A RUNNING trial is stale when its worker is gone. Without heartbeats this can only be
    known for workers of this host; trials of other hosts are left alone."""
    host, _, pid = str(trial.user_attrs.get(WORKER_ATTR, "")).rpartition(":")
    if not pid.isdigit():
        return True
    return host == socket.gethostname() and (int(pid) == os.getpid() or not _pid_alive(int(pid)))


def _runs_here(trial: optuna.trial.FrozenTrial) -> bool:
    """True when another live process of this host runs ``trial``."""
    host, _, pid = str(trial.user_attrs.get(WORKER_ATTR, "")).rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    return int(pid) != os.getpid() and _pid_alive(int(pid))


def heartbeat_enabled(url: str) -> bool:
    """Heartbeats for server databases; SQLite files (one machine) keep the host:pid check."""
    return url != MEMORY_STORAGE and not url.startswith("sqlite")


def open_storage(url: str) -> Any:
    """The Optuna storage for ``url``: for a server database an ``RDBStorage`` with a heartbeat
    and ``RetryHeartbeatStaleTrialCallback(max_retry=1)``, so that a trial of a dead worker is
    failed and enqueued again (same params) for another worker; else the URL itself."""
    if not heartbeat_enabled(url):
        return url
    interval = int(os.environ.get(HEARTBEAT_ENV, "10"))
    grace = int(os.environ.get(GRACE_ENV, str(3 * interval)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)
        for attempt in range(3):
            try:
                return optuna.storages.RDBStorage(
                    url,
                    heartbeat_interval=interval,
                    grace_period=grace,
                    heartbeat_stale_trial_callback=retry,
                )
            except Exception as e:  # noqa: BLE001 -- see below
                # workers starting together on an empty database race to create Optuna's
                # tables: the loser's CREATE fails; the tables exist a moment later
                if attempt == 2 or "already exists" not in str(e):
                    raise
                logger.debug("Optuna tables created concurrently, retrying: %s", _why(e))
                time.sleep(0.5 + attempt)
    raise AssertionError("unreachable")


@contextmanager
def _heartbeat(storage: Any, trial_id: int) -> Iterator[None]:
    """Record the trial's heartbeat every interval while the block runs (what
    ``Study.optimize`` does; inc_flow asks and tells itself)."""
    interval = storage.get_heartbeat_interval() if hasattr(storage, "record_heartbeat") else None
    if not interval:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while True:
            try:
                storage.record_heartbeat(trial_id)
            except Exception as e:  # noqa: BLE001 -- a lost beat: the next one may pass
                logger.debug("heartbeat of trial id %s failed: %s", trial_id, e)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"inc_flow-heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def tune(
    engine: Engine,
    evaluator: Evaluator | None,
    benchmark: Benchmark,
    settings: TuneSettings,
    space: SearchSpace | None = None,
    tracker: Tracker | None = None,
) -> TuneResult:
    """Search for the best plan meeting the accuracy target (see the module docstring).

    Args:
        engine: builds models from plans; ``engine.fp32_model`` is the baseline.
        evaluator: accuracy; may be None only with ``settings.performance_only``.
        benchmark: latency in ms.
        settings: the study settings.
        space: the search space; default: every op of ``engine.ops()`` int8 or fp32.
        tracker: receives the study, each trial and the result; default LoggingTracker.

    Returns:
        A TuneResult; ``best`` is None when no plan met the target.
    """
    return _Tuning(engine, evaluator, benchmark, settings, space, tracker).run()


class _Tuning:
    """State of one ``tune`` call."""

    def __init__(self, engine, evaluator, benchmark, settings, space, tracker) -> None:  # see tune
        self.start = time.perf_counter()
        self.engine, self.evaluator, self.benchmark = engine, evaluator, benchmark
        self.settings = s = settings
        self.checked = not s.performance_only
        if self.checked and evaluator is None:
            raise ValueError("`evaluator` is required unless `performance_only` is set")
        self.space = space or SearchSpace(
            tuple(engine.ops()), approach=s.approach, backends=s.backends
        )
        if (self.space.approach, self.space.backends) != (s.approach, s.backends):
            raise ValueError(
                f"`space` (approach={self.space.approach!r}, backends={self.space.backends}) "
                f"must match `settings` (approach={s.approach!r}, backends={s.backends})"
            )
        self.tracker = tracker if tracker is not None else LoggingTracker()
        self.multi = s.multi_objective
        self.first_pass_wins = s.timeout == 0 and not self.multi  # INC's exit policy
        self.storage_name = s.storage if s.storage == MEMORY_STORAGE else s.storage_url()
        self.warnings: list[str] = []
        self.records: dict[int, TrialRecord] = {}
        self.evaluated: dict[Plan, TrialRecord] = {}
        self.best_model: Any = None
        self.best_number: int | None = None
        self.stop_reason = ""
        self.waiting = False
        self.pending: set[Plan] = set()  # plans of trials running or queued (other workers)
        self.heartbeat = heartbeat_enabled(self.storage_name)

    # --- setup ---------------------------------------------------------------------------
    def _open_study(self) -> optuna.Study:
        s = self.settings
        sampler, note = s.sampler()
        if note:
            self._warn(note)
        storage: Any = s.storage_url()
        if s.storage == MEMORY_STORAGE:
            storage = optuna.storages.InMemoryStorage()
        elif s.storage is None:
            Path(s.workspace).mkdir(parents=True, exist_ok=True)
        try:
            if s.storage != MEMORY_STORAGE:
                storage = open_storage(storage)
            study = optuna.create_study(
                storage=storage,
                sampler=sampler,
                study_name=s.study_name,
                directions=s.directions(),
                load_if_exists=True,
            )
        except Exception as e:  # noqa: BLE001 -- driver missing, server down, bad file
            key = "tuning.storage" if s.storage else "tuning.workspace.path"
            raise ConfigError(
                key, f"cannot open the Optuna storage {self.storage_name!r}: {_why(e)}"
            ) from e
        wanted = [optuna.study.StudyDirection[d.upper()] for d in s.directions()]
        # what makes stored values, constraints and states comparable with new ones
        identity = {
            "ops": [list(op) for op in self.space.ops],
            "approach": s.approach,
            "objective": "multi_objective" if self.multi else s.objective,
            "criterion": [s.relative, s.absolute, s.higher_is_better, self.checked],
        }
        stored = study.user_attrs.get(SPACE_ATTR)
        if study.directions != wanted or stored not in (None, identity):
            raise ValueError(
                f"study {s.study_name!r} in {self.storage_name} was created for other ops, "
                "approach, objective or accuracy criterion; set another `study_name`"
            )
        if stored is None:
            study.set_user_attr(SPACE_ATTR, identity)
        return study

    def _fail_stale(self) -> tuple[int, ...]:
        running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if self.heartbeat:
            # another worker's trial not yet named is its heartbeat's business, not ours
            running = [t for t in running if WORKER_ATTR in t.user_attrs]
        failed = []
        for number in (t.number for t in running if _is_stale(t)):
            try:
                self._tell(number, None, TrialState.FAIL)
            except (ValueError, optuna.exceptions.UpdateFinishedTrialError):  # failed elsewhere
                continue
            failed.append(number)
        stale = tuple(failed)
        retry = self.heartbeat and self.settings.new_trials
        callback = self.study._storage.get_heartbeat_stale_trial_callback() if retry else None
        if callback is not None:  # the same retry as a heartbeat-stale trial gets
            for number in stale:
                callback(self.study, self.study.get_trials(deepcopy=True)[number])
        if stale:
            self._warn(f"trials {list(stale)} were left running by a stopped process: failed")
        return stale

    def _fail_heartbeat_stale(self) -> None:
        """Fail trials whose worker stopped beating; the storage's callback retries them."""
        if self.heartbeat and self.settings.new_trials:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(self.study)

    def _dead(self) -> tuple[int, ...]:
        """Failed trials with no record: their worker died (their MLflow runs are orphans)."""
        return tuple(
            t.number
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
            if RECORD_ATTR not in t.user_attrs
        )

    def _baseline(self) -> tuple[float | None, float]:
        stored = self.study.user_attrs.get(BASELINE_ATTR)
        if stored and (stored["accuracy"] is not None or not self.checked):
            return stored["accuracy"], stored["latency_ms"]
        accuracy = None
        fp32 = self.engine.fp32_model
        if self.checked:
            try:
                accuracy = float(self.evaluator.evaluate(fp32, None).value)
            except IncFlowError:
                raise
            except Exception as e:  # noqa: BLE001 -- user code: say which step failed
                raise MetricError(f"evaluating the fp32 model failed: {_why(e)}") from e
            if not math.isfinite(accuracy):
                raise MetricError(f"the fp32 model's metric is {accuracy}; cannot tune against it")
        try:
            latency = float(self.benchmark.latency(fp32))
        except IncFlowError:
            raise
        except Exception as e:  # noqa: BLE001 -- e.g. example inputs the model cannot take
            raise DataError(f"timing the fp32 model on example inputs failed: {_why(e)}") from e
        self.study.set_user_attr(BASELINE_ATTR, {"accuracy": accuracy, "latency_ms": latency})
        return accuracy, latency

    def _sensitivity(self) -> Mapping[str, float]:
        scores = self.study.user_attrs.get(SENSITIVITY_ATTR)
        if scores is None:
            try:
                raw = self.engine.sensitivity(self.space.default_plan())
            except Exception as e:  # noqa: BLE001 -- the seeds can do without an order
                self._warn(f"sensitivity failed ({type(e).__name__}: {e}); using graph order")
                return {}
            scores = {k: float(v) for k, v in raw.items() if not math.isnan(float(v))}
            self.study.set_user_attr(SENSITIVITY_ATTR, scores)
        return scores

    def _sync(self) -> int:
        """Load records finished elsewhere (earlier runs, other workers); count finished trials."""
        trials = self.study.get_trials(deepcopy=False)
        for t in trials:
            if (
                t.state in _FINISHED
                and t.number not in self.records
                and RECORD_ATTR in t.user_attrs
            ):
                self._add(TrialRecord.from_dict(t.user_attrs[RECORD_ATTR]))
        self.waiting = any(t.state == TrialState.WAITING for t in trials)
        live = (TrialState.RUNNING, TrialState.WAITING)
        self.pending = {p for t in trials if t.state in live for p in [self._plan_of(t)] if p}
        return sum(t.state in _FINISHED for t in trials)

    def _plan_of(self, trial: optuna.trial.FrozenTrial) -> Plan | None:
        """The plan of a trial once all its params are known (enqueued ones: at once)."""
        params = trial.system_attrs.get("fixed_params") or trial.params
        if set(params) != set(self.space.choices()):
            return None
        try:
            return self.space.plan_from_params(params)
        except ValueError:
            return None

    def _wait_for_twin(self, plan: Plan, number: int) -> bool:
        """Wait while an earlier trial of ``plan`` runs in another live worker of this host
        (two workers can enqueue one seed at the same moment; other hosts' workers cannot be
        known alive, so they are not waited for); True if there was such a trial."""
        found = False
        while True:
            twins = [
                t
                for t in self.study.get_trials(deepcopy=False)
                if t.number < number and t.number not in self.records and self._plan_of(t) == plan
            ]
            found = found or bool(twins)
            running = [t for t in twins if t.state == TrialState.RUNNING and _runs_here(t)]
            if not running:
                return found
            time.sleep(0.2)

    def _add(self, record: TrialRecord) -> None:
        record = replace(record, plan=self.space.canonical(record.plan))
        self.records[record.number] = record
        if record.state != "duplicate":
            self.evaluated.setdefault(record.plan, record)

    # --- loop ----------------------------------------------------------------------------
    def run(self) -> TuneResult:
        s = self.settings
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        _seed_torch(s.random_seed)
        self.study = self._open_study()
        stale = self._fail_stale()
        self.baseline, self.baseline_latency = self._baseline()
        self.required = s.required(self.baseline) if self.checked else None
        self._sync()
        info = StudyInfo(
            settings=s,
            study_name=s.study_name,
            storage=self.storage_name,
            baseline_accuracy=self.baseline,
            baseline_latency_ms=self.baseline_latency,
            required_accuracy=self.required,
            ops=self.space.ops,
            resumed=tuple(self.records[n] for n in sorted(self.records)),
            stale_trials=tuple(sorted(set(stale) | set(self._dead()))),
        )
        self.tracker.study_started(info)
        basic = s.strategy in ("basic", "multi_objective") and self.checked
        seeds = self.space.seeds(self._sensitivity, basic=basic)
        default = self.space.default_plan()
        while not self.stop_reason:
            self._fail_heartbeat_stale()
            n_done = self._sync()
            if self.first_pass_wins and any(r.passed for r in self.records.values()):
                self.stop_reason = "target met"
            elif not self.checked and default in self.evaluated:
                self.stop_reason = "performance_only"
            elif n_done >= s.max_trials:
                self.stop_reason = "max_trials"
            elif s.timeout > 0 and time.perf_counter() - self.start >= s.timeout:
                self.stop_reason = "timeout"
            elif len(self.evaluated) >= self.space.n_plans():
                self.stop_reason = "space exhausted"
            elif not s.new_trials:
                self.stop_reason = "finalize"
            else:
                if not self.waiting:  # enqueue seeds one at a time: later ones stay lazy
                    taken = self.evaluated.keys() | self.pending  # done, or running elsewhere
                    seed = next(((ph, p) for ph, p in seeds if p not in taken), None)
                    if seed is not None:
                        params = self.space.params_for(seed[1])
                        self.study.enqueue_trial(params, user_attrs={PHASE_ATTR: seed[0]})
                trial = self.study.ask()
                try:
                    with _heartbeat(self.study._storage, trial._trial_id):
                        self._trial(trial)
                except optuna.exceptions.UpdateFinishedTrialError as e:
                    # SQLite lets two workers pop the same waiting trial now and then; the
                    # other worker finished it, and _sync picks its record up.
                    logger.info("trial %d was finished by another worker: %s", trial.number, e)
        return self._finish(stale)

    def _trial(self, trial: optuna.Trial) -> None:
        t0 = time.perf_counter()
        trial.set_user_attr(WORKER_ATTR, f"{socket.gethostname()}:{os.getpid()}")
        plan = self.space.suggest(trial)
        base = TrialRecord(
            trial.number, plan, "error", trial.user_attrs.get(PHASE_ATTR, "sampler")
        )
        started = getattr(self.tracker, "trial_started", None)
        if started is not None:
            started(trial.number, plan)
        prev = self.evaluated.get(plan)
        if prev is None and self._wait_for_twin(plan, trial.number):
            self._sync()  # the twin's record, if it finished with one
            prev = self.evaluated.get(plan)
        if prev is not None:
            record = replace(
                prev,
                number=trial.number,
                phase=base.phase,
                state="duplicate",
                duplicate_of=prev.number,
                eval_samples=0,
            )
            return self._report(trial, record, prev, None, t0)
        if plan.ops and not plan.int8_ops:
            # The fp32 model itself: the baseline already measured it, and it is no answer.
            record = replace(base, failure_reason=ALL_FP32)
            return self._report(trial, record, record, None, t0)
        try:
            model = self.engine.build(plan)
            size = int(self.engine.model_size(model))
            n8, n32 = self.engine.op_counts(model, plan)
            outcome = None
            if self.checked:
                threshold = self.required if self.settings.higher_is_better else None
                outcome = self.evaluator.evaluate(model, threshold)
                if math.isnan(float(outcome.value)):
                    raise MetricError("the metric returned NaN")
            pruned = outcome is not None and outcome.stopped_early
            perf = {} if pruned else self._measure(model)
            latency = perf.get("latency_ms")
            stats = getattr(self.engine, "statistics", None)
            op_stats = stats(model).to_dict("records") if stats is not None else []
        except Exception as e:  # noqa: BLE001 -- a broken plan must not end the study
            record = replace(base, failure_reason=f"{type(e).__name__}: {e}")
            return self._report(trial, record, record, None, t0)
        record = replace(
            base,
            state="passed",
            latency_ms=latency,
            model_size=size,
            int8_ops=int(n8),
            fp32_ops=int(n32),
            perf=perf,
            op_stats=[{k: _plain(v) for k, v in row.items()} for row in op_stats],
        )
        if outcome is not None:
            hib = self.settings.higher_is_better
            record = record.scored(outcome, self.baseline, self.required, hib)
        self._report(trial, record, record, model, t0)

    def _report(
        self, trial: optuna.Trial, record: TrialRecord, source: TrialRecord, model: Any, t0: float
    ) -> None:
        """Tell Optuna ``source``'s outcome for ``record``, then store and track ``record``."""
        state, values = TrialState.FAIL, None
        record = replace(
            record,
            calibration_passes=int(self.engine.calibration_passes),
            wall_time_s=time.perf_counter() - t0,
        )
        try:
            if source.state != "error" and source.accuracy is not None:
                miss = shortfall(self.required, source.accuracy, self.settings.higher_is_better)
                # a pruned trial is infeasible even if the evaluator's partial value is not
                trial.set_constraint(
                    CONSTRAINT, max(miss, 1e-12) if source.state == "pruned" else miss
                )
            if source.state == "pruned":
                state = TrialState.PRUNED
            elif source.state != "error":
                state, values = TrialState.COMPLETE, self._values(source)
            trial.set_user_attr(RECORD_ATTR, record.to_dict())
            self._tell(trial, values, state)
        except optuna.exceptions.UpdateFinishedTrialError:
            # another worker saw no heartbeat for the grace period, failed it and queued a
            # retry, which will evaluate the plan again
            self._warn(f"trial {trial.number} was failed by another worker (no heartbeat)")
            return
        self._add(record)
        if record.passed and (
            self.best_number is None
            or self._key(record) < self._key(self.records[self.best_number])
        ):
            self.best_model, self.best_number = model, record.number
        self.tracker.trial_finished(record)

    def _measure(self, model: Any) -> dict[str, float]:
        """Latency (the objective) and, when the benchmark offers them, the other figures."""
        measure = getattr(self.benchmark, "measure", None)
        if measure is None:
            return {"latency_ms": float(self.benchmark.latency(model))}
        return {k: float(v) for k, v in measure(model).items()}

    def _values(self, r: TrialRecord) -> list[float]:
        if self.multi:
            return [r.accuracy, r.latency_ms]
        if self.settings.objective == "accuracy" and self.checked:
            return [r.accuracy]
        return [float(r.model_size)] if self.settings.objective == "modelsize" else [r.latency_ms]

    def _key(self, r: TrialRecord) -> tuple[float, int]:
        """Sort key of passing records, best first."""
        s = self.settings
        if s.objective == "accuracy" and self.checked and not self.multi:
            return (-r.accuracy if s.higher_is_better else r.accuracy, r.number)
        if s.objective == "modelsize" and not self.multi:
            return (r.model_size, r.number)
        return (r.latency_ms, r.number)

    def _tell(
        self, trial: optuna.Trial | int, values: list[float] | None, state: TrialState
    ) -> None:
        try:
            self.study.tell(trial, values, state=state)
        except RuntimeError as e:
            # BruteForceSampler calls Study.stop() once the space is covered, which raises
            # outside Study.optimize; the trial is stored by then.
            if "Study.stop" not in str(e):
                raise
            self.stop_reason = "space exhausted"

    # --- result --------------------------------------------------------------------------
    def _finish(self, stale: tuple[int, ...]) -> TuneResult:
        n_trials = self._sync()
        records = tuple(self.records[n] for n in sorted(self.records))
        passed = [r for r in records if r.passed]
        best = None
        if passed:
            best = passed[0] if self.first_pass_wins else min(passed, key=self._key)
            if best.number != self.best_number:  # found by an earlier run or another worker
                self.best_model = self.engine.build(best.plan)
        pareto: tuple[TrialRecord, ...] = ()
        if self.multi:
            front = {t.number for t in self.study.best_trials}
            pareto = tuple(r for r in records if r.number in front and r.passed)
        closest, miss = None, None
        if best is None and self.checked:
            closest, miss = closest_miss(records, self.required, self.settings.higher_is_better)
            if closest is not None:
                self._warn(
                    f"no plan met the accuracy target {self.required:.4f}; closest: trial "
                    f"{closest.number} ({closest.plan.summary()}): {closest.failure_reason}"
                )
        slower = bool(best and best.latency_ms and best.latency_ms > self.baseline_latency)
        if slower:
            self._warn(
                f"the best int8 plan (trial {best.number}, {best.latency_ms:.3f} ms) is slower "
                f"than fp32 ({self.baseline_latency:.3f} ms); the fp32 model may be preferable"
            )
        if not self.checked:
            self._warn("performance_only: accuracy was not checked; the default plan was used")
        result = TuneResult(
            best=best,
            best_model=self.best_model if best is not None else None,
            baseline_accuracy=self.baseline,
            baseline_latency_ms=self.baseline_latency,
            required_accuracy=self.required,
            records=records,
            pareto=pareto,
            slower_than_fp32=slower,
            closest=closest,
            closest_miss=miss,
            n_trials=n_trials,
            calibration_passes=int(self.engine.calibration_passes),
            wall_time_s=time.perf_counter() - self.start,
            study_name=self.settings.study_name,
            storage=self.storage_name,
            stop_reason=self.stop_reason,
            accuracy_checked=self.checked,
            stale_trials=stale,
            warnings=tuple(self.warnings),
        )
        self.tracker.study_finished(result)
        return result

    def _warn(self, text: str) -> None:
        self.warnings.append(text)
        logger.warning(text)
