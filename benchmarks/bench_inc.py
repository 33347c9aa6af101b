"""Intel Neural Compressor's own accuracy-driven tuner beside inc_flow, in one process.

Per case, the same model, calibration data, eval set and accuracy target go through
INC 2.x's ``quantization.fit`` (``basic`` strategy, torch FX backend, ``timeout: 0`` so the
first passing plan wins) and through inc_flow's ``quantize`` with its default strategy
(``basic``), INC's order (``inc``), and ``basic`` with backend ``onednn`` (8-bit
activations, as INC uses on this CPU; x86 reduces them to 7 bits). All get the same
``eval_func``: argmax top-1 over the case's eval set (``bench_search.top1_func``, INC
tutorial style), wrapped with a call counter. Per run: trials, ``eval_func`` calls (the
fp32 baseline included), evaluated trials up to the first passing plan, wall time of the
tuning call, the chosen plan (which ops stay fp32), its top-1 measured again afterwards
with a fresh ``eval_func`` over the same eval set, and inc_flow's wall time over INC's
from the same round.

INC is not a dependency of inc_flow (CI does not install it): without ``neural_compressor``
importable the script prints why and exits 0. It was run in a separate venv::

    python3 -m venv /work/incvenv
    /work/incvenv/bin/pip install -e .                      # torch 2.14.1 from local disk
    /work/incvenv/bin/pip install --no-deps neural-compressor==2.6
    /work/incvenv/bin/pip install deprecated prettytable psutil py-cpuinfo schema \\
        scikit-learn pycocotools opencv-python-headless "setuptools<81"
    /work/incvenv/bin/python benchmarks/bench_inc.py [--cases lenet-rel,lenet,resnet18]

(INC 2.6 pins ``numpy<2``; ``--no-deps`` keeps the venv's numpy 2 and torch; INC 2.6 imports
``pkg_resources``, gone from setuptools 81.) INC's bf16 fallback is switched off
(``excluded_precisions=["bf16"]``): inc_flow falls back to fp32 only, and this CPU has bf16.
Everything runs with ``--threads`` torch intra-op threads (default 1, as inc_flow times).
Several ``--rounds`` alternate the order of the tuners. The table goes to ``--out``
(default ``benchmarks/inc.md``).
"""

from __future__ import annotations

import argparse
import datetime
import logging
import platform
import re
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from bench_search import CASES as SEARCH_CASES  # noqa: E402
from bench_search import Case, config, describe, top1_func  # noqa: E402
from bench_search import Run as SearchRun  # noqa: E402
from bench_tuning import _load_lenet, quiet  # noqa: E402

from inc_flow.api import quantize  # noqa: E402
from inc_flow.data import build_dataloader  # noqa: E402

SKIP = (
    "skipped: neural_compressor is not importable ({error}); INC is not an inc_flow "
    "dependency. Install it in a separate venv (see this script's docstring: "
    "pip install --no-deps neural-compressor==2.6 and its small deps) and run the script "
    "with that venv's python."
)

# Every case tunes through an eval_func (the INC tutorial's way): INC gets the same black box.
CASES = {
    "lenet-rel": Case(
        "lenet-rel", "conf/lenet_static.yaml", _load_lenet, {"relative": 0.01}, True
    ),
    "lenet": SEARCH_CASES["lenet-func"],  # absolute: 0.0
    "resnet18": SEARCH_CASES["resnet18-func"],  # relative: 0.001, all 10k test images
    # relative 0.0025 on the config's 2048 images, per-tensor weights only (both tuners)
    "mobilenetv2": replace(SEARCH_CASES["mobilenetv2"], name="mobilenetv2-func", eval_func=True),
}
# INC's equivalent of a config's `model_wise: weight: granularity: [per_tensor]`
PER_TENSOR = {"weight": {"granularity": ["per_tensor"]}}
# "inc_flow basic onednn": the same with backend onednn, whose activations use all 8 bits
# (x86 reduces them to 7, quant/mapping.py; INC on a VNNI CPU uses 8: REDUCE_RANGE False).
TUNERS = ("inc_flow basic", "INC 2.x basic", "inc_flow inc", "inc_flow basic onednn")


class Counted:
    """An eval_func that counts its calls and the seconds spent in them."""

    def __init__(self, func: Any) -> None:
        self.func, self.calls, self.seconds = func, 0, 0.0

    def __call__(self, model: Any) -> float:
        start = time.perf_counter()
        try:
            return self.func(model)
        finally:
            self.calls += 1
            self.seconds += time.perf_counter() - start


