"""The model zoo table: every example model tuned by inc_flow with its own ``conf/`` file.

For each model (LeNet, the 28x28 ResNet18 and MobileNetV2 on Fashion-MNIST, all-MiniLM-L6-v2
sentence embeddings, the LSTM waveform classifier), in one process:

1. ``inc_flow.api.quantize(conf)`` exactly as ``inc-flow tune conf/<model>.yaml`` runs it
   (model from ``model.factory``, data and metric from the config), in a fresh workspace and
   study under ``--workdir``, MLflow tracking off;
2. fp32 and the tuned int8 model's latency at batch 1 and at the config's performance batch,
   interleaved over ``--repeats`` rounds (``bench_tuning.measure_rows``), one intra-op thread.

It prints a markdown table, writes it to ``--out`` (default ``benchmarks/models.md``) and
replaces the table between the ``bench_models`` markers in README.md (``--no-readme``
leaves the README alone). Run from the repository root::

    python benchmarks/bench_models.py [--models resnet18,mobilenetv2,minilm,lstm] [--train]

Models whose checkpoint is not cached (ResNet18, MobileNetV2) are trained first with
``--train`` (``python -m examples.<model>.train``, minutes each), else shown as skipped; so
is MiniLM without the ``[minilm]`` extra.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "benchmarks"):  # `python benchmarks/bench_models.py` from anywhere
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from bench_tuning import (  # noqa: E402
    NOISE_NOTE,
    Row,
    measure_rows,
    quiet,
    splice_between,
    trial_lines,
    tuner_round,
)

from inc_flow.api import Outcome, quantize  # noqa: E402
from inc_flow.config.sections import Config  # noqa: E402
from inc_flow.data import build_dataloader, split_batch  # noqa: E402
from inc_flow.errors import ConfigError  # noqa: E402
from inc_flow.model.factory import build_model  # noqa: E402

BEGIN = "<!-- bench_models:begin -->"
END = "<!-- bench_models:end -->"


@dataclass(frozen=True)
class Subject:
    name: str
    conf: str
    train: str | None = None  # `python -m <train>` makes a missing checkpoint


SUBJECTS = {
    s.name: s
    for s in (
        Subject("lenet", "conf/lenet_static.yaml"),
        Subject("resnet18", "conf/resnet18_static.yaml", "examples.resnet18.train"),
        Subject("mobilenetv2", "conf/mobilenetv2_static.yaml", "examples.mobilenetv2.train"),
        Subject("minilm", "conf/minilm_dynamic.yaml"),
        Subject("lstm", "conf/lstm_dynamic.yaml"),
    )
}
METRIC_NAMES = {"topk": "top-1", "CosineSimilarity": "cosine to fp32", "Accuracy": "accuracy"}
SHORT_APPROACH = {
    "post_training_static_quant": "static",
    "post_training_dynamic_quant": "dynamic",
    "quant_aware_training": "QAT",
}


@dataclass
class Result:
    """One model's line of the table (``None`` values print as a dash)."""

    subject: Subject
    skipped: str = ""
    approach: str = ""
    metric: str = ""
    eval_n: int | None = None  # samples the metric saw
    fp32: float | None = None
    all_int8: str = "-"
    int8: float | None = None
    fallbacks: str = "-"
    n_ops: int | None = None
    trials: int | None = None
    wall_s: float | None = None
    call_s: float | None = None
    batch: int | None = None
    rows: tuple[Row, ...] = ()
    log: tuple[str, ...] = ()
    tuner: str = "-"  # the tuner's own side-by-side round (bench_tuning.tuner_round)


def _config(subject: Subject, args: argparse.Namespace) -> Config:
    raw = yaml.safe_load((ROOT / subject.conf).read_text())
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    workspace = args.workdir / subject.name
    shutil.rmtree(workspace, ignore_errors=True)
    raw["tuning"]["workspace"] = {"path": str(workspace)}
    raw["tuning"]["study_name"] = f"bench-models-{subject.name}-{stamp}"
    raw["tracking"] = {"enabled": False}
    return Config.from_dict(raw)


