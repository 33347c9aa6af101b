"""The ``inc_flow`` logger's default for scripts, as INC prints its trial lines by default.

The CLI configures its own handler (``cli._setup_logging``). A script that calls
:func:`inc_flow.quantize`, ``fit`` or ``Quantization(...)()`` without configuring logging
would otherwise see only warnings (Python's last-resort handler). :func:`default_handler`
gives the ``inc_flow`` logger one stderr handler at ``INC_FLOW_LOG_LEVEL`` (default INFO)
unless the application has configured logging: any handler on the root logger or on
``inc_flow`` (a ``logging.NullHandler`` included) means "leave it alone".

Silence it with ``logging.getLogger("inc_flow").addHandler(logging.NullHandler())`` before
the call, or ``INC_FLOW_LOG_LEVEL=WARNING``.
"""

from __future__ import annotations

import logging
import os
import sys

from inc_flow.errors import ConfigError

LEVEL_ENV = "INC_FLOW_LOG_LEVEL"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FORMAT = "%(asctime)s [%(levelname)s] %(message)s"


def env_level() -> str:
    """``INC_FLOW_LOG_LEVEL`` (default INFO), checked."""
    level = os.environ.get(LEVEL_ENV, "INFO").strip().upper() or "INFO"
    if level not in LEVELS:
        raise ConfigError(LEVEL_ENV, f"must be one of {list(LEVELS)}, got {level!r}")
    return level


def default_handler(
    log: logging.Logger | None = None, root: logging.Logger | None = None
) -> logging.Handler | None:
    """Attach the stderr handler when nobody configured logging; the handler, or None.
    (``log``/``root``: the ``inc_flow`` and root loggers; other ones in tests.)"""
    log = log or logging.getLogger("inc_flow")
    root = root or logging.getLogger()
    if log.handlers or root.handlers:
        return None
    level = env_level()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT, "%H:%M:%S"))
    log.addHandler(handler)
    if log.level == logging.NOTSET:
        log.setLevel(level)
    return handler
