"""What a tuning study gives: one ``TrialRecord`` per trial, ``StudyInfo`` and ``TuneResult``.

A ``TrialRecord`` is also stored on its Optuna trial (``search.storage``), so a resumed study
rebuilds its records without re-running anything. ``StudyInfo`` (at the start) and
``TuneResult`` (at the end) go to a ``Tracker`` (``search.ports``). ``EvalOutcome`` is what an
evaluator returns. Trial states are ``vocab.TrialState``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from inc_flow.search.accuracy import absolute_drop, relative_drop, shortfall
from inc_flow.search.plan import Plan
from inc_flow.search.settings import TuneSettings
from inc_flow.search.speed import FP32, SpeedVerdict
from inc_flow.vocab import Objective, TrialState


def why(error: BaseException) -> str:
    """``Type: first line of the message`` of an exception from user code or a library."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


@dataclass(frozen=True)
class EvalOutcome:
    """One evaluation: the metric over ``samples`` of ``total`` samples (0 when unknown).
    ``stopped_early``: the threshold had become unreachable, so evaluation stopped; ``value``
    is then the metric over the samples seen, below the threshold. ``tied``: samples whose
    top score was shared, when a ranking metric counted them (None: an ``eval_func``, or no
    ranking). ``chance``: the metric's value under a random ranking (None: unknown)."""

    value: float
    samples: int = 0
    total: int = 0
    stopped_early: bool = False
    tied: int | None = None
    chance: float | None = None


@dataclass(frozen=True)
class TrialRecord:
    """One finished trial. For pruned trials ``accuracy`` is the bound when evaluation
    stopped; ``eval_samples``/``eval_total`` count the samples evaluated / available;
    ``tied_outputs`` of them had their top score shared (None: not counted)."""

    number: int
    plan: Plan
    state: str  # a vocab.TrialState value
    phase: str = "sampler"
    accuracy: float | None = None
    relative_drop: float | None = None
    absolute_drop: float | None = None
    latency_ms: float | None = None
    model_size: int | None = None
    int8_ops: int | None = None
    fp32_ops: int | None = None
    eval_samples: int = 0
    eval_total: int = 0
    calibration_passes: int = 0
    wall_time_s: float = 0.0
    failure_reason: str | None = None
    duplicate_of: int | None = None
    tied_outputs: int | None = None
    rank_samples: int = 0  # samples the ranking ran to propose this plan (search.ranking)
    # Latency per batch size and throughput, when the benchmark measures them.
    perf: dict[str, float] = field(default_factory=dict, compare=False)
    # Mixed Precision Statistics rows of the built model: {"Op Type", "Total", "INT8", "FP32"}.
    op_stats: list[dict[str, Any]] = field(default_factory=list, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "state", str(self.state))  # plain data, not the enum member

    @property
    def passed(self) -> bool:
        return self.state == TrialState.PASSED

    @property
    def samples_saved(self) -> int:
        return self.eval_total - self.eval_samples if self.state == TrialState.PRUNED else 0

    def scored(
        self, outcome: EvalOutcome, baseline: float, required: float, higher_is_better: bool
    ) -> TrialRecord:
        """This record with the evaluation's accuracy and state: passed, failed or pruned."""
        acc, hib = float(outcome.value), higher_is_better
        record = replace(
            self,
            accuracy=acc,
            eval_samples=outcome.samples,
            eval_total=outcome.total,
            tied_outputs=outcome.tied,
        )
        if outcome.stopped_early:
            reason = f"stopped early: accuracy cannot reach {required:.4f}"
            return replace(record, state=TrialState.PRUNED, failure_reason=reason)
        record = replace(
            record,
            state=TrialState.PASSED,
            relative_drop=relative_drop(baseline, acc, hib),
            absolute_drop=absolute_drop(baseline, acc, hib),
        )
        miss = shortfall(required, acc, hib)
        if miss > 0:
            reason = f"accuracy {acc:.4f} misses the target {required:.4f} by {miss:.4f}"
            return replace(record, state=TrialState.FAILED, failure_reason=reason)
        return record

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "plan": self.plan.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrialRecord:
        known = {f.name for f in fields(cls)}  # tolerate keys added by later versions
        values = {k: v for k, v in data.items() if k in known}
        return cls(**{**values, "plan": Plan.from_dict(data["plan"])})


@dataclass(frozen=True)
class StudyInfo:
    """Given to ``Tracker.study_started``. ``resumed`` are records of earlier runs;
    ``stale_trials`` were left RUNNING by a dead process and have just been marked FAIL."""

    settings: TuneSettings
    study_name: str
    storage: str
    baseline_accuracy: float | None
    baseline_latency_ms: float
    required_accuracy: float | None
    ops: tuple[tuple[str, str], ...]
    resumed: tuple[TrialRecord, ...] = ()
    stale_trials: tuple[int, ...] = ()


