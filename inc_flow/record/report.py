"""The study report and the study comparison as files: fetch the studies, render their rows
through a renderer, write the file, and log the report on the study's parent run.

The renderer is found through the Python entry point group ``inc_flow.renderers`` (``html``
by default, provided by the ``inc_flow_dashboards`` package that ships with inc_flow), so
inc_flow never imports the package that draws its dashboards.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol

from inc_flow.errors import TrackingError
from inc_flow.record import fetch
from inc_flow.record import keys as k
from inc_flow.record.rows import StudyRuns

RENDERERS = "inc_flow.renderers"  # the entry point group
DEFAULT_RENDERER = "html"


class Renderer(Protocol):
    """Turns study rows (see :mod:`inc_flow.record.rows`) into one self-contained document."""

    def study(self, study: StudyRuns) -> str:
        """The report of one study."""
        ...

    def comparison(self, studies: Sequence[StudyRuns]) -> str:
        """Several studies side by side."""
        ...


def renderer(name: str = DEFAULT_RENDERER) -> Renderer:
    """The renderer installed as entry point ``name`` in group ``inc_flow.renderers``.

    Raises:
        TrackingError: no such renderer is installed.
    """
    found = entry_points(group=RENDERERS, name=name)
    if not found:
        raise TrackingError(
            f"no inc_flow report renderer {name!r} is installed (entry point group "
            f"{RENDERERS!r}); it comes with inc_flow's inc_flow_dashboards package: install "
            "inc_flow from its checkout with `pip install -e .` (or reinstall it)"
        )
    return next(iter(found)).load()


def write_report(
    output: str | Path, experiment: str | None, run_id: str | None = None, client: Any = None
) -> Path:
    """Fetch one study (default: the experiment's latest) and write its report to ``output``."""
    study = fetch.fetch_study(experiment, run_id or None, client)
    return _write(output, renderer().study(study))


def write_comparison(
    output: str | Path,
    experiments: Sequence[str] = (),
    run_ids: Sequence[str] = (),
    client: Any = None,
) -> Path:
    """Fetch every study of ``experiments`` and each parent run in ``run_ids``; write the
    comparison to ``output``."""
    studies = fetch.fetch_studies(experiments, run_ids, client)
    return _write(output, renderer().comparison(studies))


def log_report(
    client: Any, parent_run_id: str, experiment: str | None, directory: str | Path | None = None
) -> Path | None:
    """Write the study's report and log it as ``report.html`` on its parent run.

    Args:
        client: an ``MlflowClient`` (None: one for the current tracking URI).
        parent_run_id: the study's parent run (may still be RUNNING).
        experiment: the parent run's experiment name (None: looked up from the run).
        directory: where the file is kept (None: nowhere; a temporary directory is used for
            the upload and removed).

    Returns:
        The written file, or None when no ``directory`` keeps it.
    """
    client = fetch.mlflow_client(client)
    if directory is None:
        with tempfile.TemporaryDirectory(prefix="inc_flow_report_") as tmp:
            log_report(client, parent_run_id, experiment, tmp)
        return None
    path = write_report(Path(directory) / k.ARTIFACT_REPORT, experiment, parent_run_id, client)
    client.log_artifact(parent_run_id, str(path))
    return path


def _write(output: str | Path, text: str) -> Path:
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


__all__ = ["Renderer", "log_report", "renderer", "write_comparison", "write_report"]
