"""inc_flow's accuracy-driven tuning beside plain torch FX one-shot quantization.

For each model (LeNet with ``conf/lenet_static.yaml``, the 28x28 ResNet18 with
``conf/resnet18_static.yaml``) this script, in one process and one run:

1. tunes with inc_flow (``inc_flow.api.quantize``) in a fresh workspace under ``--workdir``,
   once per accuracy target (``--relative``; default LeNet 1%, ResNet18 0.1% and 1%);
2. quantizes "plain FX one-shot": ``prepare_fx(model, get_default_qconfig_mapping("x86"),
   example)``, calibration on the same samples inc_flow calibrates on, ``convert_fx`` --
   torch's defaults, no tuning -- and evaluates it on the same eval set;
3. measures fp32, FX one-shot and inc_flow's int8 latency at batch 1 and batch N (the
   config's performance batch: 64 LeNet, 32 ResNet18) with ``--threads`` intra-op threads in
   inc_flow's side-by-side round (``inc_flow.quant.latency.time_side_by_side``): the models
   interleaved over ``--repeats`` rounds, the order reversed every round, so machine load hits
   every method alike. Latency is the median of the rounds' medians with its min-max, the
   speed-up fp32 / method per round (median, min-max). Each inc_flow row also shows the
   tuner's own round (``TuneResult.speed``, the numbers it reports and registers) and its
   verdict (a model not faster than fp32 in every round is never ``@champion``).

It prints a markdown table (also written to ``--out``, default ``benchmarks/results.md``)
and each study's trial sequence. Run from the repository root::

    python benchmarks/bench_tuning.py [--models lenet,resnet18] [--threads 1] [--repeats 5]

The ResNet18 checkpoint is trained first when missing (``examples.resnet18.train``, about
6 minutes on 2 cores) unless ``--skip-train``, which skips ResNet18 instead.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import logging
import platform
import re
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmarks/bench_tuning.py` from anywhere
    sys.path.insert(0, str(ROOT))

from inc_flow.api import Outcome, as_config, quantize  # noqa: E402
from inc_flow.config.sections import Config  # noqa: E402
from inc_flow.data import build_dataloader, call_model, split_batch  # noqa: E402
from inc_flow.metrics import TopK  # noqa: E402
from inc_flow.quant.evaluate import MetricEvaluator, repeat_batch  # noqa: E402
from inc_flow.quant.latency import time_side_by_side  # noqa: E402
from inc_flow.search.speed import FP32, TRIAL, Candidate, Spread  # noqa: E402

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # torch.ao is deprecated
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

# The torch.ao deprecation and quantized-tensor warnings repeat on every call; the same
# messages inc_flow.quant.ao filters.
_QUIET = (
    (r"torch\.ao\.quantization is deprecated", DeprecationWarning),
    (r"torch\.quantize_per_tensor, torch\.quantize_per_channel and other", UserWarning),
    (r"Please use quant_min and quant_max to specify the range for observers", UserWarning),
)

NOISE_NOTE = (
    "Latencies are noisy: a shared 2-core machine (other engineers' test runs), measured "
    "within the same run in inc_flow's side-by-side round (the methods interleaved, the order "
    "reversed every round): median of the per-round medians (min-max over rounds); speed-up "
    "= fp32 / method within each round. Compare rows of one table only: across runs the "
    "same model's latency moved by up to 2x."
)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        for message, category in _QUIET:
            warnings.filterwarnings("ignore", message=message, category=category)
        yield


@dataclass(frozen=True)
class Subject:
    """A benchmarked model: its config, loader, default targets and how to make it exist."""

    name: str
    conf: Path
    load: Callable[[], nn.Module]
    targets: tuple[float, ...]
    ensure: Callable[[argparse.Namespace], str | None]  # None: ready; else why skipped


@dataclass
class Row:
    model: str
    method: str
    accuracy: float | None
    drop: float | None = None
    trials: int | None = None
    calibration_passes: int | None = None
    samples_saved: int | None = None
    wall_s: float | None = None
    latency_b1: float | None = None  # medians over the rounds (the spreads below)
    latency_bn: float | None = None
    speedup: float | None = None  # at batch N
    round_b1: Spread | None = None  # latency, ms
    round_bn: Spread | None = None
    speedup_b1: Spread | None = None  # fp32 / this row, per round
    speedup_bn: Spread | None = None
    tuner: str = ""  # the tuner's own side-by-side round: speed-up at bN and b1, verdict
    batch: int | None = None  # N of latency bN
    note: str = ""
    module: nn.Module | None = field(default=None, repr=False)
    backend: str | None = None  # the int8 kernel library the module runs on


def _load_lenet() -> nn.Module:
    from examples.lenet.model import load_lenet

    return load_lenet()


def _load_resnet18() -> nn.Module:
    from examples.resnet18.model import load_resnet18

    return load_resnet18()


def _lenet_ready(args: argparse.Namespace) -> str | None:
    del args
    return None


def _resnet18_ready(args: argparse.Namespace) -> str | None:
    from examples.resnet18.model import checkpoint_path

    path = checkpoint_path()
    if path.is_file():
        return None
    if args.skip_train:
        return f"skipped: no checkpoint at {path} and --skip-train given"
    print(f"no ResNet18 checkpoint at {path}: training it (python -m examples.resnet18.train)")
    subprocess.run([sys.executable, "-m", "examples.resnet18.train"], cwd=ROOT, check=True)
    return None


SUBJECTS = {
    "lenet": Subject("lenet", ROOT / "conf/lenet_static.yaml", _load_lenet, (0.01,), _lenet_ready),
    "resnet18": Subject(
        "resnet18",
        ROOT / "conf/resnet18_static.yaml",
        _load_resnet18,
        (0.001, 0.01),
        _resnet18_ready,
    ),
}


# --- the three methods --------------------------------------------------------------------


def base_config(conf: Path, args: argparse.Namespace) -> dict:
    """The yaml as a dict; ``--full-eval`` lifts the eval ``iteration`` cap; MLflow tracking
    off unless ``--track`` (then an SQLite store under ``--workdir``, never the project's)."""
    raw = yaml.safe_load(conf.read_text())
    if args.full_eval:
        raw["evaluation"]["accuracy"]["iteration"] = -1
    if args.track:
        raw["tracking"] = {"uri": f"sqlite:///{(args.workdir / 'mlflow.db').resolve()}"}
    else:
        raw["tracking"] = {"enabled": False}
    return raw


def tuned_config(raw: dict, relative: float, workspace: Path, study: str) -> Config:
    """``raw`` with a fresh workspace, a unique study and the target ``relative``."""
    raw = copy.deepcopy(raw)
    raw["tuning"]["workspace"] = {"path": str(workspace)}
    raw["tuning"]["study_name"] = study
    raw["tuning"]["accuracy_criterion"] = {"relative": relative}
    return Config.from_dict(raw)


def fx_one_shot(model: nn.Module, cfg: Config) -> tuple[nn.Module, float]:
    """torch's defaults, no tuning: prepare_fx with the x86 default mapping, calibrate on the
    config's calibration samples (as inc_flow does), convert_fx. Returns (model, seconds)."""
    calib = build_dataloader(cfg.quantization.calibration.dataloader)
    size = int(cfg.quantization.calibration.sampling_size[0])
    start = time.perf_counter()
    torch.backends.quantized.engine = "x86"
    with quiet(), torch.no_grad():
        example, _ = split_batch(next(iter(calib)))
        prepared = prepare_fx(
            copy.deepcopy(model).eval(), get_default_qconfig_mapping("x86"), (example,)
        )
        seen = 0
        for batch in calib:
            inputs, _ = split_batch(batch)
            prepared(inputs)
            seen += inputs.shape[0]
            if seen >= size:
                break
        int8 = convert_fx(prepared)
    return int8.eval(), time.perf_counter() - start


def evaluator_for(cfg: Config) -> MetricEvaluator:
    """The config's eval set and iteration cap with top-1, as inc_flow evaluates."""
    acc = cfg.evaluation.accuracy
    return MetricEvaluator(
        dataloader=build_dataloader(acc.dataloader), metric=TopK(k=1), iteration=acc.iteration
    )


def run_tuning(model: nn.Module, cfg: Config) -> tuple[Outcome, float]:
    start = time.perf_counter()
    with quiet():
        outcome = quantize(cfg, model=model)
    return outcome, time.perf_counter() - start


# --- latency ----------------------------------------------------------------------------


def measure_rows(
    rows: list[Row], example: torch.Tensor, batch: int, args: argparse.Namespace
) -> None:
    """Fill the latencies and speed-ups: inc_flow's side-by-side round over every timed row
    (``args.repeats`` rounds, the order reversed every round; each timing the median of
    ``args.iterations`` calls after ``args.warmup``)."""
    inputs = {1: repeat_batch(example, 1), batch: repeat_batch(example, batch)}
    timed = [r for r in rows if r.module is not None]
    candidates = [
        Candidate(str(i), r.module, FP32 if r.method == "fp32" else TRIAL, r.backend)
        for i, r in enumerate(timed)
    ]
    with quiet():
        samples = time_side_by_side(
            candidates, inputs, call_model, args.repeats, args.warmup, args.iterations,
            args.threads,
        )  # fmt: skip
    fp32 = samples[str(next(i for i, r in enumerate(timed) if r.method == "fp32"))]
    for i, row in enumerate(timed):
        mine = samples[str(i)]
        row.round_b1, row.round_bn = Spread.of(mine[1]), Spread.of(mine[batch])
        row.speedup_b1, row.speedup_bn = (
            Spread.of([f / m for f, m in zip(fp32[b], mine[b], strict=True)]) for b in (1, batch)
        )
        row.latency_b1, row.latency_bn = row.round_b1.median, row.round_bn.median
        row.speedup = row.speedup_bn.median


def tuner_round(outcome: Outcome) -> str:
    """The tuner's own side-by-side round: speed-up at bN and b1, and its verdict."""
    r = outcome.result
    speed = r.speed
    if speed is None:
        return "-"
    text = (
        f"{speed.speedup[speed.batch].text('.2f', 'x')} at b{speed.batch}, "
        f"{speed.speedup[1].text('.2f', 'x')} at b1 ({speed.rounds} rounds, "
        f"{len(speed.finalists)} finalists)"
    )
    return text if r.faster_than_fp32 else f"{text}; not champion: {r.verdict}"


# --- one model ----------------------------------------------------------------------------


def trial_lines(model: str, target: float, outcome: Outcome) -> list[str]:
    r = outcome.result
    lines = [
        f"{model}, target {target:.1%} relative: fp32 {_f(r.baseline_accuracy)}, required "
        f"{_f(r.required_accuracy)}, stop: {r.stop_reason}, {r.n_trials} trials, "
        f"{r.calibration_passes} calibration passes, {r.eval_samples_saved} eval samples saved, "
        f"{r.wall_time_s:.1f} s",
    ]
    for rec in r.records:
        fallback = fallback_note(rec.plan)
        observer = rec.plan.ops[0].act_algorithm if rec.plan.ops else "-"
        lines.append(
            f"  trial {rec.number:>2} {rec.phase:<11} {rec.state:<9} acc {_f(rec.accuracy)} "
            f"drop {_pct(rec.relative_drop)} lat {_f(rec.latency_ms, '.3f')} ms "
            f"eval {rec.eval_samples}/{rec.eval_total} act {observer}, {fallback}"
        )
    if r.verdict:
        lines.append(f"  speed verdict: {r.verdict}")
    lines += [f"  warning: {w}" for w in r.warnings if "batch 1" in w]
    return lines


def bench_model(subject: Subject, args: argparse.Namespace, workdir: Path) -> tuple[list, list]:
    """Rows and trial-log lines for one model."""
    skipped = subject.ensure(args)
    if skipped:
        print(f"{subject.name}: {skipped}")
        return [Row(subject.name, "-", None, note=skipped)], []
    targets = args.relative or subject.targets
    fp32 = subject.load().eval()
    raw = base_config(subject.conf, args)
    base_cfg = as_config(raw)
    batch = int(base_cfg.evaluation.performance.dataloader.batch_size)
    evaluator = evaluator_for(base_cfg)

    print(f"\n== {subject.name}: fp32 and FX one-shot", flush=True)
    fp32_acc = evaluator.evaluate(fp32, None).value
    one_shot, one_shot_s = fx_one_shot(fp32, base_cfg)
    with quiet():
        one_shot_acc = evaluator.evaluate(one_shot, None).value
    rows = [
        Row(subject.name, "fp32", fp32_acc, module=fp32),
        Row(
            subject.name,
            "FX one-shot (torch x86 defaults)",
            one_shot_acc,
            drop=_drop(fp32_acc, one_shot_acc),
            trials=1,
            calibration_passes=1,
            samples_saved=0,
            wall_s=one_shot_s,
            note="wall time = prepare + calibrate + convert",
            module=one_shot,
            backend="x86",
        ),
    ]
    log: list[str] = []
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    for target in targets:
        study = f"bench-{subject.name}-{target:g}-{stamp}"
        cfg = tuned_config(raw, target, workdir / study, study)
        print(f"\n== {subject.name}: inc_flow tuning, relative target {target:.1%}", flush=True)
        outcome, seconds = run_tuning(fp32, cfg)
        r = outcome.result
        lines = trial_lines(subject.name, target, outcome)
        print("\n".join(lines), flush=True)
        log += lines
        q = outcome.q_model
        best = r.best
        note = fallback_note(best.plan) if best else ""
        if q is None:
            miss = _f(r.closest_miss)
            note = f"no plan met the target ({r.stop_reason}); the closest missed by {miss}"
        rows.append(
            Row(
                subject.name,
                f"inc_flow basic, target {target:.1%}",
                best.accuracy if best else None,
                drop=_drop(fp32_acc, best.accuracy) if best else None,
                trials=r.n_trials,
                calibration_passes=r.calibration_passes,
                samples_saved=r.eval_samples_saved,
                wall_s=r.wall_time_s,
                note=note + (f"; quantize() call {seconds:.1f} s" if q is not None else ""),
                module=q.model if q is not None else None,
                backend=best.plan.backend if best else None,
                tuner=tuner_round(outcome),
            )
        )
        if abs(r.baseline_accuracy - fp32_acc) > 1e-9:
            log.append(f"  note: inc_flow's fp32 baseline {r.baseline_accuracy} != {fp32_acc}")

    print(f"\n== {subject.name}: latency ({args.repeats} rounds)", flush=True)
    example, _ = split_batch(next(iter(evaluator.dataloader)))
    measure_rows(rows, example, batch, args)
    for row in rows:
        row.module = None
        row.batch = batch
    return rows, log


# --- output -------------------------------------------------------------------------------


def fallback_note(plan: Any) -> str:
    """Which ops a plan leaves in fp32: names when few, else counts per op type."""
    fp32 = set(plan.fp32_ops)
    if not fp32:
        return "all ops int8"
    if len(fp32) <= 3:
        return "fp32: " + ", ".join(sorted(fp32))
    types: dict[str, list[int]] = {}
    for op in plan.ops:
        row = types.setdefault(op.op_type, [0, 0])
        row[0] += op.name in fp32
        row[1] += 1
    per_type = ", ".join(f"{t} {n}/{total}" for t, (n, total) in types.items() if n)
    return f"fp32: {len(fp32)} of {len(plan.ops)} ops ({per_type})"


def _f(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _drop(base: float, value: float) -> float:
    return (base - value) / base if base else base - value


def _s(spread: Spread | None, spec: str = ".3f", unit: str = "") -> str:
    return "-" if spread is None else spread.text(spec, unit)


def splice_between(readme: Path, text: str, begin: str, end: str) -> bool:
    """Replace the text between the ``begin``/``end`` markers in ``readme``; False when they
    are missing (the file is left as it was)."""
    body = readme.read_text()
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if not pattern.search(body):
        return False
    readme.write_text(pattern.sub(lambda _: f"{begin}\n{text}\n{end}", body))
    return True


def table(rows: list[Row]) -> list[str]:
    head = (
        "| model | method | accuracy | drop vs fp32 (rel.) | trials | calibration passes "
        "| eval samples saved | tuning wall time (s) | latency b1 (ms) | latency bN (ms) "
        "| speed-up at b1 | speed-up at bN | the tuner's own round | notes |"
    )
    lines = [head, "|" + "---|" * 14]
    for r in rows:
        n = r.batch
        lines.append(
            f"| {r.model} | {r.method} | {_f(r.accuracy)} | {_pct(r.drop)} "
            f"| {_f(r.trials, 'd')} | {_f(r.calibration_passes, 'd')} "
            f"| {_f(r.samples_saved, 'd')} | {_f(r.wall_s, '.1f')} | {_s(r.round_b1)} "
            f"| {_s(r.round_bn)}{f' (N={n})' if n else ''} | {_s(r.speedup_b1, '.2f', 'x')} "
            f"| {_s(r.speedup_bn, '.2f', 'x')} | {r.tuner or '-'} | {r.note} |"
        )
    return lines


def header(args: argparse.Namespace) -> list[str]:
    eval_set = (
        "the whole 10k Fashion-MNIST test set for every model (`--full-eval`)"
        if args.full_eval
        else "LeNet: the 10k Fashion-MNIST test set; ResNet18: its first 2048 images, "
        "`iteration: 8` x batch 256"
    )
    tracking = (
        f"MLflow tracking on (SQLite under {args.workdir})"
        if args.track
        else "MLflow tracking off (`--track` turns it on)"
    )
    return [
        "# inc_flow tuning vs plain FX one-shot quantization",
        "",
        f"Run {datetime.datetime.now().isoformat(timespec='seconds')} on {platform.node()} "
        f"({platform.processor() or platform.machine()}), torch {torch.__version__}, "
        f"quantized engine per model (x86 unless tuned otherwise), {args.threads} intra-op "
        f"thread(s); latency = {args.repeats} side-by-side rounds x {args.iterations} timed "
        f"calls (after {args.warmup} warm-up calls each round).",
        "",
        NOISE_NOTE,
        f"Accuracy: top-1 on the config's eval set ({eval_set}). Tuning wall time is "
        "inc_flow's own `TuneResult.wall_time_s` (fp32 baseline + trials, each with its "
        f"evaluation and latency measurement; {tracking}). The inc_flow row is its best "
        "passing plan (basic strategy, `timeout: 0`: exit at the first passing trial); "
        "its latency is re-measured here beside the others.",
        "",
    ]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="lenet,resnet18", help="comma list: lenet,resnet18")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved latency rounds")
    parser.add_argument("--iterations", type=int, default=20, help="timed calls per round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls per round")
    parser.add_argument(
        "--relative",
        default=None,
        help="comma list of relative accuracy targets for every model "
        "(default: LeNet 0.01; ResNet18 0.001,0.01)",
    )
    parser.add_argument(
        "--full-eval", action="store_true", help="evaluate on the whole eval set (no cap)"
    )
    parser.add_argument(
        "--track", action="store_true", help="MLflow tracking into <workdir>/mlflow.db"
    )
    parser.add_argument("--skip-train", action="store_true", help="skip ResNet18 if untrained")
    parser.add_argument(
        "--workdir", type=Path, default=Path("/tmp/inc_flow_bench"), help="tuning workspaces"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results.md")
    args = parser.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in SUBJECTS]
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {sorted(SUBJECTS)}")
    if min(args.threads, args.repeats, args.iterations) < 1 or args.warmup < 0:
        parser.error("--threads, --repeats and --iterations must be >= 1, --warmup >= 0")
    if args.relative:
        args.relative = tuple(float(v) for v in args.relative.split(","))
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] %(message)s")
    torch.set_num_threads(args.threads)  # evaluation and tuning too, not only latency
    torch.manual_seed(0)
    rows: list[Row] = []
    log: list[str] = []
    for name in args.models:
        model_rows, model_log = bench_model(SUBJECTS[name], args, args.workdir)
        rows += model_rows
        log += model_log
    lines = header(args) + table(rows) + ["", "## Trial sequences", "", "```", *log, "```", ""]
    text = "\n".join(lines)
    print("\n" + text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
