"""Tuning wall time with the runtime dimension on, beside the FX-only study on the same case.

For each model (LeNet with ``conf/lenet_static.yaml``, the 28x28 ResNet18 with
``conf/resnet18_static.yaml``), in one process, the same config tuned twice with
``inc_flow.api.quantize`` (MLflow tracking off, a fresh workspace and study each): once
with ``quantization.runtime: [torch_fx]``, once with ``[torch_fx, openvino]``, everything
else equal (``--max-trials`` / ``--timeout`` override the config's exit policy for both;
default: the config's). The two studies alternate, ``--repeats`` times, FX-only first in odd
repeats and second in even ones (the first study of a process also pays the data set's
first read and the imports). Reported per study: wall time (``TuneResult.wall_time_s``
and the whole ``quantize`` call), trials, calibration passes, stop reason and the chosen plan
(runtime, backend, fp32 ops), then the ratio with / without the runtime dimension against
the issue-18 goal (<= 1.5x). Run from the repository root::

    python benchmarks/bench_runtime_tuning.py [--models lenet] [--max-trials 12 --timeout 900]

Writes ``--out`` (default ``benchmarks/runtime_tuning.md``; ``--append`` adds to it).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import logging
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from bench_tuning import SUBJECTS, quiet  # noqa: E402

from inc_flow.api import quantize  # noqa: E402
from inc_flow.config.sections import Config  # noqa: E402

STUDIES = {"FX only": ["torch_fx"], "FX + OpenVINO": ["torch_fx", "openvino"]}
GOAL = 1.5  # wall time with the runtime dimension / FX-only


@dataclass(frozen=True)
class Study:
    model: str
    study: str
    repeat: int
    wall_s: float  # the whole quantize call
    tune_s: float  # TuneResult.wall_time_s
    trials: int
    calibrations: int
    stop: str
    chosen: str
    top1: float | None


def config_for(name: str, runtimes: list[str], args: argparse.Namespace, tag: str) -> Config:
    raw = Config.from_yaml(SUBJECTS[name].conf).to_dict()
    raw["tracking"] = {"enabled": False}
    raw["quantization"]["runtime"] = runtimes
    if args.eval_batches:
        raw["evaluation"]["accuracy"]["iteration"] = args.eval_batches
    policy = raw["tuning"].setdefault("exit_policy", {})
    if args.max_trials is not None:
        policy["max_trials"] = args.max_trials
    if args.timeout is not None:
        policy["timeout"] = args.timeout
    raw["tuning"]["workspace"] = {"path": str(args.workdir / name / tag)}
    raw["tuning"]["study_name"] = f"bench-runtime-tuning-{name}-{tag}"
    return Config.from_dict(raw)


def run_one(name: str, study: str, repeat: int, args: argparse.Namespace, fp32) -> Study:
    stamp = datetime.datetime.now().strftime("%H%M%S")
    tag = f"{study.replace(' ', '').replace('+', '_')}-{repeat}-{stamp}"
    cfg = config_for(name, STUDIES[study], args, tag)
    print(f"== {name}: {study} (repeat {repeat})", flush=True)
    start = time.perf_counter()
    with quiet():
        outcome = quantize(cfg, model=copy.deepcopy(fp32))
    wall = time.perf_counter() - start
    r = outcome.result
    if outcome.q_model is None:
        chosen, top1 = f"none ({r.stop_reason})", None
    else:
        plan = outcome.q_model.plan
        where = plan.backend if plan.runtime == "torch_fx" else plan.runtime
        fp32_ops = ", ".join(plan.fp32_ops) if plan.int8_ops else "all (fp32)"
        chosen = f"{where}, fp32 ops: {fp32_ops or 'none'}"
        top1 = r.best.accuracy if r.best else None
    return Study(name, study, repeat, wall, r.wall_time_s, r.n_trials, r.calibration_passes,
                 r.stop_reason, chosen, top1)  # fmt: skip


def report(rows: list[Study], args: argparse.Namespace) -> list[str]:
    policy = []
    if args.max_trials is not None:
        policy.append(f"max_trials {args.max_trials}")
    if args.timeout is not None:
        policy.append(f"timeout {args.timeout}")
    out = [
        f"### {', '.join(args.models)}: exit policy {', '.join(policy) or 'of the config'}",
        "",
        f"`python benchmarks/bench_runtime_tuning.py {' '.join(args.argv)}` "
        f"({datetime.datetime.now().isoformat(timespec='minutes')}, {platform.node()}, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__}; load average at start "
        f"{args.load[0]:.1f}, at end {os.getloadavg()[0]:.1f}). Eval set: "
        f"{f'`iteration: {args.eval_batches}`' if args.eval_batches else 'the config'}.",
        "",
        "| model | study | repeat | wall time (s) | tuning (s) | trials | calibrations "
        "| stop | chosen plan | top-1 |",
        "|" + "---|" * 10,
    ]
    for s in rows:
        acc = "-" if s.top1 is None else f"{s.top1:.4f}"
        out.append(
            f"| {s.model} | {s.study} | {s.repeat} | {s.wall_s:.1f} | {s.tune_s:.1f} "
            f"| {s.trials} | {s.calibrations} | {s.stop} | {s.chosen} | {acc} |"
        )
    out.append("")
    fx, both = STUDIES
    for model in args.models:
        walls = {k: [s.wall_s for s in rows if s.model == model and s.study == k] for k in STUDIES}
        if not walls[fx] or not walls[both]:
            continue
        ratio = statistics.median(walls[both]) / statistics.median(walls[fx])
        verdict = "met" if ratio <= GOAL else "MISSED"
        out.append(
            f"- {model}: wall time {both} / {fx} = {ratio:.2f}x (medians of "
            f"{len(walls[fx])} run(s) each): goal <= {GOAL}x {verdict}"
        )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="lenet", help="comma list (lenet, resnet18)")
    parser.add_argument("--max-trials", type=int, default=None, help="both studies")
    parser.add_argument("--timeout", type=int, default=None, help="seconds, both studies")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--eval-batches", type=int, default=0, help="cap the eval set")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/inc_flow_bench_rt_tuning"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "runtime_tuning.md")
    parser.add_argument("--append", action="store_true", help="append to --out")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in SUBJECTS]
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {sorted(SUBJECTS)}")
    logging.basicConfig(level=logging.WARNING, format="[%(levelname)s] %(message)s")
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.load = os.getloadavg()
    rows = []
    for name in args.models:
        fp32 = SUBJECTS[name].load().eval()
        for repeat in range(1, args.repeats + 1):
            order = list(STUDIES) if repeat % 2 else list(reversed(STUDIES))
            for study in order:  # the first study of a process also pays its warm-up
                rows.append(run_one(name, study, repeat, args, fp32))
                print(f"   {rows[-1]}", flush=True)
    text = "\n".join(report(rows, args)) + "\n"
    print("\n" + text)
    if args.append and args.out.is_file():
        args.out.write_text(args.out.read_text() + "\n" + text)
    else:
        args.out.write_text("# Tuning wall time: runtime dimension on vs FX only\n\n" + text)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
