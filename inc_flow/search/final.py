"""After the search: the best passing plans timed again beside fp32 (and the registry's
champion, when the caller brings it) in one side-by-side round, which picks the plan and
gives the speed verdict (``search.speed``). No torch: the round runs behind the optional
``HasSideBySide`` port of the benchmark.

``settings.finalists`` (``tuning.finalists``) passing plans, best first by the study's
ranking, take part. With a latency objective the fastest of them at the objective batch is
chosen; otherwise the best by the ranking stays chosen and the round gives its verdict.
Without a round (a benchmark without one, or a worker) the best plan by the ranking is chosen
and compared with the baseline on single readings.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from inc_flow.search.ports import Benchmark, Engine, HasSideBySide
from inc_flow.search.records import TrialRecord, latency_ranked, rank_key, why
from inc_flow.search.settings import TuneSettings
from inc_flow.search.speed import FP32, TRIAL, Candidate, SpeedVerdict, judge

logger = logging.getLogger("inc_flow")

Rivals = Callable[[], Sequence[Candidate]]
"""Brings more candidates into the round (the registry's ``@champion``); called only when a
round runs."""


@dataclass(frozen=True)
class Final:
    """The chosen plan, its model and the speed verdict (see ``TuneResult``)."""

    best: TrialRecord | None = None
    model: Any = None
    speed: SpeedVerdict | None = None
    faster_than_fp32: bool = False
    slower_than_fp32: bool = False
    verdict: str = ""
    warnings: tuple[str, ...] = ()


def final_round(
    engine: Engine,
    benchmark: Benchmark,
    settings: TuneSettings,
    passed: Sequence[TrialRecord],
    built: Mapping[int, Any],
    baseline_ms: float,
    rivals: Rivals | None = None,
    kept: tuple[int, frozenset[int]] | None = None,
) -> Final:
    """The chosen plan among ``passed`` and its verdict.

    Args:
        engine: rebuilds a finalist whose model is not in ``built``.
        benchmark: the round, when it has one (``HasSideBySide``).
        settings: ``finalists``, ``final_round`` and the ranking.
        passed: the passing records of the study.
        built: models already built, by trial number.
        baseline_ms: fp32's latency at the start of the study (used without a round).
        rivals: more candidates for the round (the registry's champion).
        kept: an earlier round's pick and the passing trials it chose among. When those are
            still the passing trials (a rerun of a finished study), the pick is kept: timing
            noise between near-equal plans must not change the answer (or the registry).
    """
    if not passed:
        return Final()
    ranked = sorted(passed, key=lambda r: rank_key(r, settings))[: settings.finalists]
    if kept is not None and kept[1] == {r.number for r in passed}:
        ranked = [r for r in ranked if r.number == kept[0]] or ranked
    notes: list[str] = []
    if settings.final_round and isinstance(benchmark, HasSideBySide):
        finalists = []
        for record in ranked:
            try:
                model = built[record.number] if record.number in built else None
                model = model if model is not None else engine.build(record.plan)
            except Exception as e:  # noqa: BLE001 -- the other finalists can still run
                notes.append(f"trial {record.number} left out of the round: {why(e)}")
                continue
            finalists.append((record, model))
        if finalists:
            final = _round(engine, benchmark, settings, finalists, rivals, notes)
            if final is not None:
                return final
    best = ranked[0]
    model = built.get(best.number)
    if model is None:
        model = engine.build(best.plan)
    return _single(best, model, baseline_ms, notes)


def _round(
    engine: Engine,
    benchmark: HasSideBySide,
    settings: TuneSettings,
    finalists: list[tuple[TrialRecord, Any]],
    rivals: Rivals | None,
    notes: list[str],
) -> Final | None:
    candidates = [Candidate(FP32, engine.fp32_model, FP32)]
    candidates += [
        Candidate(f"trial {r.number}", m, TRIAL, r.plan.backend, r.number) for r, m in finalists
    ]
    extra: list[Candidate] = []
    if rivals is not None:
        try:
            extra = list(rivals())
        except Exception as e:  # noqa: BLE001 -- the round goes on without the champion
            notes.append(f"the champion is not in the side-by-side round: {why(e)}")
    logger.info(
        "side-by-side round: %s timed in turn",
        ", ".join(c.name for c in candidates + extra),
    )
    try:
        try:
            samples = benchmark.side_by_side(candidates + extra)
        except Exception as e:
            if not extra:
                raise
            notes.append(f"the champion is not in the side-by-side round: {why(e)}")
            extra = []
            samples = benchmark.side_by_side(candidates)
    except Exception as e:  # noqa: BLE001 -- fall back to the trials' own readings
        notes.append(f"the side-by-side round failed ({why(e)}); using the trials' readings")
        return None
    speed = judge(samples, candidates + extra, benchmark.batch_size, latency_ranked(settings))
    record, model = next((r, m) for r, m in finalists if r.number == speed.chosen_trial)
    if speed.faster_than_fp32:
        logger.info("%s", speed.text)
    else:
        notes.append(speed.text)
    notes.extend(speed.notes)
    if speed.champion_text:
        logger.info("%s", speed.champion_text)
    fp32, mine = speed.latency_of(FP32), speed.latency_of(speed.chosen)
    return Final(
        best=record,
        model=model,
        speed=speed,
        faster_than_fp32=speed.faster_than_fp32,
        slower_than_fp32=mine.median > fp32.median,
        verdict=speed.text,
        warnings=tuple(notes),
    )


def _single(best: TrialRecord, model: Any, baseline_ms: float, notes: list[str]) -> Final:
    """No round: the best trial's own latency against the study's baseline."""
    ms = best.latency_ms
    if ms is None:
        return Final(best, model, verdict="no latency measured", warnings=tuple(notes))
    faster = ms < baseline_ms
    who = f"int8 (trial {best.number}) {ms:.3f} ms vs fp32 {baseline_ms:.3f} ms"
    if faster:
        verdict = f"int8 is faster than fp32: {who} (single readings, no side-by-side round)"
    else:
        verdict = f"fp32 is faster: {who} (single readings, no side-by-side round)"
        notes.append(verdict)
    return Final(best, model, None, faster, ms > baseline_ms, verdict, tuple(notes))
