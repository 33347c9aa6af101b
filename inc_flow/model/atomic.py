"""Replace an output directory's files all at once, so a kill or a full disk never leaves a
mix of an old and a new file.

:func:`staging` gives a temporary directory beside the output (``.<name>.saving-XXXX`` in the
same parent, so the final renames stay on one filesystem); the caller writes each file with
:func:`write_synced` (data fsynced); :func:`commit` fsyncs the directory and swaps it in:

- the output does not exist, or holds only the files being written: the previous directory
  is renamed aside (``.<name>.old-XXXX``), the new one renamed to the output's name, the
  parent fsynced, the old one removed. Between the two renames the output does not exist
  for an instant: a reader then finds no files (a clear error), never a mixed pair. A kill in
  that instant leaves the previous output complete under ``.<name>.old-XXXX``.
- the output holds other files too (it is not ours to move): the staging directory is made
  inside it, the old configure file is removed first, then each new file is renamed over
  the old one, the configure file last.

An ``OSError`` (a full disk: ENOSPC) removes the staging directory and leaves a previous
output as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from inc_flow.errors import SaveLoadError
from inc_flow.model.faults import AFTER_OLD_MOVED, fault_point

STAGING, OLD = ".saving-", ".old-"


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (new names, renames) durable; a no-op where directories
    cannot be opened (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_synced(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Create ``path``, fill it with ``write(file)``, flush and fsync it.

    torch reports a failed write (ENOSPC) as a RuntimeError whose context is the OSError;
    that OSError is raised instead, so every write failure is an OSError naming the file.
    """
    with path.open("xb") as f:
        try:
            write(f)
        except RuntimeError as e:
            cause = e.__cause__ or e.__context__
            if isinstance(cause, OSError):
                raise OSError(cause.errno, cause.strerror, str(path)) from e
            raise OSError(f"cannot write {str(path)!r}: {e}") from e
        f.flush()
        os.fsync(f.fileno())


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _in_place(out: Path, names: Sequence[str]) -> bool:
    """True when ``out`` holds entries besides ``names`` (and our own staging leftovers)."""
    if not out.is_dir():
        return False
    return any(p.name not in names and STAGING not in p.name for p in out.iterdir())


@contextlib.contextmanager
def staging(out: Path, names: Sequence[str]) -> Iterator[Path]:
    """A fresh temporary directory to write ``out``'s files into; removed on any error."""
    if out.exists() and not out.is_dir():
        raise SaveLoadError(f"the output directory {str(out)!r} is a file; choose a directory")
    where = out if _in_place(out, names) else out.parent
    try:
        where.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}{STAGING}", dir=where))
    except OSError as e:
        raise SaveLoadError(f"cannot write the output directory {str(out)!r}: {e}") from e
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def commit(tmp: Path, out: Path, names: Sequence[str]) -> None:
    """Put the files ``names`` written in ``tmp`` (by :func:`staging`) in place at ``out``.

    ``names`` are in write order; the last one is the file a reader opens first (the
    configure file), which an in-place commit removes first and puts back last.
    """
    fsync_dir(tmp)
    if tmp.parent == out:  # in place: ``out`` holds files that are not ours
        old = out / names[-1]
        if old.exists():
            old.unlink()
        fsync_dir(out)
        fault_point(AFTER_OLD_MOVED)
        for name in names:
            os.replace(tmp / name, out / name)
        fsync_dir(out)
        tmp.rmdir()
        return
    if not out.exists():
        os.rename(tmp, out)
        fsync_dir(out.parent)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{out.name}{OLD}", dir=out.parent))
    os.rename(out, aside / out.name)
    fault_point(AFTER_OLD_MOVED)
    try:
        os.rename(tmp, out)
    except OSError:
        os.rename(aside / out.name, out)  # put the previous output back
        raise
    fsync_dir(out.parent)
    shutil.rmtree(aside, ignore_errors=True)


def leftovers(out: Path) -> list[Path]:
    """Previous outputs moved aside by a :func:`commit` that was killed mid-swap."""
    if not out.parent.is_dir():
        return []
    return sorted(out.parent.glob(f".{glob_escape(out.name)}{OLD}*/{glob_escape(out.name)}"))


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)
