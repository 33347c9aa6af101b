"""Where to look after a study: the MLflow UI link to its parent run, and the "next steps"
block ``inc-flow tune`` prints at the end (``Outcome.next_steps`` in the Python API).

MLflow 3's UI opens an experiment in its GenAI view unless told otherwise; the run page link
carries ``?workflowType=machine_learning`` (the UI's own query parameter) so it opens the
training view, where the study's runs are. The link has the form MLflow itself prints for a
run (``<server>/#/experiments/<id>/runs/<run id>``). For a store without a server (SQLite, a
folder) the link is for ``mlflow ui`` on its default address, and the block says how to start
it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from inc_flow.record import keys as k

WORKFLOW = "workflowType=machine_learning"
LOCAL_UI = "http://127.0.0.1:5000"  # `mlflow ui`'s default address


def ui_base(uri: str) -> tuple[str, str]:
    """(the UI's base URL, how to start it: "" when ``uri`` is a tracking server)."""
    if uri.startswith(("http://", "https://")):
        return uri.rstrip("/"), ""
    return LOCAL_UI, f"mlflow ui --backend-store-uri {uri}"


def run_url(base: str, experiment_id: str, run_id: str) -> str:
    """The run's page in the UI's training view."""
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}?{WORKFLOW}"


@dataclass(frozen=True)
class Steps:
    """What the next-steps block says; empty fields are left out."""

    url: str = ""
    start_ui: str = ""  # the command that starts the UI, for a store without a server
    model: str = ""  # models:/NAME@champion, or why there is none
    report: str = ""
    load: tuple[str, ...] = ()

    def text(self) -> str:
        lines = ["Next steps:"]
        if self.url:
            lines.append(f"  MLflow UI (parent run): {self.url}")
            if self.start_ui:
                lines.append(f"    start the UI first:   {self.start_ui}")
        if self.model:
            lines.append(f"  registered model:       {self.model}")
        if self.report:
            lines.append(f"  HTML report:            {self.report}")
        for i, line in enumerate(self.load):
            lines.append(f"  {'load it:' if i == 0 else '':<23} {line}")
        return "\n".join(lines) if len(lines) > 1 else ""


def model_line(recorder: Any) -> str:
    """``models:/NAME@champion (version N)``, or why no version is the champion."""
    version = recorder.version
    if version is None:
        why = recorder.not_registered or "it was not registered"
        return f"none: {why}"
    name, number = version.name, version.version
    aliases = list(getattr(version, "aliases", ()) or ())
    if k.ALIAS_CHAMPION in aliases:
        return f"models:/{name}@{k.ALIAS_CHAMPION} (version {number})"
    reason = (version.tags or {}).get(k.VERSION_ALIAS_REASON, "")
    held = f"@{aliases[0]}" if aliases else "no alias"
    text = f"models:/{name}/{number} is {held}, not @{k.ALIAS_CHAMPION}"
    return f"{text}: {reason}" if reason else text


__all__ = ["Steps", "model_line", "run_url", "ui_base"]
