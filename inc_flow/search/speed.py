"""The speed verdict: fp32, the best passing plans and the registry's champion timed side by
side after the search, and what follows from those timings. Pure logic, no torch.

The round (``quant.evaluate.LatencyBenchmark.side_by_side``, through the optional
``search.ports.HasSideBySide``) times every :class:`Candidate` once per round, in the order
of :func:`orders`: as given in even rounds, reversed in odd ones, so that no candidate always
runs first or last. Each timing is the median of that round's calls; a candidate's latency is
the median of its round values, with their min and max as its spread (:class:`Spread`).

:func:`judge` turns the round values into a :class:`SpeedVerdict`. The speed-up is
fp32 / plan per round (both timed in the same round, one after the other), reported as the
median with min and max over the rounds. The rule for "faster": a plan is faster than fp32
at a batch when its median speed-up is above 1 and it is faster in every round, except that
with 4 rounds or more one round may go the other way (:func:`wins_enough`). Comparing within
each round keeps a load change between rounds, which moves both timings alike, from
deciding; allowing one lost round keeps a single load spike on a shared machine from
deciding. The same rule decides "faster than the champion".
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

FP32, TRIAL, CHAMPION = "fp32", "trial", "champion"  # Candidate.kind

# candidate name -> batch size -> one latency (ms) per round
Samples = Mapping[str, Mapping[int, Sequence[float]]]


@dataclass(frozen=True)
class Candidate:
    """One model of the round. ``kind``: fp32, trial (a finalist) or champion (the registry's
    current one); ``backend``: the int8 kernel library it runs on (None for fp32)."""

    name: str
    model: Any = field(compare=False, repr=False)
    kind: str = TRIAL
    backend: str | None = None
    trial: int | None = None


def orders(names: Sequence[str], rounds: int) -> list[list[str]]:
    """The timing order of each round: ``names`` in even rounds, reversed in odd ones."""
    return [list(names) if r % 2 == 0 else list(reversed(names)) for r in range(rounds)]


def interleave(
    candidates: Sequence[Candidate],
    rounds: int,
    time_one: Callable[[Candidate], Mapping[int, float]],
) -> dict[str, dict[int, list[float]]]:
    """``time_one(candidate)`` (latency per batch size, ms) for every candidate in every
    round, in :func:`orders`; the values per candidate and batch, one per round."""
    if rounds < 1:
        raise ValueError(f"`rounds` must be >= 1, got rounds={rounds!r}")
    by_name = {c.name: c for c in candidates}
    if len(by_name) != len(candidates):
        raise ValueError(f"candidate names must differ, got {[c.name for c in candidates]}")
    samples: dict[str, dict[int, list[float]]] = {name: {} for name in by_name}
    for order in orders(list(by_name), rounds):
        for name in order:
            for batch, ms in time_one(by_name[name]).items():
                samples[name].setdefault(int(batch), []).append(float(ms))
    return samples


@dataclass(frozen=True)
class Spread:
    """A median with the min and max it was taken over."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values))

    def text(self, spec: str = ".3f", unit: str = "") -> str:
        """``1.512 ms (1.490-1.553)``."""
        m, lo, hi = (format(v, spec) for v in (self.median, self.low, self.high))
        return f"{m}{unit} ({lo}-{hi})"


@dataclass(frozen=True)
class SpeedVerdict:
    """The side-by-side round and what follows from it.

    Attributes:
        batch: the objective batch (the performance batch).
        rounds: rounds timed.
        latency: candidate name -> batch -> latency spread (ms), for batch 1 and ``batch``.
        speedup: batch -> fp32 / chosen, per round (median, min, max).
        chosen: the chosen finalist's name; ``chosen_trial`` its trial number.
        faster_than_fp32: the chosen plan is faster than fp32 at ``batch`` (:func:`wins_enough`).
        slower_at_b1: the chosen plan's median at batch 1 is above fp32's.
        beats_champion: faster than the registry's champion (:func:`wins_enough`; None: no
            champion in the round).
        text: the verdict against fp32, one line (the log, the result, the parent run, the
            registered version).
        champion_text: the comparison with the champion ("" without one).
        notes: warnings beside the verdict (slower at batch 1).
        finalists: the names of the plans in the round, best first by the study's ranking.
    """

    batch: int
    rounds: int
    latency: Mapping[str, Mapping[int, Spread]]
    speedup: Mapping[int, Spread]
    chosen: str
    chosen_trial: int | None
    faster_than_fp32: bool
    slower_at_b1: bool
    beats_champion: bool | None
    text: str
    champion_text: str = ""
    notes: tuple[str, ...] = ()
    finalists: tuple[str, ...] = ()

    def latency_of(self, name: str, batch: int | None = None) -> Spread:
        return self.latency[name][self.batch if batch is None else batch]


