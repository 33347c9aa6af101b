"""The collaborators ``tune`` drives, as Protocols: everything the loop calls on them.

Required: an ``Engine`` (plan -> model), an ``Evaluator`` (model -> metric, with exact early
rejection), a ``Benchmark`` (model -> latency) and a ``Tracker`` (study events; the log and
MLflow implement one). Optional, each one method, checked with ``isinstance`` (the Protocols
are runtime-checkable) by the helpers at the bottom, the only places that call them:
``HasStatistics`` (an engine's op statistics), ``HasMeasure`` (a benchmark's full figures),
``HasSideBySide`` (a benchmark's side-by-side round after the search), ``HasTrialStarted``
(a tracker told when a trial starts) and ``HasProbe`` (an evaluator's per-sample outputs, what
the default strategy ranks plans on; ``search.ranking``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from inc_flow.search.plan import Plan
from inc_flow.search.probe import Probe
from inc_flow.search.records import EvalOutcome, StudyInfo, TrialRecord, TuneResult
from inc_flow.search.speed import Candidate, Samples


class Engine(Protocol):
    """Builds models from plans (``quant.engine.FxEngine``).

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


class Tracker(Protocol):
    """Receives the study as it runs (``record.tracking``: MLflow parent and child runs)."""

    def study_started(self, info: StudyInfo) -> None: ...
    def trial_finished(self, record: TrialRecord) -> None: ...
    def study_finished(self, result: TuneResult) -> None: ...


class Table(Protocol):
    """A table of rows (a pandas ``DataFrame``): ``to_dict("records")`` gives the rows."""

    def to_dict(self, orient: str) -> Any: ...


@runtime_checkable
class HasStatistics(Protocol):
    """Optional for an ``Engine``: the Mixed Precision Statistics of a built model, one row
    per op type: ``{"Op Type", "Total", "INT8", "FP32"}``."""

    def statistics(self, model: Any) -> Table: ...


@runtime_checkable
class HasMeasure(Protocol):
    """Optional for a ``Benchmark``: every figure it measures, ``latency_ms`` (the objective)
    among them (latency per batch size, throughput)."""

    def measure(self, model: Any) -> Mapping[str, float]: ...


@runtime_checkable
class HasSideBySide(Protocol):
    """Optional for a ``Benchmark``: the side-by-side round (``search.speed``). Times every
    candidate in every round, interleaved in one process, the order reversed each round;
    returns, per candidate name, batch 1 and ``batch_size`` (the objective batch), one
    latency (ms) per round."""

    batch_size: int

    def side_by_side(self, candidates: Sequence[Candidate]) -> Samples: ...


@runtime_checkable
class HasTrialStarted(Protocol):
    """Optional for a ``Tracker``: told when a trial's plan is known, before it is built
    (MLflow opens the child run there, so a killed process leaves a run to mark KILLED)."""

    def trial_started(self, number: int, plan: Plan) -> None: ...


@runtime_checkable
class HasProbe(Protocol):
    """Optional for an ``Evaluator``: ``model`` and ``reference`` (fp32) run on the probe
    samples at ``indices`` (None: all of them), compared sample by sample. The probe samples
    are the eval set's (in loader order), or for an ``eval_func`` the calibration data's,
    whose labels are then fp32's predictions. Outputs recorded during ``evaluate`` are reused."""

    def probe(self, model: Any, reference: Any, indices: Sequence[int] | None) -> Probe: ...


def op_statistics(engine: Engine, model: Any) -> list[dict[str, Any]]:
    """The engine's statistics rows of ``model``; none when the engine has no statistics."""
    if not isinstance(engine, HasStatistics):
        return []
    return list(engine.statistics(model).to_dict("records"))


def measure(benchmark: Benchmark, model: Any) -> dict[str, float]:
    """Latency (the objective) and, when the benchmark offers them, the other figures."""
    if not isinstance(benchmark, HasMeasure):
        return {"latency_ms": float(benchmark.latency(model))}
    return {k: float(v) for k, v in benchmark.measure(model).items()}


def trial_started(tracker: Tracker, number: int, plan: Plan) -> None:
    """Tell ``tracker`` that trial ``number`` runs ``plan``, when it wants to know."""
    if isinstance(tracker, HasTrialStarted):
        tracker.trial_started(number, plan)