@dataclass
class Row:
    case: str
    tuner: str
    round: int
    trials: int | None  # tuning trials the tuner ran (INC: its "Tune N result" lines)
    calls: int  # eval_func calls, the fp32 baseline included
    to_first_pass: str  # evaluated trials up to and including the first passing plan
    wall_s: float
    eval_s: float  # seconds inside eval_func
    plan: str
    accuracy: float | None  # measured again after tuning, fresh eval_func, same eval set
    baseline: float | None
    threads: int  # torch.get_num_threads() after the run
    ratio: str = "-"  # this run's wall time / INC's in the same round
    log: list[str] = field(default_factory=list)


def inc_plan(q_config: dict) -> str:
    """An INC 2.x ``q_config`` as one line: int8 ops / all, the fp32 ones, observers."""
    ops = q_config.get("op", {})
    fp32 = [name for (name, _), c in ops.items() if c.get("activation", {}).get("dtype") == "fp32"]
    int8 = [c for c in ops.values() if c.get("activation", {}).get("dtype") != "fp32"]
    act = sorted({str(c["activation"].get("algorithm")) for c in int8 if "activation" in c})
    weight = sorted({str(c["weight"].get("granularity")) for c in int8 if "weight" in c})
    fp32_text = f" fp32=[{','.join(fp32)}]" if fp32 else ""
    return (
        f"int8 {len(ops) - len(fp32)}/{len(ops)}{fp32_text} act={'/'.join(act) or '-'} "
        f"w={'/'.join(weight) or '-'}"
    )


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


TUNE_LINE = re.compile(r"^Tune (\d+) result is: \[Accuracy \(int8\|fp32\): ([0-9.]+)\|")


def _op_types(cfg: Any) -> dict | None:
    """INC's ``op_type_dict`` for a config that allows only per-tensor weights, else None."""
    weight = cfg.quantization.model_wise.weight
    if weight is not None and tuple(weight.granularity or ()) == ("per_tensor",):
        return {"Conv2d": PER_TENSOR, "Linear": PER_TENSOR}
    return None


def run_inc(case: Case, args: argparse.Namespace, workdir: Path, round_: int) -> Row:
    from neural_compressor import PostTrainingQuantConfig, quantization
    from neural_compressor.config import AccuracyCriterion, TuningCriterion, options

    cfg = config(case, "basic", workdir / "unused", args)
    options.workspace = str(workdir / f"inc-{case.name}-{round_}")
    options.random_seed = cfg.tuning.random_seed
    ((kind, loss),) = case.criterion.items()
    conf = PostTrainingQuantConfig(
        approach="static",
        calibration_sampling_size=[int(n) for n in cfg.quantization.calibration.sampling_size],
        excluded_precisions=["bf16"],
        accuracy_criterion=AccuracyCriterion(criterion=kind, tolerable_loss=float(loss)),
        tuning_criterion=TuningCriterion(strategy="basic", timeout=0, max_trials=args.max_trials),
        op_type_dict=_op_types(cfg),
    )
    calib = build_dataloader(cfg.quantization.calibration.dataloader)
    func = Counted(top1_func(cfg))
    model = case.load()
    logger = logging.getLogger("neural_compressor")
    shown = [(h, h.level) for h in logger.handlers]
    for handler, _ in shown:
        handler.setLevel(logging.WARNING)
    capture = _Capture()
    logger.addHandler(capture)
    start = time.perf_counter()
    try:
        with quiet():
            q = quantization.fit(model, conf, calib_dataloader=calib, eval_func=func)
        wall = time.perf_counter() - start
    finally:
        logger.removeHandler(capture)
        for handler, level in shown:
            handler.setLevel(level)
    tunes = [m for line in capture.lines if (m := TUNE_LINE.match(line))]
    baseline = next(
        (
            float(m.group(1))
            for line in capture.lines
            if (m := re.match(r"^FP32 baseline is: \[Accuracy: ([0-9.]+)", line))
        ),
        None,
    )
    passed = q is not None
    accuracy = None
    if passed:
        accuracy = top1_func(cfg)(q.model)
    row = Row(
        case.name,
        "INC 2.x basic",
        round_,
        len(tunes),
        func.calls,
        str(len(tunes)) if passed else "none passed",  # timeout 0: the last trial passed
        wall,
        func.seconds,
        inc_plan(q.q_config) if passed else "none passed",
        accuracy,
        baseline,
        torch.get_num_threads(),
        log=[f"  trial {m.group(1):>2} acc {m.group(2)}" for m in tunes],
    )
    return row