def _ms(spread: Spread) -> str:
    return spread.text(".3f", " ms")


def wins_enough(ratios: Sequence[float]) -> bool:
    """Faster (ratio > 1) in every round, or in all but one of 4 rounds or more; median > 1."""
    lost = sum(r <= 1.0 for r in ratios)
    return statistics.median(ratios) > 1.0 and lost <= (1 if len(ratios) >= 4 else 0)


def _per_round(fp32: Sequence[float], other: Sequence[float]) -> list[float]:
    return [f / o if o > 0 else float("inf") for f, o in zip(fp32, other, strict=True)]


def _ratios(fp32: Sequence[float], other: Sequence[float]) -> Spread:
    return Spread.of(_per_round(fp32, other))


def judge(
    samples: Samples,
    candidates: Sequence[Candidate],
    batch: int,
    pick_fastest: bool = True,
) -> SpeedVerdict:
    """The verdict of a round.

    Args:
        samples: the round's values (:func:`interleave`), batch 1 and ``batch`` per candidate.
        candidates: one ``fp32``, the finalists (``trial``) best first, at most one champion.
        batch: the objective batch.
        pick_fastest: choose the finalist with the lowest median at ``batch`` (the latency
            objective); False keeps the first finalist (objectives other than latency).
    """
    fp32 = next(c for c in candidates if c.kind == FP32)
    finalists = [c for c in candidates if c.kind == TRIAL]
    champion = next((c for c in candidates if c.kind == CHAMPION), None)
    if not finalists:
        raise ValueError("the round needs at least one finalist")
    latency = {c.name: {b: Spread.of(v) for b, v in samples[c.name].items()} for c in candidates}
    chosen = finalists[0]
    if pick_fastest:
        chosen = min(finalists, key=lambda c: latency[c.name][batch].median)  # stable: rank
    rounds = len(samples[fp32.name][batch])
    speedup = {b: _ratios(samples[fp32.name][b], samples[chosen.name][b]) for b in {1, batch}}
    mine, base = latency[chosen.name][batch], latency[fp32.name][batch]
    faster = wins_enough(_per_round(samples[fp32.name][batch], samples[chosen.name][batch]))
    who = f"int8 ({chosen.name})"
    pair = f"{_ms(mine)} vs fp32 {_ms(base)}, speed-up {speedup[batch].text('.2f', 'x')}"
    if faster:
        text = f"{who} is faster than fp32 at batch {batch}: {pair}"
    elif speedup[batch].median <= 1.0:
        text = f"fp32 is faster at batch {batch}: {who} {pair}"
    else:
        text = f"{who} is not faster than fp32 in enough rounds at batch {batch}: {pair}"
    text += f" ({rounds} rounds side by side)"
    notes = []
    mine1, base1 = latency[chosen.name][1], latency[fp32.name][1]
    slower_b1 = mine1.median > base1.median
    if slower_b1 and batch != 1:
        notes.append(
            f"{who} is slower than fp32 at batch 1: {_ms(mine1)} vs fp32 {_ms(base1)}, "
            f"speed-up {speedup[1].text('.2f', 'x')}"
        )
    beats, champion_text = None, ""
    if champion is not None:
        theirs = latency[champion.name][batch]
        over = _ratios(samples[champion.name][batch], samples[chosen.name][batch])
        beats = wins_enough(_per_round(samples[champion.name][batch], samples[chosen.name][batch]))
        verb = "is faster than" if beats else "is not faster in enough rounds than"
        champion_text = (
            f"{who} {verb} the {champion.name} at batch {batch}: {_ms(mine)} vs "
            f"{_ms(theirs)}, speed-up {over.text('.2f', 'x')}"
        )
    return SpeedVerdict(
        batch=batch,
        rounds=rounds,
        latency=latency,
        speedup=speedup,
        chosen=chosen.name,
        chosen_trial=chosen.trial,
        faster_than_fp32=faster,
        slower_at_b1=slower_b1,
        beats_champion=beats,
        text=text,
        champion_text=champion_text,
        notes=tuple(notes),
        finalists=tuple(c.name for c in finalists),
    )