@dataclass(frozen=True)
class TuneResult:
    """Outcome of ``tune``. ``best`` is None when nothing passed: ``closest`` then is the
    completed (else pruned) trial nearest the target and ``closest_miss`` its shortfall.
    ``n_trials`` counts every finished trial of the study (earlier runs and stale ones too);
    ``pareto`` is the feasible Pareto front (accuracy x latency) of a multi_objective study.
    ``stop_reason``: target met, max_trials, timeout, space exhausted or performance_only.

    Speed: ``speed`` is the side-by-side round after the search (None when it did not run:
    nothing passed, a worker, or a benchmark without one); ``best`` is then the plan it
    chose. ``faster_than_fp32``: ``best`` beats fp32 at the objective batch in the round
    (``search.speed``; without a round: its trial's latency is below the baseline's);
    ``verdict`` says so in one line ("fp32 is faster at batch 64: ..." when it does not).
    A model not faster than fp32 is never made ``@champion``."""

    best: TrialRecord | None
    best_model: Any
    baseline_accuracy: float | None
    baseline_latency_ms: float
    required_accuracy: float | None
    records: tuple[TrialRecord, ...]
    pareto: tuple[TrialRecord, ...]
    slower_than_fp32: bool
    closest: TrialRecord | None
    closest_miss: float | None
    n_trials: int
    calibration_passes: int
    wall_time_s: float
    study_name: str
    storage: str
    stop_reason: str
    accuracy_checked: bool = True
    stale_trials: tuple[int, ...] = ()
    warnings: tuple[str, ...] = ()
    faster_than_fp32: bool = False
    verdict: str = ""
    speed: SpeedVerdict | None = None

    def _count(self, state: str) -> int:
        return sum(r.state == state for r in self.records)

    @property
    def n_duplicates(self) -> int:
        return self._count(TrialState.DUPLICATE)

    @property
    def n_pruned(self) -> int:
        return self._count(TrialState.PRUNED)

    @property
    def n_errors(self) -> int:
        return self._count(TrialState.ERROR)

    @property
    def eval_samples_saved(self) -> int:
        return sum(r.samples_saved for r in self.records)

    @property
    def speedup(self) -> float | None:
        """fp32 latency / best latency at the objective batch: the round's median of the
        per-round ratios, else the baseline over the best trial's latency."""
        if self.speed is not None:
            return self.speed.speedup[self.speed.batch].median
        if self.best is None or not self.best.latency_ms:
            return None
        return self.baseline_latency_ms / self.best.latency_ms

    @property
    def fp32_latency_ms(self) -> float:
        """fp32's latency at the objective batch: the round's median, else the study's."""
        if self.speed is not None:
            return self.speed.latency_of(FP32).median
        return self.baseline_latency_ms

    @property
    def latency_ms(self) -> float | None:
        """The best plan's latency at the objective batch: the round's median, else its
        trial's reading."""
        if self.speed is not None:
            return self.speed.latency_of(self.speed.chosen).median
        return self.best.latency_ms if self.best is not None else None


def closest_miss(
    records: tuple[TrialRecord, ...], required: float, higher_is_better: bool
) -> tuple[TrialRecord | None, float | None]:
    """The completed (else pruned) failing record nearest ``required``, and its shortfall."""
    for state in (TrialState.FAILED, TrialState.PRUNED):
        near = [r for r in records if r.state == state]
        if near:
            best = min(near, key=lambda r: shortfall(required, r.accuracy, higher_is_better))
            return best, shortfall(required, best.accuracy, higher_is_better)
    return None, None


def objective_values(record: TrialRecord, settings: TuneSettings) -> list[float]:
    """The Optuna values of a completed ``record`` (``settings.directions()`` order)."""
    if settings.multi_objective:
        return [record.accuracy, record.latency_ms]
    if settings.objective == Objective.ACCURACY and settings.checked:
        return [record.accuracy]
    if settings.objective == Objective.MODELSIZE:
        return [float(record.model_size)]
    return [record.latency_ms]


def latency_ranked(settings: TuneSettings) -> bool:
    """Whether passing plans are ranked by latency (else by accuracy or model size)."""
    if settings.multi_objective:
        return True
    if settings.objective == Objective.ACCURACY and settings.checked:
        return False
    return settings.objective != Objective.MODELSIZE


def rank_key(record: TrialRecord, settings: TuneSettings) -> tuple[float, int]:
    """Sort key of passing records under ``settings``, best first."""
    if latency_ranked(settings):
        return (record.latency_ms, record.number)
    if settings.objective == Objective.MODELSIZE:
        return (record.model_size, record.number)
    acc = record.accuracy
    return (-acc if settings.higher_is_better else acc, record.number)