def run_inc_flow(
    case: Case,
    tuner: str,
    args: argparse.Namespace,
    workdir: Path,
    round_: int,
) -> Row:
    _, strategy, *backend = tuner.split()
    cfg = config(case, strategy, workdir / f"{case.name}-{'-'.join(tuner.split())}-{round_}", args)
    if backend:
        cfg = replace(cfg, quantization=replace(cfg.quantization, backend=tuple(backend)))
    model = case.load()
    func = Counted(top1_func(cfg))
    start = time.perf_counter()
    with quiet():
        outcome = quantize(cfg, model=model, eval_func=func)
    wall = time.perf_counter() - start
    r = outcome.result
    run = SearchRun(case.name, strategy, r, wall)
    accuracy = None if r.best_model is None else top1_func(cfg)(r.best_model)
    return Row(
        case.name,
        tuner,
        round_,
        r.n_trials,
        func.calls,
        run.to_first_pass(),
        wall,
        func.seconds,
        r.best.plan.summary() if r.best else "none passed",
        accuracy,
        r.baseline_accuracy,
        torch.get_num_threads(),
        log=describe(run).splitlines()[1:],
    )


def run_tuner(tuner: str, case: Case, args: argparse.Namespace, workdir: Path, round_: int) -> Row:
    if tuner == "INC 2.x basic":
        row = run_inc(case, args, workdir, round_)
    else:
        row = run_inc_flow(case, tuner, args, workdir, round_)
    print(f"{case.name} / {row.tuner} (round {round_}): {_cells(row)}", flush=True)
    return row


def set_ratios(rows: list[Row]) -> None:
    """Each inc_flow row's wall time over INC's, same case and round."""
    for row in rows:
        inc = [
            r
            for r in rows
            if r.tuner == "INC 2.x basic" and (r.case, r.round) == (row.case, row.round)
        ]
        if row.tuner != "INC 2.x basic" and inc:
            row.ratio = f"{row.wall_s / inc[0].wall_s:.2f}"


def _acc(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _cells(row: Row) -> str:
    trials = "-" if row.trials is None else str(row.trials)
    return (
        f"| {row.case} | {row.tuner} | {row.round} | {trials} | {row.calls} | "
        f"{row.to_first_pass} | {row.wall_s:.0f} s | {row.eval_s:.0f} s | {row.ratio} | "
        f"{row.plan} | {_acc(row.accuracy)} | {_acc(row.baseline)} | {row.threads} |"
    )


def table(rows: list[Row]) -> list[str]:
    return [
        "| case | tuner | round | trials | eval_func calls (with fp32) | evaluated trials to "
        "the first pass | wall time | of it in eval_func | wall / INC's | chosen plan | "
        "top-1 (re-measured) | fp32 top-1 | threads |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *(_cells(row) for row in rows),
    ]


def write(rows: list[Row], args: argparse.Namespace, inc_version: str) -> None:
    stamp = datetime.datetime.now().strftime("%Y-%m-%dT%H:%M")
    criteria = ", ".join(
        f"{CASES[name].name} {kind} {loss:g}"
        for name in args.cases.split(",")
        for kind, loss in CASES[name].criterion.items()
    )
    head = (
        f"Produced by `python benchmarks/bench_inc.py {args.command}` ({stamp}, "
        f"{platform.node()}, torch {torch.__version__}, "
        f"neural-compressor {inc_version}, {args.threads} torch thread(s); `timeout: 0`, max "
        f"{args.max_trials} trials; targets {criteria}). Wall time is the tuning call "
        "(`quantization.fit` / `quantize`), tracking off, on a shared 2-core machine."
    )
    body = [head, "", *table(rows), "", "Trials:", "", "```"]
    for row in rows:
        body += [f"{row.case} / {row.tuner} (round {row.round})", *row.log]
    body += ["```", ""]
    args.out.write_text("\n".join(body))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="lenet-rel,lenet,resnet18")  # also mobilenetv2
    parser.add_argument("--tuners", default=",".join(TUNERS))
    parser.add_argument("--rounds", type=int, default=1, help="order reversed every round")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-trials", type=int, default=40)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/inc.md")
    args = parser.parse_args(argv)
    args.command = " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    try:
        import neural_compressor
    except ImportError as error:
        print(SKIP.format(error=error), flush=True)
        return 0
    torch.set_num_threads(args.threads)
    tuners = args.tuners.split(",")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench_inc-") as tmp:
        for name in args.cases.split(","):
            for round_ in range(1, args.rounds + 1):
                order = tuners if round_ % 2 else tuners[::-1]
                for tuner in order:
                    rows.append(run_tuner(tuner, CASES[name], args, Path(tmp), round_))
                    set_ratios(rows)
                    write(rows, args, neural_compressor.__version__)
    print("\n".join(table(rows)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
