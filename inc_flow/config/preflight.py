"""What ``tune`` checks before any work, and ``check`` checks too: the folders it will write.

The config's own checks (keys, values, names, dataset roots, files to read) run when a
:class:`~inc_flow.config.sections.Config` is built. :func:`preflight` adds what depends on
where the run writes: the workspace and the output folder must be folders, or creatable
(nothing on the way is a regular file) and writable. ``inc-flow check`` and ``tune`` (and
:func:`inc_flow.quantize`) call it, so a config ``check`` passes does not fail there later.
Pure; no torch, no mlflow; writes nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

from inc_flow.config.problems import Problems
from inc_flow.config.sections import Config

DEFAULT_OUTPUT_ROOT = "outputs"


def default_output(cfg: Config) -> Path:
    """Where ``inc-flow tune`` saves without ``-o``: ``outputs/<model.name>`` (``model.name``
    is one folder name: the config rejects separators and ``..``)."""
    return Path(DEFAULT_OUTPUT_ROOT) / cfg.model.name


def folder_problem(path: str | os.PathLike[str]) -> str | None:
    """Why a run cannot write into the folder ``path`` (making it if needed), or None."""
    text = os.fspath(path)
    target = os.path.abspath(text)
    probe = target
    while not os.path.lexists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    where = "" if os.path.isabs(text) else f" (relative to {os.getcwd()})"
    if not os.path.isdir(probe):
        if probe == target:
            return f"must be a folder, got the file {text!r}{where}"
        return f"cannot be created: {probe!r} is a file, not a folder (for {text!r}{where})"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"is not writable: {probe!r} does not let this user write (for {text!r}{where})"
    return None


def preflight(
    cfg: Config,
    output: str | os.PathLike[str] | None = None,
    output_key: str = "output",
) -> None:
    """Raise one ConfigError for every folder the run could not write.

    Args:
        cfg: the config (``tuning.workspace.path``, and ``model.name`` for the default output).
        output: the output folder; None checks none (the Python API saves nothing unasked).
        output_key: how the user gave ``output`` (``--output``, ``output``), for the message.
    """
    p = Problems()
    problem = folder_problem(cfg.tuning.workspace.path)
    if problem:
        p.add("tuning.workspace.path", problem)
    if output is not None:
        problem = folder_problem(output)
        if problem:
            p.add(output_key, problem)
    p.raise_if_any()
