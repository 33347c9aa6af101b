"""The dashboards in a real browser, and the study in the real MLflow UI (headless Chromium).

Chromium and chromedriver are Debian's ``chromium`` and ``chromium-driver`` (scripts/setup.sh
installs them). Chromedriver is driven through its W3C HTTP API with urllib, so no selenium.
Screenshots land in the test's tmp dir (``--basetemp`` makes them easy to find).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from inc_flow.record import fetch
from inc_flow.record.report import log_report, write_comparison
from tests.toys import tiny_study

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
WINDOW = "--window-size=1280,2000"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None or CHROMEDRIVER is None,
        reason="headless Chromium missing: apt-get install chromium chromium-driver "
        "(scripts/setup.sh does)",
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http(method: str, url: str, body: Any = None, timeout: float = 60) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read() or b"null")


def _wait(check: Callable[[], Any], seconds: float, what: str) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    last: Any = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except (OSError, urllib.error.URLError, ValueError) as e:
            last = e
        time.sleep(0.3)
    pytest.fail(f"timed out after {seconds} s waiting for {what} (last error: {last!r})")


def _stop(proc: subprocess.Popen) -> None:
    """End the process group we started (SIGTERM, then SIGKILL)."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)


def _screenshot(url: str, png: Path) -> Path:
    """``chromium --headless --screenshot`` with a fresh profile."""
    with tempfile.TemporaryDirectory(prefix="inc_flow_chromium_") as profile:
        cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={png}", WINDOW]
        proc = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=120)
    assert png.is_file() and png.stat().st_size > 10_000, proc.stderr[-2000:]
    return png


class Browser:
    """A chromedriver W3C session: navigate, run a script, read the console, screenshot."""

    def __init__(self, base: str, session: str) -> None:
        self.url = f"{base}/session/{session}"

    def get(self, url: str) -> None:
        _http("POST", f"{self.url}/url", {"url": url})

    def run(self, script: str) -> Any:
        return _http("POST", f"{self.url}/execute/sync", {"script": script, "args": []})["value"]

    def console(self) -> list[dict[str, Any]]:
        """Browser log entries since the last call (chromedriver's log endpoint)."""
        return _http("POST", f"{self.url}/se/log", {"type": "browser"})["value"]

    def screenshot(self, png: Path) -> Path:
        png.write_bytes(base64.b64decode(_http("GET", f"{self.url}/screenshot")["value"]))
        return png


