"""Study dashboards, installed as ``inc_flow_dashboards``: one HTML report per study, and a
comparison across studies. Rows come from :mod:`inc_flow.record.rows`; this package draws and
imports no mlflow.

:data:`renderer` is inc_flow's ``html`` renderer (entry point group ``inc_flow.renderers``),
which :mod:`inc_flow.record.report` loads to write and log the files.
"""

from collections.abc import Sequence

from inc_flow.record.rows import StudyRuns

from .report import comparison_html, study_html


class HtmlRenderer:
    """Renders studies as self-contained HTML pages (an ``inc_flow.record.report.Renderer``)."""

    def study(self, study: StudyRuns) -> str:
        """The study report (see :func:`study_html`)."""
        return study_html(study)

    def comparison(self, studies: Sequence[StudyRuns]) -> str:
        """The study comparison (see :func:`comparison_html`)."""
        return comparison_html(studies)


renderer = HtmlRenderer()

__all__ = ["HtmlRenderer", "comparison_html", "renderer", "study_html"]
