"""What a tuning study takes and gives.

In: ``TuneSettings`` (built from the config by the caller) and the collaborators ``tune``
drives, as protocols: an ``Engine`` (plan -> model), an ``Evaluator`` (model -> metric, with
exact early rejection) and a ``Benchmark`` (model -> latency). Out: one ``TrialRecord`` per
trial (also stored on its Optuna trial, so a resumed study rebuilds its records without
re-running anything), ``StudyInfo`` at the start and ``TuneResult`` at the end, all given to a
``Tracker`` (``tracking.py`` implements one over MLflow; ``LoggingTracker`` is the default).
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Protocol

import optuna

from inc_flow.search.accuracy import absolute_drop, relative_drop, required_value, shortfall
from inc_flow.search.plan import APPROACHES, BACKENDS, Plan

logger = logging.getLogger("inc_flow")

STRATEGIES = ("basic", "tpe", "random", "exhaustive", "bayesian", "multi_objective")
OBJECTIVES = ("performance", "accuracy", "modelsize")
# Trial states: met the target / completed but missed it / evaluation stopped early (missed) /
# build, evaluation or latency raised / same plan as an earlier trial (its outcome reused).
STATES = ("passed", "failed", "pruned", "error", "duplicate")
MEMORY_STORAGE = ":memory:"  # settings.storage value for an in-memory study (tests, dry runs)


@dataclass(frozen=True)
class EvalOutcome:
    """One evaluation: the metric over ``samples`` of ``total`` samples (0 when unknown).
    ``stopped_early``: the threshold had become unreachable, so evaluation stopped; ``value``
    is then the metric over the samples seen, below the threshold."""

    value: float
    samples: int = 0
    total: int = 0
    stopped_early: bool = False


class Engine(Protocol):
    """Builds models from plans (implemented over fx.py).

    ``fp32_model`` is the baseline; ``calibration_passes`` counts calibrations so far (one per
    distinct ``Plan.calibration_key()``); ``ops()`` lists (name, op_type) of quantizable ops;
    ``sensitivity(plan)`` scores each int8 op of ``plan`` (higher = falling it back to fp32
    helps more); ``model_size`` is in bytes; ``op_counts`` is (int8 ops, fp32 ops).
    """

    fp32_model: Any
    calibration_passes: int

    def ops(self) -> list[tuple[str, str]]: ...
    def build(self, plan: Plan) -> Any: ...
    def sensitivity(self, plan: Plan) -> Mapping[str, float]: ...
    def model_size(self, model: Any) -> int: ...
    def op_counts(self, model: Any, plan: Plan) -> tuple[int, int]: ...


class Evaluator(Protocol):
    """The accuracy of a model. ``threshold``: the value the metric must reach (given only
    when higher is better); the evaluator may stop as soon as it is out of reach (exact early
    rejection, never a wrong one). None: evaluate everything."""

    def evaluate(self, model: Any, threshold: float | None) -> EvalOutcome: ...


class Benchmark(Protocol):
    """``latency(model)``: milliseconds, the "performance" objective (fixed batch, threads)."""

    def latency(self, model: Any) -> float: ...


@dataclass(frozen=True)
class TuneSettings:
    """What ``tune`` needs from the config. ``relative`` and ``absolute`` both None means
    INC's default, 1% relative. ``storage`` None: ``sqlite:///<workspace>/optuna.db``."""

    study_name: str = "inc_flow"
    strategy: str = "basic"
    relative: float | None = None
    absolute: float | None = None
    higher_is_better: bool = True
    objective: str = "performance"
    timeout: float = 0.0
    max_trials: int = 100
    performance_only: bool = False
    random_seed: int = 1978
    storage: str | None = None
    workspace: str = "./nc_workspace"
    approach: str = "post_training_static_quant"
    backends: tuple[str, ...] = ("x86",)
    new_trials: bool = True  # False: read the study, run no trial (``inc-flow finalize``)

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("strategy", self.strategy, STRATEGIES),
            ("objective", self.objective, OBJECTIVES),
            ("approach", self.approach, APPROACHES),
        ):
            if value not in allowed:
                raise ValueError(f"`{name}` must be one of {list(allowed)}, got {name}={value!r}")
        if not self.backends or any(b not in BACKENDS for b in self.backends):
            raise ValueError(f"`backends` must be a non-empty subset of {list(BACKENDS)}")
        if self.timeout < 0 or self.max_trials < 1 or not self.study_name:
            raise ValueError(
                "`timeout` must be >= 0, `max_trials` >= 1 and `study_name` non-empty, got "
                f"timeout={self.timeout!r}, max_trials={self.max_trials!r}, "
                f"study_name={self.study_name!r}"
            )
        self.required(1.0)  # validates relative/absolute

    def required(self, baseline: float) -> float:
        rel = 0.01 if self.relative is None and self.absolute is None else self.relative
        return required_value(
            baseline, relative=rel, absolute=self.absolute, higher_is_better=self.higher_is_better
        )

    def storage_url(self) -> str:
        if self.storage:
            return self.storage
        return f"sqlite:///{Path(self.workspace).resolve() / 'optuna.db'}"

    @property
    def multi_objective(self) -> bool:
        """Accuracy x latency (needs accuracy, so not with ``performance_only``)."""
        return self.strategy == "multi_objective" and not self.performance_only

    def directions(self) -> list[str]:
        """Optuna study directions: accuracy and latency, the accuracy, or latency/size."""
        acc = "maximize" if self.higher_is_better else "minimize"
        if self.multi_objective:
            return [acc, "minimize"]
        if self.objective == "accuracy" and not self.performance_only:
            return [acc]
        return ["minimize"]

    def sampler(self) -> tuple[optuna.samplers.BaseSampler, str | None]:
        """The seeded sampler of the strategy, and a warning when it had to be replaced."""
        seed, name = self.random_seed, self.strategy
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed), None
        if name == "exhaustive":
            with warnings.catch_warnings():  # "experimental" since 3.1; we pin optuna 5
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.samplers.BruteForceSampler(seed=seed), None
        if name == "bayesian":
            missing = [m for m in ("torch", "scipy") if importlib.util.find_spec(m) is None]
            if not missing:
                return optuna.samplers.GPSampler(seed=seed), None
            note = f"strategy 'bayesian' needs {missing} for GPSampler; using TPE instead"
            return optuna.samplers.TPESampler(seed=seed), note
        return optuna.samplers.TPESampler(seed=seed), None