def _fp32_model(subject: Subject, cfg: Config, args: argparse.Namespace) -> Any:
    """The fp32 model, or the reason it cannot be had (trained first with ``--train``)."""
    try:
        return build_model(cfg.model.factory, cfg.model.weights)
    except ConfigError as e:
        if not (args.train and subject.train):
            how = f" (`--train` runs `python -m {subject.train}`)" if subject.train else ""
            return f"skipped: {e}{how}"
    print(f"== {subject.name}: training (`python -m {subject.train}`)", flush=True)
    subprocess.run([sys.executable, "-m", subject.train], cwd=ROOT, check=True)
    return build_model(cfg.model.factory, cfg.model.weights)


def _all_int8(outcome: Outcome) -> str:
    """The metric of the first trial that kept every op int8 (the default plan)."""
    for record in outcome.result.records:
        if record.plan.fp32_ops or record.accuracy is None:
            continue
        if record.eval_total and record.eval_samples < record.eval_total:
            return f"{record.accuracy:.4f} (rejected at {record.eval_samples}/{record.eval_total})"
        return f"{record.accuracy:.4f}"
    return "-"


def _fallbacks(plan: Any) -> str:
    fp32 = plan.fp32_ops
    if not fp32:
        return "none"
    if len(fp32) <= 4:
        return ", ".join(f"`{name}`" for name in fp32)
    return f"{len(fp32)} ops: " + ", ".join(f"`{name}`" for name in fp32[:3]) + ", ..."


def bench(subject: Subject, args: argparse.Namespace) -> Result:
    cfg = _config(subject, args)
    metric = cfg.evaluation.accuracy.metric
    result = Result(
        subject,
        approach=SHORT_APPROACH.get(cfg.quantization.approach, cfg.quantization.approach),
        metric=METRIC_NAMES.get(metric.name, metric.name) if metric is not None else "-",
    )
    fp32 = _fp32_model(subject, cfg, args)
    if isinstance(fp32, str):
        print(f"== {subject.name}: {fp32}", flush=True)
        result.skipped = fp32
        return result
    print(f"\n== {subject.name}: inc_flow tuning with {subject.conf}", flush=True)
    start = time.perf_counter()
    with quiet():
        outcome = quantize(cfg, model=fp32)
    result.call_s = time.perf_counter() - start
    r = outcome.result
    result.fp32, result.trials, result.wall_s = r.baseline_accuracy, r.n_trials, r.wall_time_s
    result.all_int8 = _all_int8(outcome)
    result.tuner = tuner_round(outcome)
    # every SUBJECTS config states a relative target
    result.log = tuple(trial_lines(subject.name, cfg.tuning.accuracy_criterion.relative, outcome))
    print("\n".join(result.log), flush=True)
    if outcome.q_model is None:
        result.skipped = f"no plan met the target ({r.stop_reason})"
        return result
    plan = outcome.q_model.plan
    result.int8, result.fallbacks, result.n_ops = r.best.accuracy, _fallbacks(plan), len(plan.ops)
    result.eval_n = r.best.eval_total or None
    result.batch = int(cfg.evaluation.performance.dataloader.batch_size)
    loader = build_dataloader(cfg.evaluation.accuracy.dataloader)
    example, _ = split_batch(next(iter(loader)))
    rows = [
        Row(subject.name, "fp32", result.fp32, module=fp32),
        Row(
            subject.name,
            "int8",
            result.int8,
            module=outcome.q_model.model,
            backend=outcome.q_model.plan.backend,
        ),
    ]
    print(f"== {subject.name}: latency ({args.repeats} rounds)", flush=True)
    measure_rows(rows, example, result.batch, args)
    for row in rows:
        row.module = None
    result.rows = tuple(rows)
    return result


# --- output -------------------------------------------------------------------------------


