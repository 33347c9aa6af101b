"""Progress over the batches of a long pass (calibration, evaluation): a tqdm bar on stderr
when stderr is a terminal, else a plain ``inc_flow`` log line every :data:`PERIOD_S` seconds,
so a log file never holds bar redraws. Only the iteration is wrapped: every batch is yielded
as it comes, in order, so nothing computed changes.

``INC_FLOW_PROGRESS`` forces a mode: ``bar``, ``lines`` or ``off``; unset, the mode follows
stderr. Bars appear only for a pass that takes over :data:`BAR_DELAY_S` (a fast evaluation
draws nothing) and vanish when it ends (the log lines stay the record).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from inc_flow.errors import ConfigError

logger = logging.getLogger("inc_flow")

T = TypeVar("T")
MODE_ENV = "INC_FLOW_PROGRESS"
BAR, LINES, OFF = "bar", "lines", "off"
PERIOD_S = 10.0  # a progress line at most this often (not a TTY)
BAR_DELAY_S = 2.0  # a bar is drawn only for a pass taking longer


def mode(stream: Any = None) -> str:
    """``INC_FLOW_PROGRESS`` if set (checked), else ``bar`` when ``stream`` (default stderr) is
    a terminal and ``lines`` otherwise; ``off`` when the ``inc_flow`` log is quieter than INFO
    (who silenced the log wants no bars either)."""
    forced = os.environ.get(MODE_ENV, "").strip().lower()
    if forced:
        if forced not in (BAR, LINES, OFF):
            raise ConfigError(MODE_ENV, f"must be one of {[BAR, LINES, OFF]}, got {forced!r}")
        return forced
    if not logger.isEnabledFor(logging.INFO):
        return OFF
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return BAR if isatty is not None and isatty() else LINES


def batches(
    items: Iterable[T],
    what: str,
    total: int | None = None,
    *,
    stream: Any = None,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[T]:
    """``items``, with progress on ``what`` (e.g. ``"evaluation"``) while they are consumed.

    Args:
        items: the batches (a dataloader); iterated once, as the caller would.
        what: the pass, as the bar and lines name it.
        total: the number of batches when known (default ``len(items)`` if it has one).
        stream: the bar's stream (default stderr; the mode is decided on it).
        clock: seconds, for the periodic lines (tests pass a fake one).
    """
    if total is None:
        try:
            total = len(items)  # type: ignore[arg-type]
        except TypeError:
            total = None
    chosen = mode(stream)
    if chosen == BAR:
        return _bar(items, what, total, sys.stderr if stream is None else stream)
    if chosen == LINES:
        return _lines(items, what, total, clock)
    return iter(items)


def _bar(items: Iterable[T], what: str, total: int | None, stream: Any) -> Iterator[T]:
    from tqdm import tqdm

    bar = tqdm(
        items, desc=what, total=total, unit="batch", file=stream, leave=False,
        delay=BAR_DELAY_S, dynamic_ncols=True,
    )  # fmt: skip
    try:
        yield from bar
    finally:
        bar.close()  # a pass stopped early (calibration's sampling_size, early rejection)


def _lines(
    items: Iterable[T], what: str, total: int | None, clock: Callable[[], float]
) -> Iterator[T]:
    start = last = clock()
    done = 0
    of = f"/{total}" if total else ""
    for item in items:
        yield item
        done += 1
        now = clock()
        if now - last >= PERIOD_S:
            last = now
            logger.info("%s: %d%s batches, %.0f s", what, done, of, now - start)


__all__ = ["batches", "mode"]
