"""A throwaway PostgreSQL cluster (scripts/postgres.sh) and an ``mlflow server`` on it, for the
scale-out tests and the workers benchmark; everything is stopped by PID.

``cluster(dir)`` yields the Optuna and MLflow database URLs; ``mlflow_server(url, artifacts,
log)`` yields the tracking URI ``http://127.0.0.1:<port>``; ``start_cli(args, log, env)`` starts
``inc-flow ARGS`` in its own session from the repository root.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tests.helpers.stores import BIN, ROOT, kill_group

SCRIPT = ROOT / "scripts" / "postgres.sh"


def postgres_missing() -> str | None:
    """Why PostgreSQL cannot be started here, or None."""
    if not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        return "PostgreSQL binaries not found (Debian package `postgresql`; .ci/run installs it)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "runuser is needed to start PostgreSQL as the `postgres` user"
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "psycopg2 is not installed (pip install psycopg2-binary)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def cluster(state: Path) -> Iterator[dict[str, str]]:
    """Start a cluster (state files in ``state``); yields ``{"optuna": url, "mlflow": url}``."""
    out = subprocess.run(
        ["bash", str(SCRIPT), "start", str(state)], capture_output=True, text=True, timeout=120
    )
    try:
        assert out.returncode == 0, f"postgres.sh start failed:\n{out.stdout}\n{out.stderr}"
        values = dict(line.split("=", 1) for line in out.stdout.split() if "=" in line)
        yield {"optuna": values["OPTUNA_URL"], "mlflow": values["MLFLOW_URL"]}
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", str(state)], timeout=60, check=False)


@contextlib.contextmanager
def mlflow_server(backend: str, artifacts: Path, log: Path) -> Iterator[str]:
    """``mlflow server`` on 127.0.0.1 against ``backend``; yields its tracking URI."""
    proc, uri = start_mlflow_server(backend, artifacts, log)
    try:
        yield uri
    finally:
        kill_group(proc)


def start_mlflow_server(
    backend: str, artifacts: Path, log: Path, port: int | None = None, workers: int = 2
) -> tuple[subprocess.Popen, str]:
    """``mlflow server`` on 127.0.0.1 (``port``, default a free one) against ``backend``, up
    (``/health`` answers); the process (stop it with ``kill_group``) and its tracking URI."""
    port = port or free_port()
    command = [
        str(BIN / "mlflow"),
        "server",
        "--backend-store-uri",
        backend,
        "--artifacts-destination",
        str(artifacts),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        # uvicorn kills a worker that misses its 5 s health check; a worker still importing
        # mlflow on a loaded machine does, and the server then never comes up.
        "--uvicorn-opts",
        "--timeout-worker-healthcheck 120",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"mlflow server exited:\n{log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"mlflow server not up:\n{log.read_text()[-3000:]}"
            time.sleep(0.3)
    except BaseException:
        kill_group(proc)
        raise
    return proc, uri


def start_cli(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    """``inc-flow ARGS`` in its own session, from the repository root, with ``env`` added."""
    full = {**os.environ, **env, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(BIN / "inc-flow"), *args],
            cwd=ROOT,
            env=full,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
