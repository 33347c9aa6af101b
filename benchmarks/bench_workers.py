"""Trials per minute with 1 and 2 ``inc-flow tune --worker`` processes on one study.

The study is the toy ``tests.toys:sleepy_net`` on dummy data: each forward pass sleeps
``--sleep`` seconds (the CPU stays free), so a trial has a fixed, evaluation-like wall time and
the table shows what scale-out adds or costs around it: storage round trips (Optuna's RDB
storage, heartbeats), MLflow logging, duplicate seeds. Storage: a throwaway PostgreSQL cluster
(scripts/postgres.sh) with an ``mlflow server`` on it when PostgreSQL is installed; otherwise
SQLite files with tracking off. Rate = trials / (last trial's end - first trial's start), so
process start-up (imports, fp32 baseline) is not counted.

    python benchmarks/bench_workers.py [--trials 12] [--sleep 0.15] [--sqlite]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _measure(n: int, args, storage: str, uri: str | None, tmp: Path) -> tuple[int, float, int]:
    """Run ``n`` workers on a fresh study; (trials, seconds of tuning, duplicates)."""
    import optuna
    import yaml

    from inc_flow.search.records import TrialRecord
    from inc_flow.search.storage import RECORD_ATTR
    from tests.helpers.scaleout import start_cli
    from tests.helpers.stores import kill_group, sleepy_config
    from tests.toys import BARRIER_ENV, SLEEP_ENV

    study = f"bench-workers-{n}-{int(time.time())}"
    work = tmp / study
    work.mkdir()
    config = sleepy_config(work, study, args.trials, "bench-workers")
    if uri is None:
        conf = yaml.safe_load(config.read_text())
        conf["tracking"]["enabled"] = False
        config.write_text(yaml.safe_dump(conf, sort_keys=False))
    env = {SLEEP_ENV: str(args.sleep), BARRIER_ENV: f"{work / 'barrier'}:{n}"}
    if uri:
        env.update(MLFLOW_TRACKING_URI=uri, MLFLOW_REGISTRY_URI=uri)
    command = ["tune", str(config), "--storage", storage, "--worker"]
    procs = [start_cli(command, work / f"worker{i}.log", env) for i in range(n)]
    try:
        codes = [p.wait(timeout=1800) for p in procs]
    finally:
        for p in procs:
            kill_group(p)
    if codes != [0] * n:
        raise SystemExit(f"a worker failed: see {work}/worker*.log")
    trials = optuna.load_study(study_name=study, storage=storage).get_trials()
    done = [t for t in trials if t.datetime_complete is not None]
    start = min(t.datetime_start for t in done)
    end = max(t.datetime_complete for t in done)
    dups = sum(
        TrialRecord.from_dict(t.user_attrs[RECORD_ATTR]).state == "duplicate"
        for t in done
        if RECORD_ATTR in t.user_attrs
    )
    return len(done), (end - start).total_seconds(), dups


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12, help="max_trials of each study")
    parser.add_argument("--sleep", type=float, default=0.15, help="seconds per forward pass")
    parser.add_argument("--sqlite", action="store_true", help="SQLite even if PostgreSQL exists")
    args = parser.parse_args(argv)
    os.chdir(ROOT)

    from tests.helpers.scaleout import cluster, mlflow_server, postgres_missing

    with tempfile.TemporaryDirectory(prefix="inc_flow_bench_workers_") as tmp_name:
        tmp = Path(tmp_name)
        why = "--sqlite" if args.sqlite else postgres_missing()
        with contextlib.ExitStack() as stack:
            if why is None:
                urls = stack.enter_context(cluster(tmp / "pg"))
                uri = stack.enter_context(
                    mlflow_server(urls["mlflow"], tmp / "artifacts", tmp / "mlflow.log")
                )
                storage, backend = urls["optuna"], "PostgreSQL + mlflow server"
            else:
                storage, uri = f"sqlite:///{tmp / 'optuna.db'}", None
                backend = f"SQLite, tracking off ({why})"
            rows = [(n, *_measure(n, args, storage, uri, tmp)) for n in (1, 2)]
    print(f"storage: {backend}; toy study, {args.sleep} s per forward pass, {os.cpu_count()} CPUs")
    print("| workers | trials | duplicates | tuning s | trials/min | vs 1 worker |")
    print("|---|---|---|---|---|---|")
    base = None
    for n, count, seconds, dups in rows:
        rate = 60 * count / seconds
        base = base or rate
        print(f"| {n} | {count} | {dups} | {seconds:.1f} | {rate:.1f} | {rate / base:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
