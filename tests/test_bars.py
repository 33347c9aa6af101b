"""Progress over batches (inc_flow.bars): bars only on a terminal, plain lines otherwise, the
batches themselves untouched."""

from __future__ import annotations

import io
import logging

import pytest

from inc_flow import bars
from inc_flow.errors import ConfigError

pytestmark = pytest.mark.no_mlflow


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def info_log(monkeypatch):
    monkeypatch.delenv(bars.MODE_ENV, raising=False)
    log = logging.getLogger("inc_flow")
    old = log.level
    log.setLevel(logging.INFO)
    yield log
    log.setLevel(old)


def test_a_log_that_is_not_a_terminal_gets_a_line_every_period_and_never_a_bar(info_log, caplog):
    stream = io.StringIO()  # a log file, a pipe
    ticks = iter(range(0, 1000, 4))  # each batch takes 4 s
    items = [object() for _ in range(7)]
    with caplog.at_level(logging.INFO, "inc_flow"):
        seen = list(bars.batches(items, "evaluation", stream=stream, clock=lambda: next(ticks)))
    assert seen == items  # the same batches, in order
    assert stream.getvalue() == ""
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["evaluation: 3/7 batches, 12 s", "evaluation: 6/7 batches, 24 s"]


def test_a_terminal_gets_a_bar_that_is_closed_when_the_pass_stops_early(info_log, monkeypatch):
    monkeypatch.setattr(bars, "BAR_DELAY_S", 0.0)
    stream = Terminal()
    data = bars.batches(range(100), "calibration", stream=stream)
    for i in data:
        if i == 2:
            break  # calibration stops at sampling_size
    drawn = stream.getvalue()
    assert "calibration" in drawn and "/100" in drawn
    data.close()  # what the loop's end does to the generator
    cleared = stream.getvalue()[len(drawn) :]
    assert cleared.strip() == "" and cleared.endswith("\r")  # leave=False: the bar is gone


def test_the_mode_follows_the_stream_the_log_level_and_the_environment(info_log, monkeypatch):
    assert bars.mode(Terminal()) == bars.BAR
    assert bars.mode(io.StringIO()) == bars.LINES
    monkeypatch.setenv(bars.MODE_ENV, "off")
    assert bars.mode(Terminal()) == bars.OFF
    assert list(bars.batches([1, 2], "x", stream=Terminal())) == [1, 2]
    monkeypatch.setenv(bars.MODE_ENV, "sometimes")
    with pytest.raises(ConfigError, match="INC_FLOW_PROGRESS.*'sometimes'"):
        bars.mode()
    monkeypatch.delenv(bars.MODE_ENV)
    info_log.setLevel(logging.WARNING)
    assert bars.mode(Terminal()) == bars.OFF
