"""Study dashboards built from the MLflow record: one HTML report per study, and a
comparison across studies. Rows come from :mod:`inc_flow.record.rows`; this package draws."""

from dashboards.report import (
    ARTIFACT,
    comparison_html,
    log_report,
    study_html,
    write_comparison,
    write_report,
)

__all__ = [
    "ARTIFACT",
    "comparison_html",
    "log_report",
    "study_html",
    "write_comparison",
    "write_report",
]
