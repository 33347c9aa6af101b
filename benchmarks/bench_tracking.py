"""MLflow logging cost per LeNet trial: time spent in the MLflow tracker vs the trial itself.

Runs the LeNet study (conf/lenet_static.yaml) for N trials against a fresh SQLite tracking
store and prints, per run of the study, the trial wall time, the time the tracker spent
logging, and their ratio (the goal: <= 5 %). Both are measured in the same process run.

    python benchmarks/bench_tracking.py [--trials 8] [--eval-batches 40]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument(
        "--eval-batches", type=int, default=-1, help="eval batches of 256 (-1: all 10,000)"
    )
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    logging.basicConfig(level=logging.WARNING)

    from inc_flow.api import MultiTracker, as_config, quantize
    from inc_flow.record.tracking import MlflowTracker
    from inc_flow.search.progress import LoggingTracker

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        conf = yaml.safe_load((ROOT / "conf" / "lenet_static.yaml").read_text())
        conf["tuning"]["workspace"]["path"] = f"{tmp}/ws"
        conf["tuning"]["exit_policy"].update(timeout=3600, max_trials=args.trials)
        conf["evaluation"]["accuracy"]["iteration"] = args.eval_batches
        cfg = as_config(conf)

        class Timed(MlflowTracker):
            """Per-trial logging time: the tracker's own clock, split at each trial."""

            def __init__(self, cfg):
                super().__init__(cfg)
                self.per_trial: list[tuple[float, float]] = []
                self._mark = 0.0

            def trial_started(self, number, plan):
                self._mark = self.log_seconds
                super().trial_started(number, plan)

            def trial_finished(self, record):
                super().trial_finished(record)
                self.per_trial.append((self.log_seconds - self._mark, record.wall_time_s))

        timed = Timed(cfg)
        start = time.perf_counter()
        outcome = quantize(cfg, tracker=MultiTracker(LoggingTracker(), timed))
        wall = time.perf_counter() - start
        timed.close()
    rows = timed.per_trial
    log_s = [r[0] for r in rows]
    trial_s = [r[1] for r in rows]
    ratios = [a / b for a, b in rows if b > 0]
    print("| trials | median trial wall time (s) | median MLflow logging per trial (s) "
          "| median ratio | max ratio | study wall time (s) |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    print(
        f"| {len(rows)} | {statistics.median(trial_s):.3f} | {statistics.median(log_s):.4f} "
        f"| {statistics.median(ratios):.2%} | {max(ratios):.2%} | {wall:.1f} |"
    )
    print(f"(best trial: {outcome.result.best.number if outcome.result.best else None}; "
          "logging = child run create + params/metrics/tags + plan.yaml + op table + close; "
          "ratio = logging time / trial wall time, both measured in this run)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
