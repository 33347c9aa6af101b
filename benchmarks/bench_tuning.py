"""inc_flow's accuracy-driven tuning beside plain torch FX one-shot quantization.

For each model (LeNet with ``conf/lenet_static.yaml``, the 28x28 ResNet18 with
``conf/resnet18_static.yaml``) this script, in one process and one run:

1. tunes with inc_flow (``inc_flow.api.quantize``) in a fresh workspace under ``--workdir``,
   once per accuracy target (``--relative``; default LeNet 1%, ResNet18 0.1% and 1%);
2. quantizes "plain FX one-shot": ``prepare_fx(model, get_default_qconfig_mapping("x86"),
   example)``, calibration on the same samples inc_flow calibrates on, ``convert_fx`` --
   torch's defaults, no tuning -- and evaluates it on the same eval set;
3. measures fp32, FX one-shot and inc_flow's int8 latency at batch 1 and batch N (the
   config's performance batch: 64 LeNet, 32 ResNet18) with ``--threads`` intra-op threads,
   interleaving the models over ``--repeats`` rounds and taking the median of the rounds'
   medians, so machine load hits every method alike.

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
import statistics
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
from inc_flow.quant.latency import measure_latency  # noqa: E402

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
    "within the same run, interleaved across methods (order reversed every other round); "
    "median of the per-round medians. Compare rows of one table only: across runs the same "
    "model's latency moved by up to 2x, and within one run two copies of the same plan "
    "differed by up to ~25% at batch 1 (5-10% at batch N)."
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
    latency_b1: float | None = None
    latency_bn: float | None = None
    speedup: float | None = None
    batch: int | None = None  # N of latency bN
    note: str = ""
    module: nn.Module | None = field(default=None, repr=False)


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
    """Fill latency_b1/latency_bn: ``args.repeats`` rounds, each timing every model in turn
    (``args.iterations`` calls after ``args.warmup``; the order reverses every other round);
    the median of the round medians."""
    inputs = {1: repeat_batch(example, 1), batch: repeat_batch(example, batch)}
    timed = [r for r in rows if r.module is not None]
    samples: dict[tuple[int, int], list[float]] = {}
    with quiet():
        for round_ in range(args.repeats):
            order = list(enumerate(timed))
            for i, row in order if round_ % 2 == 0 else order[::-1]:  # no favoured slot
                for b, x in inputs.items():
                    result = measure_latency(
                        lambda t, m=row.module: call_model(m, t),
                        (x,),
                        warmup=args.warmup,
                        iterations=args.iterations,
                        threads=args.threads,
                    )
                    samples.setdefault((i, b), []).append(result.median_ms)
    for i, row in enumerate(timed):
        row.latency_b1 = statistics.median(samples[(i, 1)])
        row.latency_bn = statistics.median(samples[(i, batch)])
    fp32 = next(r for r in timed if r.method == "fp32")
    for row in timed:
        row.speedup = fp32.latency_bn / row.latency_bn if row.latency_bn else None


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
    if r.slower_than_fp32:
        lines.append("  inc_flow flagged its best int8 plan as slower than fp32")
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


def table(rows: list[Row]) -> list[str]:
    head = (
        "| model | method | accuracy | drop vs fp32 (rel.) | trials | calibration passes "
        "| eval samples saved | tuning wall time (s) | latency b1 (ms) | latency bN (ms) "
        "| speed-up vs fp32 at bN | notes |"
    )
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        n = r.batch
        lines.append(
            f"| {r.model} | {r.method} | {_f(r.accuracy)} | {_pct(r.drop)} "
            f"| {_f(r.trials, 'd')} | {_f(r.calibration_passes, 'd')} "
            f"| {_f(r.samples_saved, 'd')} | {_f(r.wall_s, '.1f')} | {_f(r.latency_b1, '.3f')} "
            f"| {_f(r.latency_bn, '.3f')}{f' (N={n})' if n else ''} "
            f"| {_f(r.speedup, '.2f')} | {r.note} |"
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
        f"quantized engine x86, {args.threads} intra-op thread(s); latency = "
        f"{args.repeats} rounds x {args.iterations} timed calls (after {args.warmup} warm-up).",
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
