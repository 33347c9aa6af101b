"""A tracking store that fails in the middle of a study costs the record, never the result.

The MLflow tracker's recording methods are :func:`guarded`: the first one that fails (the
server stopped, the network gone, a full disk under the artifact store) marks the store down;
from then on this run sends nothing more to MLflow (each call would wait for MLflow's retries
again) and only notes what it did not record. Tuning goes on (the study is in the local Optuna
storage), the best model is saved, the log and the CLI say what is missing (the CLI exits 4),
and running the same command again once the store is back records the study: finished trials
are not run again, their runs are logged, the best model is logged and registered.

Errors inc_flow raises on purpose (:class:`~inc_flow.errors.IncFlowError`: bad input) are not
outages: they propagate.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from inc_flow.errors import IncFlowError
from inc_flow.search.records import why

logger = logging.getLogger("inc_flow")

F = TypeVar("F", bound=Callable[..., Any])


class Outage:
    """The state of the tracking store as this run saw it: ``error`` (the first failure, None
    while it works) and ``missed`` (what was not recorded, in order, each once)."""

    def __init__(self, uri: str | None) -> None:
        self.uri = uri
        self.error: str | None = None
        self._missed: dict[str, None] = {}

    @property
    def down(self) -> bool:
        return self.error is not None

    @property
    def missed(self) -> tuple[str, ...]:
        return tuple(self._missed)

    def failed(self, what: str, error: BaseException) -> None:
        """The store failed while recording ``what``: it is down for the rest of the run."""
        self._missed[what] = None
        if self.error is not None:  # a nested call failed first and said so
            return
        self.error = why(error)
        logger.warning(
            "MLflow (%s) failed while recording %s: %s. Tuning goes on without MLflow; this run "
            "sends nothing more to it. Run the same command again once the store is back to "
            "record the study (finished trials are not run again).",
            self.uri,
            what,
            self.error,
        )
        logger.debug("tracking failure", exc_info=error)

    def skipped(self, what: str) -> None:
        self._missed[what] = None

    def summary(self) -> str:
        """One line for the log and the CLI: the store, its first error, what was missed."""
        return (
            f"MLflow ({self.uri}) was unreachable after {self.error}; not recorded: "
            f"{', '.join(self.missed)}. Run the same command again once the store is back to "
            "record the study (finished trials are not run again)"
        )


def guarded(what: str | Callable[..., str]) -> Callable[[F], F]:
    """Decorate a recording method of an object with an ``outage`` (:class:`Outage`): skipped
    once the store is down, and a failure (other than an IncFlowError) marks it down.
    ``what`` names what the call records: a text, or a function of the call's arguments."""

    def decorate(method: F) -> F:
        @functools.wraps(method)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            text = what if isinstance(what, str) else what(*args, **kwargs)
            outage: Outage = self.outage
            if outage.down:
                outage.skipped(text)
                return None
            try:
                return method(self, *args, **kwargs)
            except IncFlowError:
                raise
            except Exception as e:  # noqa: BLE001 -- an outage: the record waits for a rerun
                outage.failed(text, e)
                return None

        return wrapper  # type: ignore[return-value]

    return decorate


__all__ = ["Outage", "guarded"]
