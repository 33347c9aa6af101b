"""Collecting config problems and wording them: Problems, ConfigError, message helpers.

Every check adds a ``(key path, message)`` pair to a :class:`Problems` collector, so that one
:class:`~inc_flow.errors.ConfigError` can report every problem found in a config.
"""

from __future__ import annotations

import difflib
import reprlib
from collections.abc import Iterable, Mapping
from typing import Any

from inc_flow.config.names import INC_UNSUPPORTED
from inc_flow.errors import ConfigError


def join(prefix: str, key: Any) -> str:
    """``join("tuning", "random_seed") == "tuning.random_seed"``; an empty side is dropped."""
    key = str(key)
    if not prefix:
        return key
    return f"{prefix}.{key}" if key else prefix


class Problems:
    """Collects ``(key path, message)`` pairs; ``raise_if_any`` turns them into one error."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def __len__(self) -> int:
        return len(self.items)

    def add(self, path: str, message: str) -> None:
        self.items.append((path, message))

    def merge(self, prefix: str, error: ConfigError) -> None:
        """Adds the problems of ``error``, raised for the section found at ``prefix``."""
        for path, message in problems_of(error):
            self.add(join(prefix, path), message)

    def raise_if_any(self, note: str = "") -> None:
        if self.items:
            raise config_error(self.items, note)


def config_error(items: Iterable[tuple[str, str]], note: str = "") -> ConfigError:
    """One ConfigError for all problems: ``path`` is the first path, one line per problem."""
    items = tuple(items)
    (path, message), rest = items[0], items[1:]
    lines = [message] + [f"`{p}` {m}" if p else m for p, m in rest]
    if note:
        lines.append(note)
    error = ConfigError(path, "\n".join(lines))
    error.problems = items  # type: ignore[attr-defined]  # read back by problems_of
    return error


def problems_of(error: ConfigError) -> tuple[tuple[str, str], ...]:
    """The ``(key path, message)`` pairs of ``error`` (one pair unless built by config_error)."""
    return getattr(error, "problems", ((error.path, str(error)),))


_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxlevel, _SHORT_REPR.maxstring, _SHORT_REPR.maxother = 3, 40, 40


def _small(value: Any, limit: int = 200) -> bool:
    """True when ``value`` holds fewer than ``limit`` nested items, so its repr is cheap.

    yaml aliases let a few lines of text build a structure with billions of items
    ("billion laughs"); a full repr of it would take hours.
    """
    stack, count = [value], 0
    while stack:
        count += 1
        if count > limit:
            return False
        item = stack.pop()
        if isinstance(item, Mapping):
            stack += [*item.keys(), *item.values()]
        elif isinstance(item, (list, tuple, set)):
            stack += item
    return True


def show(value: Any) -> str:
    """The value as messages echo it: its repr, shortened, plus the type for containers."""
    text = repr(value) if _small(value) else _SHORT_REPR.repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    if value is None or isinstance(value, (str, bool, int, float)):
        return text
    return f"{text} ({type(value).__name__})"


def unknown_key(key: Any, allowed: Iterable[str], section: str) -> str:
    """Message for a key the closed schema does not have."""
    reason = INC_UNSUPPORTED.get(section, {}).get(str(key))
    if reason:
        return reason
    allowed = list(allowed)
    return f"is not a known key; allowed here: {allowed}{did_you_mean(key, allowed)}"


def did_you_mean(word: Any, options: Iterable[Any]) -> str:
    if not isinstance(word, (str, int, float)):
        return ""  # a container is no misspelt name (and its str may be huge)
    lower = {str(o).lower(): o for o in options}
    match = difflib.get_close_matches(str(word).lower(), list(lower), n=1, cutoff=0.6)
    return f"; did you mean {lower[match[0]]!r}?" if match else ""


def not_one_of(value: Any, allowed: Iterable[Any]) -> str:
    allowed = list(allowed)
    return f"must be one of {allowed}, got {show(value)}{did_you_mean(value, allowed)}"


def unknown_name(what: str, value: Any, allowed: Iterable[Any]) -> str:
    allowed = list(allowed)
    return f"unknown {what} {value!r}; expected one of {allowed}{did_you_mean(value, allowed)}"
