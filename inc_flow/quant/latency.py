"""Latency timing of a model or function: a fixed thread count, warmup, median and p90.

Split off the accuracy rule (``inc_flow.search.accuracy``) so that the search imports no torch.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch


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