@dataclass(frozen=True)
class TrialRecord:
    """One finished trial. For pruned trials ``accuracy`` is the bound when evaluation
    stopped; ``eval_samples``/``eval_total`` count the samples evaluated / available."""

    number: int
    plan: Plan
    state: str
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
    # Latency per batch size and throughput, when the benchmark measures them.
    perf: dict[str, float] = field(default_factory=dict, compare=False)
    # Mixed Precision Statistics rows of the built model: {"Op Type", "Total", "INT8", "FP32"}.
    op_stats: list[dict[str, Any]] = field(default_factory=list, compare=False)

    @property
    def passed(self) -> bool:
        return self.state == "passed"

    @property
    def samples_saved(self) -> int:
        return self.eval_total - self.eval_samples if self.state == "pruned" else 0

    def scored(
        self, outcome: EvalOutcome, baseline: float, required: float, higher_is_better: bool
    ) -> TrialRecord:
        """This record with the evaluation's accuracy and state: passed, failed or pruned."""
        acc, hib = float(outcome.value), higher_is_better
        record = replace(
            self, accuracy=acc, eval_samples=outcome.samples, eval_total=outcome.total
        )
        if outcome.stopped_early:
            reason = f"stopped early: accuracy cannot reach {required:.4f}"
            return replace(record, state="pruned", failure_reason=reason)
        record = replace(
            record,
            state="passed",
            relative_drop=relative_drop(baseline, acc, hib),
            absolute_drop=absolute_drop(baseline, acc, hib),
        )
        miss = shortfall(required, acc, hib)
        if miss > 0:
            reason = f"accuracy {acc:.4f} misses the target {required:.4f} by {miss:.4f}"
            return replace(record, state="failed", failure_reason=reason)
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
    ``stop_reason``: target met, max_trials, timeout, space exhausted or performance_only."""

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

    def _count(self, state: str) -> int:
        return sum(r.state == state for r in self.records)

    @property
    def n_duplicates(self) -> int:
        return self._count("duplicate")

    @property
    def n_pruned(self) -> int:
        return self._count("pruned")

    @property
    def n_errors(self) -> int:
        return self._count("error")

    @property
    def eval_samples_saved(self) -> int:
        return sum(r.samples_saved for r in self.records)

    @property
    def speedup(self) -> float | None:
        """fp32 latency / best latency."""
        if self.best is None or not self.best.latency_ms:
            return None
        return self.baseline_latency_ms / self.best.latency_ms


def closest_miss(
    records: tuple[TrialRecord, ...], required: float, higher_is_better: bool
) -> tuple[TrialRecord | None, float | None]:
    """The completed (else pruned) failing record nearest ``required``, and its shortfall."""
    for state in ("failed", "pruned"):
        near = [r for r in records if r.state == state]
        if near:
            best = min(near, key=lambda r: shortfall(required, r.accuracy, higher_is_better))
            return best, shortfall(required, best.accuracy, higher_is_better)
    return None, None


class Tracker(Protocol):
    """Receives the study as it runs (``tracking.py``: MLflow parent and child runs).

    ``trial_started(number, plan)`` is optional: the tuner calls it when the tracker has it
    (MLflow opens the child run there, so a killed process leaves a run to mark KILLED)."""

    def study_started(self, info: StudyInfo) -> None: ...
    def trial_finished(self, record: TrialRecord) -> None: ...
    def study_finished(self, result: TuneResult) -> None: ...


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


class LoggingTracker:
    """Default tracker: one ``inc_flow`` log line per trial and a summary at the end."""

    def __init__(self) -> None:
        self._max_trials = 0

    def study_started(self, info: StudyInfo) -> None:
        self._max_trials = info.settings.max_trials
        logger.info(
            "study %s (%s): fp32 accuracy %s, latency %.3f ms, %d ops, %d trials resumed",
            info.study_name,
            info.storage,
            _fmt(info.baseline_accuracy),
            info.baseline_latency_ms,
            len(info.ops),
            len(info.resumed),
        )

    def trial_finished(self, record: TrialRecord) -> None:
        why = f" ({record.failure_reason})" if record.failure_reason else ""
        dup = f" of trial {record.duplicate_of}" if record.duplicate_of is not None else ""
        logger.info(
            "[trial %d | %d/%d] %s%s%s | %s | acc %s drop %s | %s ms",
            record.number,  # 0-based, as in the MLflow run names (trial-000) and warnings
            record.number + 1,
            self._max_trials,
            record.state,
            dup,
            why,
            record.plan.summary(),
            _fmt(record.accuracy),
            _fmt(record.relative_drop, ".2%"),
            _fmt(record.latency_ms, ".3f"),
        )

    def study_finished(self, result: TuneResult) -> None:
        best = result.best
        logger.info(
            "tuning done (%s): fp32 accuracy %s, int8 accuracy %s, fp32 %.3f ms, int8 %s ms, "
            "speed-up %s; %d trials (%d duplicates, %d pruned, %d errors) in %.1f s; "
            "%d calibration passes; %d eval samples saved",
            result.stop_reason,
            _fmt(result.baseline_accuracy),
            _fmt(best.accuracy if best else None),
            result.baseline_latency_ms,
            _fmt(best.latency_ms if best else None, ".3f"),
            _fmt(result.speedup, ".2f"),
            result.n_trials,
            result.n_duplicates,
            result.n_pruned,
            result.n_errors,
            result.wall_time_s,
            result.calibration_passes,
            result.eval_samples_saved,
        )


class MultiTracker:
    """Forwards every event to several trackers (the log and MLflow), in order."""

    def __init__(self, *trackers: Tracker) -> None:
        self.trackers = [t for t in trackers if t is not None]

    def study_started(self, info: StudyInfo) -> None:
        for t in self.trackers:
            t.study_started(info)

    def trial_started(self, number: int, plan: Plan) -> None:
        for t in self.trackers:
            hook = getattr(t, "trial_started", None)
            if hook is not None:
                hook(number, plan)

    def trial_finished(self, record: TrialRecord) -> None:
        for t in self.trackers:
            t.trial_finished(record)

    def study_finished(self, result: TuneResult) -> None:
        for t in self.trackers:
            t.study_finished(result)
