"""The tuning loop: one Optuna trial = one Plan, scored against the fp32 baseline.

``tune`` asks Optuna for a plan (the strategy's seeds, ``search.ranking``, are enqueued one at
a time, then the sampler proposes), has the engine build it, evaluates it with the accuracy
target as early-rejection threshold, measures its latency (unless its verdict cannot matter:
with ``timeout: 0`` a plan that missed the target is not timed) and tells Optuna: the
objective as value, the accuracy shortfall as constraint (> 0 misses). A plan already
evaluated in the study is never evaluated again: its stored outcome is told again. At the
end the best passing plans are timed again side by side with fp32 (``search.final``), which
picks the plan and gives the speed verdict. Imports optuna; never mlflow or torch.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import replace
from typing import Any

import optuna
from optuna.trial import TrialState as OptunaState

from inc_flow.errors import MetricError, PlanError, StudyError
from inc_flow.search import storage as st
from inc_flow.search.accuracy import degenerate, shortfall
from inc_flow.search.baseline import measure_baseline
from inc_flow.search.final import Rivals, final_round
from inc_flow.search.history import History
from inc_flow.search.plan import Plan
from inc_flow.search.ports import (
    Benchmark,
    Engine,
    Evaluator,
    Tracker,
    measure,
    op_statistics,
    trial_started,
)
from inc_flow.search.progress import LoggingTracker
from inc_flow.search.ranking import seeds as strategy_seeds
from inc_flow.search.records import (
    StudyInfo,
    TrialRecord,
    TuneResult,
    closest_miss,
    objective_values,
    rank_key,
)
from inc_flow.search.settings import MEMORY_STORAGE, TuneSettings, name_metrics
from inc_flow.search.space import SearchSpace
from inc_flow.vocab import Strategy, TrialState

ALL_FP32 = "every op is fp32: that is the fp32 model, not an int8 one (not evaluated)"

logger = logging.getLogger("inc_flow")

CONSTRAINT = "accuracy"


def _plain(value: Any) -> Any:
    """JSON-friendly scalars for Optuna user attrs (numpy ints from pandas rows)."""
    return value.item() if hasattr(value, "item") else value


def _seed_torch(seed: int) -> None:
    # Only when torch is already loaded (no import here: the search imports no torch): a
    # real engine has imported it by now, and the fake engines of the unit tests have not.
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)


def tune(
    engine: Engine,
    evaluator: Evaluator | None,
    benchmark: Benchmark,
    settings: TuneSettings,
    space: SearchSpace | None = None,
    tracker: Tracker | None = None,
    rivals: Rivals | None = None,
) -> TuneResult:
    """Search for the best plan meeting the accuracy target (see the module docstring).

    Args:
        engine: builds models from plans; ``engine.fp32_model`` is the baseline.
        evaluator: accuracy; may be None only with ``settings.performance_only``.
        benchmark: latency in ms.
        settings: the study settings.
        space: the search space; default: every op of ``engine.ops()`` int8 or fp32.
        tracker: receives the study, each trial and the result; default LoggingTracker.
        rivals: more models for the side-by-side round after the search (the registry's
            ``@champion``; see ``search.final``).

    Returns:
        A TuneResult; ``best`` is None when no plan met the target.
    """
    return _Tuning(engine, evaluator, benchmark, settings, space, tracker, rivals).run()


class _Tuning:
    """State of one ``tune`` call."""

    def __init__(self, engine, evaluator, benchmark, settings, space, tracker, rivals) -> None:
        self.start = time.perf_counter()
        self.engine, self.evaluator, self.benchmark = engine, evaluator, benchmark
        self.settings = s = settings
        self.checked = s.checked
        if self.checked and evaluator is None:
            raise StudyError("`evaluator` is required unless `performance_only` is set")
        self.space = space or SearchSpace(
            tuple(engine.ops()), approach=s.approach, backends=s.backends
        )
        if (self.space.approach, self.space.backends) != (s.approach, s.backends):
            raise PlanError(
                f"`space` (approach={self.space.approach!r}, backends={self.space.backends}) "
                f"must match `settings` (approach={s.approach!r}, backends={s.backends})"
            )
        if s.strategy == Strategy.BASIC and self.checked:  # per-op observers, fp32 output
            fp32_out = bool(getattr(engine, "supports_fp32_output", False))
            self.space = replace(self.space, op_observers=True, fp32_outputs=fp32_out)
        self.tracker = tracker if tracker is not None else LoggingTracker()
        self.rivals = rivals
        self.multi = s.multi_objective
        self.first_pass_wins = s.timeout == 0 and not self.multi  # INC's exit policy
        self.storage_name = s.storage if s.storage == MEMORY_STORAGE else s.storage_url()
        self.warnings: list[str] = []
        self.best_model: Any = None
        self.best_number: int | None = None
        self.stop_reason = ""
        self.heartbeat = st.heartbeat_enabled(self.storage_name)
        self.kept: tuple[Plan, Any] | None = None  # the last evaluated model, for the ranking

    def model_of(self, plan: Plan) -> Any:
        """The model of ``plan``: the last evaluated one if it is that, else a new build."""
        if self.kept is not None and self.kept[0] == plan:
            return self.kept[1]
        return self.engine.build(plan)

    # --- setup ---------------------------------------------------------------------------
    def _open_study(self) -> optuna.Study:
        s = self.settings
        sampler, note = s.sampler()
        if note:
            self._warn(note)
        identity = {
            "ops": [list(op) for op in self.space.ops],
            "approach": s.approach,
            "objective": s.scored_objective,
            "criterion": [s.relative, s.absolute, s.higher_is_better, self.checked],
        }
        study, self.storage = st.open_study(s, sampler, identity)
        name_metrics(study, s)
        return study

    # --- loop ----------------------------------------------------------------------------
    def run(self) -> TuneResult:
        s = self.settings
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        _seed_torch(s.random_seed)
        self.study = self._open_study()
        self.history = history = History(self.study, self.space)
        stale = st.fail_stale(self.study, self.storage, self.heartbeat, s.new_trials, self._tell)
        if stale:
            self._warn(f"trials {list(stale)} were left running by a stopped process: failed")
        self.baseline, self.baseline_latency = measure_baseline(self)
        self.required = s.required(self.baseline) if self.checked else None
        history.sync()
        info = StudyInfo(
            settings=s,
            study_name=s.study_name,
            storage=self.storage_name,
            baseline_accuracy=self.baseline,
            baseline_latency_ms=self.baseline_latency,
            required_accuracy=self.required,
            ops=self.space.ops,
            resumed=history.ordered(),
            stale_trials=tuple(sorted(set(stale) | set(history.dead()))),
        )
        self.tracker.study_started(info)
        seeds = strategy_seeds(self)
        default = self.space.default_plan()
        while not self.stop_reason:  # a timeout ends a study only after a trial (INC's rule)
            if self.heartbeat and s.new_trials:
                st.fail_heartbeat_stale(self.study)
            n_done = history.sync()
            if self.first_pass_wins and any(r.passed for r in history.records.values()):
                self.stop_reason = "target met"
            elif not self.checked and default in history.evaluated:
                self.stop_reason = "performance_only"
            elif n_done >= s.max_trials:
                self.stop_reason = "max_trials"
            elif s.timeout > 0 and n_done and time.perf_counter() - self.start >= s.timeout:
                self.stop_reason = "timeout"
            elif len(history.evaluated) >= self.space.n_plans():
                self.stop_reason = "space exhausted"
            elif not s.new_trials:
                self.stop_reason = "finalize"
            else:
                if not history.waiting:  # enqueue seeds one at a time: later ones stay lazy
                    taken = history.evaluated.keys() | history.pending  # done, or running
                    seed = next((x for x in seeds if x[1] not in taken), None)
                    if seed is not None:
                        params = self.space.params_for(seed[1])
                        st.enqueue(self.study, params, seed[0], seed[2])
                trial = self.study.ask()
                try:
                    with st.heartbeat(self.storage, self.study, trial.number):
                        self._trial(trial)
                except optuna.exceptions.UpdateFinishedTrialError as e:
                    # SQLite lets two workers pop the same waiting trial now and then; the
                    # other worker finished it, and history.sync picks its record up.
                    logger.info("trial %d was finished by another worker: %s", trial.number, e)
        return self._finish(stale)

    def _trial(self, trial: optuna.Trial) -> None:
        t0 = time.perf_counter()
        st.set_worker(trial)
        plan = self.space.suggest(trial)
        base = TrialRecord(
            trial.number, plan, TrialState.ERROR, st.phase_of(trial),
            rank_samples=st.rank_samples_of(trial),
        )  # fmt: skip
        trial_started(self.tracker, trial.number, plan)
        prev = self.history.evaluated.get(plan)
        if prev is None and self.history.wait_for_twin(plan, trial.number):
            self.history.sync()  # the twin's record, if it finished with one
            prev = self.history.evaluated.get(plan)
        if prev is not None:
            record = replace(
                prev,
                number=trial.number,
                phase=base.phase,
                state=TrialState.DUPLICATE,
                duplicate_of=prev.number,
                eval_samples=0,
            )
            return self._report(trial, record, prev, None, t0)
        if plan.is_baseline:
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
                if bad := degenerate(outcome.value):
                    raise MetricError(f"the metric returned {bad}")
            self.kept = (plan, model)  # its recorded outputs serve the ranking's probes
            perf = {} if self._verdict_settled(outcome) else measure(self.benchmark, model)
            latency = perf.get("latency_ms")
            op_stats = op_statistics(self.engine, model)
        except Exception as e:  # noqa: BLE001 -- a broken plan must not end the study
            record = replace(base, failure_reason=f"{type(e).__name__}: {e}")
            return self._report(trial, record, record, None, t0)
        record = replace(
            base,
            state=TrialState.PASSED,
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

    def _verdict_settled(self, outcome: Any) -> bool:
        """Whether latency cannot change this plan's fate: stopped early, or missed the
        target when the first passing plan wins (``timeout: 0``)."""
        if outcome is None:
            return False
        hib = self.settings.higher_is_better
        missed = shortfall(self.required, outcome.value, hib) > 0
        return outcome.stopped_early or (self.first_pass_wins and missed)

    def _report(
        self, trial: optuna.Trial, record: TrialRecord, source: TrialRecord, model: Any, t0: float
    ) -> None:
        """Tell Optuna ``source``'s outcome for ``record``, then store and track ``record``."""
        state, values = OptunaState.FAIL, None
        record = replace(
            record,
            calibration_passes=int(self.engine.calibration_passes),
            wall_time_s=time.perf_counter() - t0,
        )
        try:
            if source.state != TrialState.ERROR and source.accuracy is not None:
                miss = shortfall(self.required, source.accuracy, self.settings.higher_is_better)
                # a pruned trial is infeasible even if the evaluator's partial value is not
                trial.set_constraint(
                    CONSTRAINT, max(miss, 1e-12) if source.state == TrialState.PRUNED else miss
                )
            if source.state == TrialState.PRUNED:
                state = OptunaState.PRUNED
            elif source.state != TrialState.ERROR:
                state, values = OptunaState.COMPLETE, objective_values(source, self.settings)
                if None in values:  # a miss not timed (``_verdict_settled``): infeasible
                    state, values = OptunaState.PRUNED, None
            st.set_record(trial, record)
            self._tell(trial, values, state)
        except optuna.exceptions.UpdateFinishedTrialError:
            # another worker saw no heartbeat for the grace period, failed it and queued a
            # retry, which will evaluate the plan again
            self._warn(f"trial {trial.number} was failed by another worker (no heartbeat)")
            return
        self.history.add(record)
        best = None if self.best_number is None else self.history.records[self.best_number]
        rank = self.settings
        if record.passed and (best is None or rank_key(record, rank) < rank_key(best, rank)):
            self.best_model, self.best_number = model, record.number
        self.tracker.trial_finished(record)

    def _tell(
        self, trial: optuna.Trial | int, values: list[float] | None, state: OptunaState
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
        n_trials = self.history.sync()
        records = self.history.ordered()
        passed = [r for r in records if r.passed]
        built = {} if self.best_number is None else {self.best_number: self.best_model}
        s, latency = self.settings, self.baseline_latency
        kept, rivals = st.final_choice(self.study), self.rivals
        final = final_round(self.engine, self.benchmark, s, passed, built, latency, rivals, kept)
        if final.speed is not None and final.best is not None:
            st.set_final_choice(self.study, final.best.number, [r.number for r in passed])
        best = final.best
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
        for text in final.warnings:
            self._warn(text)
        if not self.checked:
            self._warn("performance_only: accuracy was not checked; the default plan was used")
        result = TuneResult(
            best=best,
            best_model=final.model,
            baseline_accuracy=self.baseline,
            baseline_latency_ms=self.baseline_latency,
            required_accuracy=self.required,
            records=records,
            pareto=pareto,
            slower_than_fp32=final.slower_than_fp32,
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
            faster_than_fp32=final.faster_than_fp32,
            verdict=final.verdict,
            speed=final.speed,
        )
        self.tracker.study_finished(result)
        return result

    def _warn(self, text: str) -> None:
        self.warnings.append(text)
        logger.warning(text)
