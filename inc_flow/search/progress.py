"""Progress of a study in the ``inc_flow`` log (``LoggingTracker``: the study, each trial's
start and end, the summary), and ``MultiTracker``, which forwards every event to several
trackers (the log and MLflow). The other phases log their own line where they run (the
fingerprint, the fp32 baseline, calibration, sensitivity and ranking, the side-by-side round,
saving and registering); long passes over batches show progress through ``inc_flow.bars``."""

from __future__ import annotations

import logging

from inc_flow.search.plan import Plan
from inc_flow.search.ports import Tracker, trial_started
from inc_flow.search.records import StudyInfo, TrialRecord, TuneResult
from inc_flow.search.speed import FP32

logger = logging.getLogger("inc_flow")

FREQUENT_TIES = 0.01  # above this share of the evaluated samples, the log names the ties


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

    def trial_started(self, number: int, plan: Plan) -> None:
        logger.info(
            "[trial %d | %d/%d] started | %s", number, number + 1, self._max_trials, plan.summary()
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
        tied, seen = record.tied_outputs, record.eval_samples
        if tied and seen and tied > FREQUENT_TIES * seen:
            logger.info(
                "[trial %d] %d of %d outputs tie at the top: the verdict counts argmax's "
                "first index, as the deployed model does",
                record.number,
                tied,
                seen,
            )

    def study_finished(self, result: TuneResult) -> None:
        best = result.best
        logger.info(
            "tuning done (%s): fp32 accuracy %s, int8 accuracy %s, %s; "
            "%d trials (%d duplicates, %d pruned, %d errors) in %.1f s; "
            "%d calibration passes; %d eval samples saved",
            result.stop_reason,
            _fmt(result.baseline_accuracy),
            _fmt(best.accuracy if best else None),
            _speed(result),
            result.n_trials,
            result.n_duplicates,
            result.n_pruned,
            result.n_errors,
            result.wall_time_s,
            result.calibration_passes,
            result.eval_samples_saved,
        )


def _speed(result: TuneResult) -> str:
    """Latencies and speed-up: the side-by-side round's (median, min-max), else the trials'."""
    speed = result.speed
    if speed is None:
        return (
            f"fp32 {result.baseline_latency_ms:.3f} ms, int8 {_fmt(result.latency_ms, '.3f')} "
            f"ms, speed-up {_fmt(result.speedup, '.2f')}"
        )
    parts = []
    for batch in sorted({speed.batch, 1}, reverse=True):
        fp32, int8 = speed.latency_of(FP32, batch), speed.latency_of(speed.chosen, batch)
        parts.append(
            f"batch {batch}: fp32 {fp32.text()} ms, int8 {int8.text()} ms, speed-up "
            f"{speed.speedup[batch].text('.2f', 'x')}"
        )
    return f"side by side ({speed.rounds} rounds, {speed.chosen}) " + "; ".join(parts)


class MultiTracker:
    """Forwards every event to several trackers (the log and MLflow), in order."""

    def __init__(self, *trackers: Tracker) -> None:
        self.trackers = [t for t in trackers if t is not None]

    def study_started(self, info: StudyInfo) -> None:
        for t in self.trackers:
            t.study_started(info)

    def trial_started(self, number: int, plan: Plan) -> None:
        for t in self.trackers:
            trial_started(t, number, plan)

    def trial_finished(self, record: TrialRecord) -> None:
        for t in self.trackers:
            t.trial_finished(record)

    def study_finished(self, result: TuneResult) -> None:
        for t in self.trackers:
            t.study_finished(result)
