"""How many intra-op threads the logged model's ``predict`` runs with.

Resolved once, when the model is loaded (:func:`predict_threads`); the first that is set wins:

1. the environment variable ``INC_FLOW_NUM_THREADS`` of the loading process: a positive
   integer, or ``auto`` for torch's default (empty counts as unset);
2. the count logged with the model: ``tracking.predict_threads`` in the config, or
   ``log_model(threads=...)`` (written to the sidecar; absent when not set);
3. otherwise none: ``predict`` leaves torch's intra-op thread count alone and runs with what
   the calling thread has, which is torch's default (one thread per physical core, or
   ``OMP_NUM_THREADS``) unless the process changed it with ``torch.set_num_threads``.

With a count, ``predict`` sets it for the call (:func:`intra_op_threads`) and restores the
previous count afterwards, so the caller's process keeps its own setting. It is set per call,
not once at load, because torch's OpenMP thread count belongs to the calling thread: a count
set by the loading thread does not reach a server's request threads. Setting it costs about
a microsecond and is skipped when the count is already in force.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping

import torch

from inc_flow.errors import SaveLoadError

ENV_THREADS = "INC_FLOW_NUM_THREADS"
AUTO = "auto"  # INC_FLOW_NUM_THREADS=auto: torch's default, whatever the model was logged with


def check_threads(value: object, where: str) -> int | None:
    """``value`` as a thread count: None (torch's default) or an int >= 1.

    Raises:
        SaveLoadError: naming ``where`` and echoing the value.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SaveLoadError(
            f"{where} must be a positive integer (intra-op threads) or None (torch's "
            f"default), got {value!r}"
        )
    return value


def predict_threads(logged: int | None, environ: Mapping[str, str] | None = None) -> int | None:
    """The thread count ``predict`` uses: ``INC_FLOW_NUM_THREADS``, else ``logged``; None
    means torch's default (``predict`` leaves the count alone).

    Raises:
        SaveLoadError: ``INC_FLOW_NUM_THREADS`` is neither a positive integer nor ``auto``.
    """
    raw = (os.environ if environ is None else environ).get(ENV_THREADS, "").strip()
    if not raw:
        return check_threads(logged, "the logged `threads`")
    if raw.lower() == AUTO:
        return None
    try:
        count = int(raw)
    except ValueError:
        count = 0
    if count < 1:
        raise SaveLoadError(
            f"environment variable {ENV_THREADS} must be a positive integer (predict's "
            f"intra-op threads) or {AUTO!r} (torch's default), got {raw!r}"
        )
    return count


@contextlib.contextmanager
def intra_op_threads(count: int | None) -> Iterator[None]:
    """Run the block with ``count`` intra-op threads in this thread, restored afterwards;
    None, or the count already in force, changes nothing."""
    previous = torch.get_num_threads()
    if count is None or count == previous:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
