"""The default strategy (``basic``: rank on the samples all-int8 gets wrong, confirm) beside
INC's order (``inc``), in one run, per case.

A case is a model, its ``conf/`` file, an accuracy target and how accuracy is measured: the
config's metric (``topk: 1``, argmax) or an ``eval_func`` computing the same argmax top-1
over the same eval set as a black box, INC-tutorial style. Each strategy tunes the case in a
fresh workspace (MLflow off, ``timeout: 0``: the first passing plan wins, as in INC), then
fp32 and both answers are timed side by side (inc_flow's round: interleaved, the order
reversed each round). Per run: trials, full evaluations (trials whose plan was evaluated with
the user's metric), full evaluations up to the first passing plan, ranking samples (samples
run through a model to rank, ``rank_samples``), wall time of the ``quantize`` call, the chosen
plan and its speed-up over fp32 (median, min-max over rounds). Run from the repository root::

    python benchmarks/bench_search.py [--cases lenet,lenet-func,resnet18,resnet18-func]

More cases: ``mobilenetv2`` (per-tensor weights, 0.25 % on the config's 2048 images; needs
the cached checkpoint) and ``minilm`` (dynamic int8, cosine agreement 0.99; needs the
``[minilm]`` extra).

Everything runs with ``--threads`` intra-op threads (default 1): the machine is shared.
The table goes to ``--out`` (default ``benchmarks/search.md``). ``--save DIR`` also saves each
run's chosen model to ``DIR/<case>-<strategy>`` (``best_configure.yaml`` + weights), for
``benchmarks/verify_saved.py``.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from bench_tuning import _load_lenet, _load_resnet18, quiet  # noqa: E402

from inc_flow.api import quantize  # noqa: E402
from inc_flow.config.sections import Config  # noqa: E402
from inc_flow.data import build_dataloader, call_model, split_batch  # noqa: E402
from inc_flow.quant.evaluate import repeat_batch  # noqa: E402
from inc_flow.quant.latency import time_side_by_side  # noqa: E402
from inc_flow.search.speed import FP32, TRIAL, Candidate, Spread  # noqa: E402
from inc_flow.vocab import TrialState  # noqa: E402


def _load_mobilenetv2() -> Any:
    from examples.mobilenetv2.model import load_mobilenetv2

    return load_mobilenetv2()


def _load_minilm() -> Any:
    from examples.minilm.model import load_minilm

    return load_minilm()


@dataclass(frozen=True)
class Case:
    name: str
    conf: str
    load: Any
    criterion: dict
    eval_func: bool
    full_eval: bool = True  # lift the config's eval `iteration` cap


CASES = {
    "lenet": Case("lenet", "conf/lenet_static.yaml", _load_lenet, {"absolute": 0.0}, False),
    "lenet-func": Case(
        "lenet-func", "conf/lenet_static.yaml", _load_lenet, {"absolute": 0.0}, True
    ),
    "resnet18": Case(
        "resnet18", "conf/resnet18_static.yaml", _load_resnet18, {"relative": 0.001}, False
    ),
    "resnet18-func": Case(
        "resnet18-func", "conf/resnet18_static.yaml", _load_resnet18, {"relative": 0.001}, True
    ),
    "mobilenetv2": Case(
        "mobilenetv2",
        "conf/mobilenetv2_static.yaml",
        _load_mobilenetv2,
        {"relative": 0.0025},
        False,
        full_eval=False,  # the config's 8 batches (2048 images), as the issue measured
    ),
    "minilm": Case("minilm", "conf/minilm_dynamic.yaml", _load_minilm, {"relative": 0.01}, False),
}
CASES["mobilenetv2-func"] = replace(CASES["mobilenetv2"], name="mobilenetv2-func", eval_func=True)
STRATEGIES = ("basic", "inc")


def config(
    case: Case, strategy: str, workspace: Path, args: argparse.Namespace, timeout: float = 0
) -> Config:
    raw = yaml.safe_load((ROOT / case.conf).read_text())
    acc = raw["evaluation"]["accuracy"]
    if case.full_eval:
        acc["iteration"] = -1
    acc["configs"] = {"intra_num_of_threads": args.threads}
    raw["tracking"] = {"enabled": False}
    raw["tuning"].update(
        strategy={"name": strategy},
        accuracy_criterion=dict(case.criterion),
        exit_policy={"timeout": timeout, "max_trials": args.max_trials},
        workspace={"path": str(workspace)},
        study_name=f"{case.name}-{strategy}-{timeout:g}",
    )
    return Config.from_dict(raw)


def top1_func(cfg: Config) -> Any:
    """argmax top-1 over the config's eval set, as a scalar black box (INC's eval_func): its
    first ``iteration`` batches when the config caps them (MobileNetV2's 8 x 256), else all."""
    loader = build_dataloader(cfg.evaluation.accuracy.dataloader)
    cap = int(cfg.evaluation.accuracy.iteration)

    def eval_func(model: Any) -> float:
        correct = seen = 0
        with torch.no_grad():
            for batch in itertools.islice(loader, cap if cap > 0 else None):
                inputs, labels = split_batch(batch)
                correct += int((call_model(model, inputs).argmax(1) == labels).sum())
                seen += int(labels.shape[0])
        return correct / seen

    return eval_func


@dataclass
class Run:
    case: str
    strategy: str
    result: Any
    wall_s: float
    speedup: Spread | None = None
    speedup_b1: Spread | None = None

    @property
    def evaluated(self) -> list:
        done = (TrialState.PASSED, TrialState.FAILED, TrialState.PRUNED)
        return [r for r in self.result.records if r.state in done]

    def to_first_pass(self) -> str:
        for i, r in enumerate(self.evaluated, 1):
            if r.passed:
                return str(i)
        return "none passed"


def run_one(
    case: Case,
    strategy: str,
    args: argparse.Namespace,
    workdir: Path,
    timeout: float = 0,
    label: str | None = None,
) -> Run:
    cfg = config(case, strategy, workdir / f"{case.name}-{strategy}-{timeout:g}", args, timeout)
    model = case.load()
    func = top1_func(cfg) if case.eval_func else None
    start = time.perf_counter()
    save = getattr(args, "save", None)  # bench_search_speed.py has no --save
    output = None if save is None else save / f"{case.name}-{label or strategy}"
    with quiet():
        outcome = quantize(cfg, model=model, eval_func=func, output=output)
    run = Run(case.name, label or strategy, outcome.result, time.perf_counter() - start)
    print(describe(run), flush=True)
    return run


def time_side(case: Case, runs: list[Run], args: argparse.Namespace) -> dict:
    """fp32 and every answer, side by side; the samples (name -> batch -> ms per round)."""
    perf = Config.from_dict(yaml.safe_load((ROOT / case.conf).read_text()))
    loader = perf.evaluation.performance.dataloader
    batch = int(loader.batch_size)
    example, _ = split_batch(next(iter(build_dataloader(loader))))
    timed = [r for r in runs if r.result.best_model is not None]
    candidates = [Candidate("fp32", case.load(), FP32, None)] + [
        Candidate(r.strategy, r.result.best_model, TRIAL, r.result.best.plan.backend)
        for r in timed
    ]
    inputs = {1: repeat_batch(example, 1), batch: repeat_batch(example, batch)}
    with quiet():
        samples = time_side_by_side(
            candidates, inputs, call_model, args.repeats, 3, args.iterations, args.threads
        )
    fp32 = samples["fp32"]
    for r in timed:
        mine = samples[r.strategy]
        r.speedup = Spread.of([f / m for f, m in zip(fp32[batch], mine[batch], strict=True)])
        r.speedup_b1 = Spread.of([f / m for f, m in zip(fp32[1], mine[1], strict=True)])
    return samples


def describe(run: Run) -> str:
    r = run.result
    lines = [
        f"{run.case} / {run.strategy}: fp32 {r.baseline_accuracy:.4f}, required "
        f"{r.required_accuracy:.4f}, {r.n_trials} trials, stop {r.stop_reason}, "
        f"{run.wall_s:.1f} s"
    ]
    for rec in r.records:
        lines.append(
            f"  trial {rec.number:>2} {rec.phase:<11} {rec.state:<9} acc "
            f"{'-' if rec.accuracy is None else format(rec.accuracy, '.4f')} rank samples "
            f"{rec.rank_samples:>5} eval {rec.eval_samples}/{rec.eval_total} "
            f"{rec.wall_time_s:.1f} s  {rec.plan.summary()}"
        )
    lines += [f"  warning: {w}" for w in r.warnings]
    return "\n".join(lines)


def _s(spread: Spread | None) -> str:
    return "-" if spread is None else spread.text(".2f", "x")


def table(runs: list[Run]) -> list[str]:
    out = [
        "| case | strategy | trials | full evaluations | to the first pass | ranking samples "
        "| wall time | chosen plan | accuracy | speed-up bN | speed-up b1 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        r = run.result
        best = r.best
        plan = best.plan.summary() if best else "none passed"
        acc = f"{best.accuracy:.4f} (fp32 {r.baseline_accuracy:.4f})" if best else "-"
        out.append(
            f"| {run.case} | {run.strategy} | {r.n_trials} | {len(run.evaluated)} | "
            f"{run.to_first_pass()} | {sum(x.rank_samples for x in r.records)} | "
            f"{run.wall_s:.0f} s | {plan} | {acc} | {_s(run.speedup)} | {_s(run.speedup_b1)} |"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="lenet,lenet-func,resnet18,resnet18-func")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5, help="side-by-side rounds")
    parser.add_argument("--iterations", type=int, default=20, help="timed calls per round")
    parser.add_argument("--max-trials", type=int, default=40)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/search.md")
    parser.add_argument("--save", type=Path, default=None, help="save each chosen model here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runs: list[Run] = []
    cases = [CASES[name] for name in args.cases.split(",")]
    # every case with the default strategy first: on a loaded machine its rows come first
    with tempfile.TemporaryDirectory(prefix="bench_search-") as tmp:
        for strategy in args.strategies.split(","):
            for case in cases:
                runs.append(run_one(case, strategy, args, Path(tmp)))
                write(runs, args)
    for case in cases:
        time_side(case, [r for r in runs if r.case == case.name], args)
    write(runs, args)


def write(runs: list[Run], args: argparse.Namespace) -> None:
    stamp = datetime.datetime.now().strftime("%Y-%m-%dT%H:%M")
    head = (
        f"Produced by `python benchmarks/bench_search.py` ({stamp}, {platform.node()}, "
        f"torch {torch.__version__}, {args.threads} intra-op thread(s) for evaluation and "
        f"timing; `timeout: 0`, max {args.max_trials} trials; side-by-side round "
        f"{args.repeats} rounds x {args.iterations} calls, speed-up = fp32 / plan per round, "
        "median (min-max)). Wall time is one run's `quantize` call on a shared 2-core machine."
    )
    body = [head, "", *table(runs), "", "Trials:", "", "```"]
    body += [describe(r) for r in runs] + ["```", ""]
    args.out.write_text("\n".join(body))
    print("\n".join(table(runs)), flush=True)


if __name__ == "__main__":
    main()