def _num(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def _spread(speedup: Any) -> str:
    """fp32 / int8 per round: median (min-max), never a ratio of two medians."""
    return "-" if speedup is None else speedup.text(".2f", "x")


def table(results: list[Result]) -> list[str]:
    lines = [
        "| model | approach | metric (eval samples) | fp32 | all-int8 | tuned int8 | drop "
        "| fp32 fallbacks | trials | tuning wall time | fp32 latency b1 / bN "
        "| int8 latency b1 / bN | speed-up b1 | speed-up bN | the tuner's round |",
        "|" + "---|" * 15,
    ]
    for r in results:
        if not r.rows:
            lines.append(
                f"| {r.subject.name} | {r.approach} | {r.metric} | {_num(r.fp32)} | {r.all_int8} "
                f"| - | - | {r.skipped} | {r.trials or '-'} | {_num(r.wall_s, '.1f')} "
                f"| - | - | - | - | {r.tuner} |"
            )
            continue
        fp32, int8 = r.rows
        drop = (r.fp32 - r.int8) / r.fp32 if r.fp32 else None
        lines.append(
            f"| {r.subject.name} | {r.approach} | {r.metric} ({r.eval_n}) | {_num(r.fp32)} "
            f"| {r.all_int8} | {_num(r.int8)} "
            f"| {_num(None if drop is None else 100 * drop, '.2f')} % "
            f"| {r.fallbacks} (of {r.n_ops}) | {r.trials} | {r.wall_s:.1f} s "
            f"| {fp32.latency_b1:.3f} / {fp32.latency_bn:.2f} ms (b{r.batch}) "
            f"| {int8.latency_b1:.3f} / {int8.latency_bn:.2f} ms "
            f"| {_spread(int8.speedup_b1)} | {_spread(int8.speedup_bn)} | {r.tuner} |"
        )
    return lines


def header(args: argparse.Namespace) -> list[str]:
    return [
        f"Produced by `python benchmarks/bench_models.py` "
        f"({datetime.datetime.now().isoformat(timespec='minutes')}, {platform.node()}, "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{args.threads} intra-op thread(s); latency = median of {args.repeats} interleaved "
        f"rounds x {args.iterations} calls). Each model is tuned with its own `conf/` file "
        "as `inc-flow tune` runs it; the metric and its eval set are the config's. "
        "all-int8 = the first trial, every op int8 (a `rejected at` count means exact early "
        "rejection stopped it once the target was out of reach); drop is relative to fp32; "
        "tuning wall time is `TuneResult.wall_time_s` (fp32 baseline + trials). Speed-ups "
        "are fp32 / int8 per interleaved round: median (min-max). The tuner's round is "
        "`TuneResult.speed`, the side-by-side round that chose the model and its alias "
        "(speed-up at bN, at b1; 'not champion' when int8 lost to fp32).",
        "",
        NOISE_NOTE,
        "",
    ]


def splice_readme(readme: Path, text: str) -> bool:
    """Replace the text between the markers in ``readme``; False when they are missing."""
    return splice_between(readme, text, BEGIN, END)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(SUBJECTS), help="comma list")
    parser.add_argument("--train", action="store_true", help="train missing checkpoints")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved latency rounds")
    parser.add_argument("--iterations", type=int, default=20, help="timed calls per round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls per round")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/inc_flow_bench_models"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "models.md")
    parser.add_argument("--no-readme", action="store_true", help="do not update README.md")
    args = parser.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in SUBJECTS]
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {list(SUBJECTS)}")
    if min(args.threads, args.repeats, args.iterations) < 1 or args.warmup < 0:
        parser.error("--threads, --repeats and --iterations must be >= 1, --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] %(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results = [bench(SUBJECTS[name], args) for name in args.models]
    text = "\n".join(header(args) + table(results))
    log = [line for r in results for line in r.log]
    print("\n" + text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        "# inc_flow on the example models\n\n"
        + text
        + "\n\n## Trial sequences\n\n```\n"
        + "\n".join(log)
        + "\n```\n"
    )
    print(f"written to {args.out}")
    if not args.no_readme:
        done = splice_readme(ROOT / "README.md", text)
        print("README.md table updated" if done else f"README.md has no {BEGIN} marker")


if __name__ == "__main__":
    main()
