"""What processes sharing a store on one machine need: an exclusive file lock, the file of a
SQLite URL, and a process's ``host:pid`` identity and whether it is still alive.

SQLite stores (MLflow's ``mlflow.db``, the study's ``optuna.db``) are created and migrated by
whichever process opens them first; N processes started at once on a fresh directory would
race (alembic's "Online migration expected to match one row", a leftover ``_alembic_tmp_*``
table). :func:`sqlite_lock` serialises that first open: the lock file is ``<db>.lock``
beside the database. Imports nothing beyond the standard library (search/ and record/ use it).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger("inc_flow")

LOCK_SUFFIX = ".lock"


def sqlite_file(url: str | None) -> Path | None:
    """The database file of a ``sqlite:///path`` URL (absolute or relative); else None (a
    server database, ``:memory:``, or no URL)."""
    if not url or not url.startswith("sqlite:///"):
        return None
    path = url.removeprefix("sqlite:///").split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path)


@contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) while the block runs; other
    processes taking it wait. Where ``fcntl`` is missing (Windows), the block runs unlocked."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextmanager
def sqlite_lock(url: str | None) -> Iterator[None]:
    """The lock of a SQLite store (``<db>.lock`` beside the file) for creating or migrating it;
    nothing for other URLs, or when the database's folder does not exist (opening the store
    then fails with the store's own error)."""
    db = sqlite_file(url)
    if db is None or not db.parent.is_dir():
        yield
        return
    with file_lock(db.with_name(db.name + LOCK_SUFFIX)):
        yield


def this_process() -> str:
    """``host:pid`` of this process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def process_gone(owner: str) -> bool:
    """Whether the process ``owner`` (``host:pid``) is known to be gone: only a process of this
    host can be checked, so another host's, or a malformed ``owner``, counts as alive."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