@contextmanager
def browser(tmp_path: Path) -> Iterator[Browser]:
    port = _free_port()
    log = (tmp_path / "chromedriver.log").open("w")
    proc = subprocess.Popen(
        [CHROMEDRIVER, f"--port={port}"], stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    session = None
    try:
        _wait(lambda: _http("GET", f"{base}/status", timeout=5)["value"]["ready"], 30, "driver")
        profile = tmp_path / f"profile-{port}"
        caps = {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [*FLAGS, f"--user-data-dir={profile}", WINDOW],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        }
        reply = _http("POST", f"{base}/session", {"capabilities": {"alwaysMatch": caps}}, 120)
        session = reply["value"]["sessionId"]
        yield Browser(base, session)
    finally:
        if session is not None:
            try:
                _http("DELETE", f"{base}/session/{session}", timeout=30)
            except (OSError, urllib.error.URLError):
                pass  # the driver is stopped next anyway
        _stop(proc)
        log.close()


PAGE_FACTS = """
const svgs = [...document.querySelectorAll('figure svg')];
return {
  svgs: svgs.length,
  drawn: svgs.filter(s => s.getBoundingClientRect().width > 100).length,
  tables: [...document.querySelectorAll('table')].map(t => t.id),
  rows: Object.fromEntries([...document.querySelectorAll('table')].map(
    t => [t.id, t.tBodies[0].rows.length])),
  fetched: performance.getEntriesByType('resource').map(e => e.name),
  title: document.title,
};
"""


def _severe(entries: list[dict[str, Any]]) -> list[str]:
    return [e["message"] for e in entries if e.get("level") == "SEVERE"]


@pytest.fixture
def studies(tmp_path, mlflow_tracking) -> str:
    """Two tiny studies (x86, onednn) in the test's store, each with its report logged."""
    tiny_study(tmp_path, "x86")
    tiny_study(tmp_path, "onednn")
    client = MlflowClient()
    for study in fetch.fetch_studies(["tiny"], client=client):
        log_report(client, study.run_id, "tiny", directory=tmp_path / study.run_id)
    return mlflow_tracking


def test_reports_render_in_headless_chromium(studies, tmp_path):
    client = MlflowClient()
    study = fetch.fetch_study("tiny", client=client)
    page = tmp_path / study.run_id / "report.html"
    comparison = write_comparison(tmp_path / "comparison.html", ["tiny"], client=client)
    shot = _screenshot(page.as_uri(), tmp_path / "report.png")
    _screenshot(comparison.as_uri(), tmp_path / "comparison.png")
    print(f"\nscreenshots: {shot} {tmp_path / 'comparison.png'}")
    with browser(tmp_path) as b:
        b.get(page.as_uri())
        facts = b.run(PAGE_FACTS)
        assert _severe(b.console()) == []
        assert facts["svgs"] == facts["drawn"] == 4  # scatter, precision map, op types, time
        assert facts["tables"] == ["trials", "op-stats", "time"]
        assert facts["rows"]["trials"] == 2 and facts["rows"]["op-stats"] > 0
        assert facts["fetched"] == []  # nothing loaded beyond the file itself
        assert study.name in facts["title"]

        b.get(comparison.as_uri())
        facts = b.run(PAGE_FACTS)
        assert _severe(b.console()) == []
        assert facts["svgs"] == facts["drawn"] == 2
        assert facts["tables"] == ["studies"] and facts["rows"]["studies"] == 2
        assert facts["fetched"] == []

        # the console check is not vacuous: an error on a page is seen
        bad = tmp_path / "bad.html"
        bad.write_text("<!DOCTYPE html><script>console.error('planted')</script>")
        b.get(bad.as_uri())
        assert any("planted" in m for m in _severe(b.console()))


def _ui_settings(exp_id: str, parents: list[str]) -> str:
    """A script for MLflow 3's UI local storage: it opens in GenAI mode with an assistant
    panel, while runs live under "Model training"; expand the studies' trial runs and show
    a few of their columns (the UI's own keys and state layout)."""
    view = {
        "runsExpanded": dict.fromkeys(parents, True),
        "selectedColumns": [
            "tags.`inc_flow.state`", "params.`backend`", "params.`n_int8_ops`",
            "metrics.`accuracy`", "metrics.`latency_ms`",
        ],
    }  # fmt: skip
    items = {
        "mlflow.workflowType_v1": json.dumps("machine_learning"),
        "mlflow.assistant.panelOpen_v1": "false",
        "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true",
        f'MLflowLocalStorage-1.1-ExperimentPage-["{exp_id}"]-ReactComponentState': json.dumps(
            view
        ),
    }
    return "".join(
        f"localStorage.setItem({json.dumps(k)}, {json.dumps(v)});" for k, v in items.items()
    )


@contextmanager
def mlflow_ui(uri: str, cwd: Path) -> Iterator[str]:
    """``mlflow ui`` on 127.0.0.1 and a free port; stopped by its process group."""
    port = _free_port()
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    log = (cwd / "mlflow_ui.log").open("w")
    proc = subprocess.Popen(
        [str(mlflow_bin), "ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
         "--port", str(port)],
        cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            assert proc.poll() is None, (cwd / "mlflow_ui.log").read_text()[-3000:]
            with urllib.request.urlopen(f"{base}/health", timeout=5) as resp:
                return resp.status == 200

        _wait(up, 120, "mlflow ui")
        yield base
    finally:
        _stop(proc)
        log.close()


def test_mlflow_ui_lists_the_study(studies, tmp_path):
    study = fetch.fetch_study("tiny", client=MlflowClient())
    exp_id = str(study.parent["experiment_id"])
    with mlflow_ui(studies, tmp_path) as base:
        found = _http("POST", f"{base}/api/2.0/mlflow/runs/search",
                      {"experiment_ids": [exp_id], "max_results": 100})["runs"]  # fmt: skip
        tags = {r["info"]["run_id"]: {t["key"]: t["value"] for t in r["data"]["tags"]}
                for r in found}  # fmt: skip
        parents = [i for i, t in tags.items() if t.get("inc_flow.role") == "study"]
        assert len(parents) == 2 and study.run_id in parents
        children = [i for i, t in tags.items() if t.get("mlflow.parentRunId") == study.run_id]
        assert sorted(children) == sorted(study.trials["run_id"]) and len(children) == 2

        with browser(tmp_path) as b:
            b.get(f"{base}/")
            b.run(_ui_settings(exp_id, parents))
            b.get(f"{base}/#/experiments/{exp_id}")
            text = "return document.body.innerText"
            # the runs' names as the UI lists them: the parent's readable name, trial-000-<plan>
            parent_name = tags[study.run_id]["mlflow.runName"]
            trial_name = next(t["mlflow.runName"] for i, t in tags.items() if i in children
                              and t["mlflow.runName"].startswith("trial-000"))  # fmt: skip

            def listed() -> bool:
                shown = b.run(text)
                return parent_name in shown and trial_name in shown

            _wait(listed, 120, "runs")
            time.sleep(1.0)  # let the table settle before the picture
            shot = b.screenshot(tmp_path / "mlflow_experiment.png")
            b.get(f"{base}/#/experiments/{exp_id}/runs/{study.run_id}/artifacts/report.html")
            frame = "return document.querySelectorAll('iframe').length"
            _wait(lambda: b.run(frame), 60, "the report in the artifact viewer")
            time.sleep(2.0)  # let the iframe paint
            b.screenshot(tmp_path / "mlflow_report_artifact.png")
    print(f"\nscreenshots: {shot} {tmp_path / 'mlflow_report_artifact.png'}")


def test_mlflow_run_report_entry_point(studies, tmp_path):
    """``mlflow run -e report`` writes the file and logs it on the project run."""
    out = tmp_path / "entry" / "report.html"
    root = Path(__file__).resolve().parents[1]
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    cmd = [
        str(bin_dir / "mlflow"), "run", str(root), "-e", "report", "--env-manager", "local",
        "--experiment-name", "reports", "-P", "experiment=tiny", "-P", f"output={out}",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "<svg" in out.read_text()
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("reports").experiment_id])
    assert "report.html" in {a.path for a in client.list_artifacts(run.info.run_id)}


VIEW_FACTS = """
return {
  text: document.body.innerText,
  links: [...document.querySelectorAll('a')].map(a => [a.textContent, a.getAttribute('href')]),
};
"""


def _training_view(facts: dict[str, Any]) -> bool:
    """MLflow 3's training view: its side bar links "Runs" and the model registry; the GenAI
    view links traces, judges and review queues instead."""
    names = {name for name, _ in facts["links"]}
    runs = [href for name, href in facts["links"] if name == "Runs"]
    return bool(runs) and "workflowType=machine_learning" in runs[0] and "Judges" not in names


def test_the_printed_link_opens_the_training_view(tmp_path, mlflow_tracking):
    """The next-steps block's link, opened in a fresh browser profile (nothing remembered),
    shows the study's parent run in the training view; the same page without the link's
    query opens in the GenAI view (the check can fail). Screenshots: the parent run, the
    report the block names."""
    import re

    import torch

    from inc_flow import quantize
    from tests.toys import TinyNet

    torch.manual_seed(0)
    conf = {
        "model": {"name": "tiny", "factory": "tests.toys:TinyNet"},
        "tuning": {
            "workspace": {"path": str(tmp_path / "ws")},
            "exit_policy": {"timeout": 600, "max_trials": 1},
            "accuracy_criterion": {"absolute": 0.5},
        },
    }
    x = torch.randn(8, 1, 20, 20)
    outcome = quantize(conf, model=TinyNet().eval(), calib_dataloader=[x], eval_func=lambda m: 0.9)
    print(f"\n{outcome.next_steps}")
    found = re.search(
        r"http://127\.0\.0\.1:5000(/#/experiments/\S+/runs/(\w+)\S*)", outcome.next_steps
    )
    assert found, outcome.next_steps
    link, run_id = found[1], found[2]
    name = MlflowClient().get_run(run_id).info.run_name
    report = Path(re.search(r"HTML report: +(\S+)", outcome.next_steps)[1])
    with mlflow_ui(mlflow_tracking, tmp_path) as base:
        with browser(tmp_path) as b:
            b.get(f"{base}{link}")
            facts = _wait(lambda: (f := b.run(VIEW_FACTS)) and name in f["text"] and f, 120, "run")
            time.sleep(1.0)  # let the page settle before the picture
            shot = b.screenshot(tmp_path / "mlflow_parent_run.png")
            assert _training_view(facts), facts["links"]
        with browser(tmp_path) as b:  # a fresh profile again, the link without its query
            b.get(f"{base}{link.split('?')[0]}")
            time.sleep(3.0)
            facts = _wait(lambda: (f := b.run(VIEW_FACTS)) and f["links"] and f, 60, "page")
            assert not _training_view(facts)
    _screenshot(report.as_uri(), tmp_path / "report.png")
    print(f"screenshots: {shot} {tmp_path / 'report.png'}")
