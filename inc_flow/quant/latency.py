"""Latency timing of a model or function: a fixed thread count, warmup, median and p90; and
the side-by-side round after the search (:func:`time_side_by_side`): several models timed in
one process, interleaved, the order reversed each round (``inc_flow.search.speed``).

Split off the accuracy rule (``inc_flow.search.accuracy``) so that the search imports no torch.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from inc_flow.quant.ao import set_backend
from inc_flow.search.speed import Candidate, interleave

ROUNDS = 5  # rounds of the side-by-side round (fewer when fewer timed calls are configured)


@dataclass(frozen=True)
class LatencyResult:
    """Latency of one call, in milliseconds, over ``iterations`` timed runs."""

    median_ms: float
    p90_ms: float
    threads: int
    iterations: int


def measure_latency(
    fn: Callable[..., Any],
    inputs: Sequence[Any],
    warmup: int = 5,
    iterations: int = 20,
    threads: int | None = None,
) -> LatencyResult:
    """Time ``fn(*inputs)`` under ``torch.no_grad`` with a fixed intra-op thread count.

    Args:
        fn: a model or function.
        inputs: positional arguments of one call (e.g. a batch as a 1-tuple).
        warmup: untimed calls first.
        iterations: timed calls; the median and 90th percentile are reported.
        threads: ``torch.set_num_threads`` during the measurement (restored afterwards);
            None keeps the current count, which is then recorded.

    Returns:
        A LatencyResult.
    """
    if warmup < 0:
        raise ValueError(f"`warmup` must be >= 0, got warmup={warmup!r}")
    if iterations < 1:
        raise ValueError(f"`iterations` must be >= 1, got iterations={iterations!r}")
    if threads is not None and threads < 1:
        raise ValueError(f"`threads` must be >= 1, got threads={threads!r}")
    previous = torch.get_num_threads()
    used = previous if threads is None else threads
    times: list[float] = []
    try:
        torch.set_num_threads(used)
        with torch.no_grad():
            for _ in range(warmup):
                fn(*inputs)
            for _ in range(iterations):
                start = time.perf_counter()
                fn(*inputs)
                times.append((time.perf_counter() - start) * 1000.0)
    finally:
        torch.set_num_threads(previous)
    ordered = sorted(times)
    p90 = ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]
    return LatencyResult(
        median_ms=statistics.median(ordered), p90_ms=p90, threads=used, iterations=iterations
    )


def round_plan(iterations: int) -> tuple[int, int]:
    """Rounds, and timed calls per round, for ``iterations`` timed calls per model and batch:
    up to :data:`ROUNDS` rounds, the calls split among them (rounded up)."""
    rounds = max(1, min(ROUNDS, iterations))
    return rounds, math.ceil(iterations / rounds)


def time_side_by_side(
    candidates: Sequence[Candidate],
    inputs: Mapping[int, Any],
    call: Callable[[Any, Any], Any],
    rounds: int,
    warmup: int,
    iterations: int,
    threads: int | None,
) -> dict[str, dict[int, list[float]]]:
    """Each candidate timed ``rounds`` times at each batch size of ``inputs`` (batch -> inputs),
    interleaved in this process, the order reversed each round; each timing is the median of
    ``iterations`` calls of ``call(model, inputs)`` after ``warmup`` calls, on the candidate's
    int8 backend. The quantized engine in use before is restored afterwards.

    Returns:
        candidate name -> batch -> one median (ms) per round.
    """
    engine = torch.backends.quantized.engine

    def time_one(candidate: Candidate) -> dict[int, float]:
        if candidate.backend:
            set_backend(candidate.backend)
        model = candidate.model
        return {
            batch: measure_latency(
                lambda x: call(model, x), (x,), warmup, iterations, threads
            ).median_ms
            for batch, x in inputs.items()
        }

    try:
        return interleave(candidates, rounds, time_one)
    finally:
        torch.backends.quantized.engine = engine
