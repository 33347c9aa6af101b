"""What deployment runs, timed side by side: each runtime of a model, raw and through its pyfunc.

For each model (LeNet with ``conf/lenet_static.yaml``, the 28x28 ResNet18 with
``conf/resnet18_static.yaml``), in one process:

1. the tuned plan: ``inc_flow.api.quantize(conf)`` (MLflow tracking off) saved to
   ``--workdir/<model>/output`` (``--reuse`` takes an output already there), loaded back with
   ``inc_flow.load``, and logged once with ``inc_flow.model.pyfunc.log_model`` into an SQLite
   store under ``--workdir`` (never the project's);
2. every runtime of :data:`RUNTIMES` built from it: fp32 eager, plain FX int8 one-shot
   (``bench_tuning.fx_one_shot``: torch's x86 defaults, the config's calibration samples),
   the tuned plan (``inc_flow.load``), the same model through
   ``mlflow.pyfunc.load_model(...).predict`` (torch's default threads, as logged by default),
   and the pyfunc loaded with ``INC_FLOW_NUM_THREADS=1`` (how every pyfunc ran before: 1
   intra-op thread whatever the machine has);
3. for each ``--threads`` count (default 1 and 2): all runtimes timed at batch 1 and batch N
   (the config's performance batch) in inc_flow's side-by-side round
   (``inc_flow.quant.latency.time_side_by_side``: interleaved, the order reversed every round;
   each timing the median of ``--iterations`` calls after ``--warmup``).

Reported per runtime: latency (median over rounds, min-max), the speed-up fp32 / runtime and,
for a pyfunc, its overhead pyfunc / raw model, each a per-round ratio (median, min-max).
Prints the table, writes it to ``--out`` (default ``benchmarks/runtimes.md``) and between the
``bench_runtimes`` markers in README.md (``--no-readme`` leaves it). Run from the repository
root::

    python benchmarks/bench_runtimes.py [--models lenet,resnet18] [--threads 1,2]

Adding a runtime (e.g. OpenVINO) is one :class:`Runtime` appended to :data:`RUNTIMES`: a
name, ``build(case)`` returning the object to call (raise :class:`Skip` to leave the row out
with a reason), ``predict(obj, x)`` for one call on a torch batch, and for a pyfunc ``wraps``,
the name of the runtime it serves (its overhead column).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import functools
import logging
import os
import platform
import sys
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "benchmarks"):  # `python benchmarks/bench_runtimes.py` from anywhere
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from bench_tuning import SUBJECTS, fx_one_shot, quiet, splice_between  # noqa: E402

import inc_flow  # noqa: E402
from inc_flow.api import quantize  # noqa: E402
from inc_flow.config.sections import Config  # noqa: E402
from inc_flow.data import build_dataloader, split_batch  # noqa: E402
from inc_flow.model.threads import ENV_THREADS  # noqa: E402
from inc_flow.quant.evaluate import repeat_batch  # noqa: E402
from inc_flow.quant.latency import time_side_by_side  # noqa: E402
from inc_flow.search.speed import FP32, TRIAL, Candidate, Spread  # noqa: E402

TORCH_FX, OPENVINO = "torch_fx", "openvino"
OV_INT8 = "openvino_int8"  # not a config value: OpenVINO's all-int8 plan, untuned

BEGIN = "<!-- bench_runtimes:begin -->"
END = "<!-- bench_runtimes:end -->"
GOAL_OVERHEAD = 0.10  # the pyfunc within 10 % of the model it wraps, at batch N


class Skip(Exception):  # noqa: N818 - a row left out, with the reason, not an error
    """Raised by a ``build`` to leave its runtime out of the table, saying why."""


@dataclass
class Case:
    """One model: its config, fp32 model, eval batch and the tuned plan (built on first use)."""

    name: str
    cfg: Config
    fp32: nn.Module
    example: torch.Tensor
    batch: int
    workdir: Path
    args: argparse.Namespace
    cache: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def once(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self.cache:
            self.cache[key] = make()
        return self.cache[key]

    def tuned_dir(self, runtime: str = TORCH_FX) -> Path:
        """The output directory of the plan tuned with ``quantization.runtime: [runtime]``
        (tuned here unless ``--reuse`` finds one); ``OV_INT8``: OpenVINO's all-int8 plan."""
        make = self._ov_int8 if runtime == OV_INT8 else functools.partial(self._tune, runtime)
        return self.once(f"tuned_dir:{runtime}", make)

    def _ov_int8(self) -> Path:
        """OpenVINO's all-int8 plan (NNCF, the config's calibration samples), saved."""
        from inc_flow.model.output import QuantizedModel
        from inc_flow.quant.engine import FxEngine
        from inc_flow.quant.openvino import OpenVinoEngine
        from inc_flow.search.plan import default_plan

        out = self.workdir / self.name / "output_openvino_int8"
        if self.args.reuse and (out / "best_configure.yaml").is_file():
            self.notes.append(f"{self.name}: OpenVINO all-int8 plan reused from {out}")
            return out
        cal = self.cfg.quantization.calibration
        size = int(cal.sampling_size[0])
        with quiet():
            plan = default_plan(FxEngine(self.fp32, self.example).ops(), runtime=OPENVINO)
            calib = build_dataloader(cal.dataloader)
            engine = OpenVinoEngine(self.fp32, self.example, calib, size)
            QuantizedModel(engine.build(plan), plan, self.example, size).save(out)
        return out

    def _tune(self, runtime: str) -> Path:
        suffix = "" if runtime == TORCH_FX else f"_{runtime}"
        out = self.workdir / self.name / f"output{suffix}"
        if self.args.reuse and (out / "best_configure.yaml").is_file():
            self.notes.append(f"{self.name}: {runtime} tuned plan reused from {out}")
            return out
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        raw = self.cfg.to_dict()
        raw["quantization"]["runtime"] = [runtime]
        raw["tuning"]["workspace"] = {"path": str(self.workdir / self.name / f"ws{suffix}")}
        raw["tuning"]["study_name"] = f"bench-runtimes-{self.name}{suffix}-{stamp}"
        print(f"== {self.name}: tuning with {self.args.conf[self.name]}, runtime {runtime}",
              flush=True)  # fmt: skip
        start = time.perf_counter()
        with quiet():
            outcome = quantize(Config.from_dict(raw), model=copy.deepcopy(self.fp32))
        r = outcome.result
        if outcome.q_model is None:
            raise Skip(f"no {runtime} plan met the target ({r.stop_reason})")
        fp32_ops = list(outcome.q_model.plan.fp32_ops)
        self.notes.append(
            f"{self.name}, runtime {runtime}: tuned in {time.perf_counter() - start:.0f} s, "
            f"{r.n_trials} trial(s), "
            f"top-1 {r.best.accuracy:.4f} (fp32 {r.baseline_accuracy:.4f}, "
            f"{r.best.eval_total} eval samples), fp32 ops: {', '.join(fp32_ops) or 'none'}, "
            f"plan: {outcome.q_model.plan.summary()}"
        )
        outcome.q_model.save(out)
        return out

    def logged_uri(self, runtime: str = TORCH_FX) -> str:
        """The tuned plan logged once as inc_flow's pyfunc (default: torch's threads)."""
        return self.once(f"logged_uri:{runtime}", functools.partial(self._log, runtime))

    def _log(self, runtime: str) -> str:
        import mlflow

        from inc_flow.model.pyfunc import log_model

        mlflow.set_tracking_uri(f"sqlite:///{(self.workdir / 'mlflow.db').resolve()}")
        client = mlflow.MlflowClient()
        found = client.get_experiment_by_name("bench-runtimes")
        experiment = (
            found.experiment_id
            if found
            else client.create_experiment(
                "bench-runtimes", artifact_location=(self.workdir / "mlruns").resolve().as_uri()
            )
        )  # artifacts under the workdir too, not ./mlruns
        example = self.example[:2].numpy()
        run = mlflow.start_run(experiment_id=experiment, run_name=f"{self.name}-{runtime}")
        with run, quiet():
            info = log_model(self.tuned_dir(runtime), self.cfg.model.factory, example)
        return info.model_uri


@dataclass(frozen=True)
class Runtime:
    """One row of the table: how to build it for a case and how to call it once.

    ``build(case)`` returns the object ``predict(obj, x)`` calls with a torch batch ``x``
    (raise :class:`Skip` to leave the row out); ``wraps`` names the runtime a pyfunc
    serves (its overhead column); ``goal``: its overhead is checked against
    :data:`GOAL_OVERHEAD` (False for a row shown for comparison); ``backend`` is torch's
    quantized engine while timing (None: left as it is, e.g. a pyfunc sets its own).
    """

    name: str
    build: Callable[[Case], Any]
    predict: Callable[[Any, torch.Tensor], Any]
    wraps: str | None = None
    backend: str | None = None
    goal: bool = True


def _call(model: Any, x: torch.Tensor) -> Any:
    return model(x)


def _pyfunc_predict(model: Any, x: torch.Tensor) -> Any:
    return model.predict(x.numpy())


@contextlib.contextmanager
def _env(name: str, value: str | None) -> Iterator[None]:
    old = os.environ.get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _load_pyfunc(threads: str | None, runtime: str = TORCH_FX) -> Callable[[Case], Any]:
    def build(case: Case) -> Any:
        import mlflow

        _need(runtime)
        with _env(ENV_THREADS, threads), quiet():
            return mlflow.pyfunc.load_model(case.logged_uri(runtime))

    return build


def _need(runtime: str) -> None:
    if runtime in (OPENVINO, OV_INT8):
        try:
            import nncf  # noqa: F401
            import openvino  # noqa: F401
        except ImportError as e:
            raise Skip(f"the [openvino] extra is not installed ({e})") from e


def _tuned(case: Case) -> nn.Module:
    with quiet():
        return inc_flow.load(case.tuned_dir(), copy.deepcopy(case.fp32)).eval()


def _tuned_ov(runtime: str) -> Callable[[Case], nn.Module]:
    def build(case: Case) -> nn.Module:
        _need(OPENVINO)
        with quiet():
            return inc_flow.load(case.tuned_dir(runtime)).eval()  # the IR: no fp32 model

    return build


def _ov_fp32(case: Case) -> nn.Module:
    """The fp32 model converted and compiled by OpenVINO (``bench_openvino.build``)."""
    _need(OPENVINO)
    from bench_openvino import NAMES, build

    with quiet():
        return build(NAMES[3], case.fp32, [case.example[:64]])  # no calibration for fp32


def _ov_predict(model: nn.Module, x: torch.Tensor) -> Any:
    with torch.no_grad():
        return model(x)


FP32_NAME, TUNED_NAME = "fp32 eager", "tuned plan (`inc_flow.load`)"
ONE_SHOT = "FX int8 one-shot (x86)"
OV_TUNED = "OpenVINO tuned plan (`inc_flow.load`)"
OV_ALL_INT8 = "OpenVINO all-int8, untuned (`inc_flow.load`)"
RUNTIMES: list[Runtime] = [
    Runtime(FP32_NAME, lambda case: case.fp32, _call),
    Runtime(
        ONE_SHOT,
        lambda case: fx_one_shot(case.fp32, case.cfg)[0],
        _call,
        backend="x86",
    ),
    Runtime(TUNED_NAME, _tuned, _call, backend="x86"),
    Runtime("tuned plan, pyfunc `predict`", _load_pyfunc(None), _pyfunc_predict, TUNED_NAME),
    Runtime(
        f"tuned plan, pyfunc `predict`, {ENV_THREADS}=1 (as before)",
        _load_pyfunc("1"),
        _pyfunc_predict,
        TUNED_NAME,
        goal=False,
    ),
    Runtime("OpenVINO fp32 (compiled)", _ov_fp32, _ov_predict),
    Runtime(OV_TUNED, _tuned_ov(OPENVINO), _ov_predict),
    Runtime(
        "OpenVINO tuned plan, pyfunc `predict`",
        _load_pyfunc(None, OPENVINO),
        _pyfunc_predict,
        OV_TUNED,
    ),
    Runtime(OV_ALL_INT8, _tuned_ov(OV_INT8), _ov_predict),
    Runtime(
        "OpenVINO all-int8, pyfunc `predict`",
        _load_pyfunc(None, OV_INT8),
        _pyfunc_predict,
        OV_ALL_INT8,
    ),
]


# --- the numbers (pure) -------------------------------------------------------------------
@dataclass(frozen=True)
class Line:
    """One runtime of one model at one thread count: latency, speed-up vs fp32 and, for a
    pyfunc, overhead vs the runtime it wraps (per batch size; ratios taken per round)."""

    model: str
    threads: int
    runtime: str
    batch: int  # N
    latency: Mapping[int, Spread] = field(default_factory=dict)
    speedup: Mapping[int, Spread] = field(default_factory=dict)
    overhead: Mapping[int, Spread] = field(default_factory=dict)  # pyfunc / raw - 1
    skipped: str = ""
    top1: float | None = None  # argmax accuracy on the case's eval subset


def summarize(
    model: str,
    threads: int,
    batch: int,
    samples: Mapping[str, Mapping[int, Sequence[float]]],
    wraps: Mapping[str, str | None],
    fp32: str = FP32_NAME,
    top1: Mapping[str, float] | None = None,
) -> list[Line]:
    """Lines from the side-by-side round's samples (runtime -> batch -> ms per round), in
    ``wraps``' order (runtime -> the runtime it serves, or None). Speed-up = fp32 / runtime
    and overhead = runtime / wrapped - 1, each per round: median (min-max)."""

    def ratios(a: Sequence[float], b: Sequence[float]) -> Spread:
        return Spread.of([x / y for x, y in zip(a, b, strict=True)])

    lines = []
    for name, wrapped in wraps.items():
        mine = samples[name]
        overhead = {}
        if wrapped is not None and wrapped in samples:
            for b, values in mine.items():
                r = ratios(values, samples[wrapped][b])
                overhead[b] = Spread(r.median - 1, r.low - 1, r.high - 1)
        lines.append(
            Line(
                model,
                threads,
                name,
                batch,
                latency={b: Spread.of(v) for b, v in mine.items()},
                speedup={b: ratios(samples[fp32][b], v) for b, v in mine.items()},
                overhead=overhead,
                top1=(top1 or {}).get(name),
            )
        )
    return lines


def _ms(s: Spread | None) -> str:
    if s is None:
        return "-"
    spec = ".3f" if s.median < 10 else ".1f"
    return f"{s.median:{spec}} ({s.low:{spec}}-{s.high:{spec}})"


def _pct(s: Spread | None) -> str:
    if s is None:
        return "-"
    return f"{s.median:+.1%} ({s.low:+.1%} to {s.high:+.1%})".replace("%", " %")


def table(lines: Sequence[Line]) -> list[str]:
    """The markdown table: one row per model, thread count and runtime."""
    out = [
        "| model | threads | runtime | top-1 | latency b1 (ms) | speed-up b1 | latency bN (ms) "
        "| speed-up bN | pyfunc overhead b1 | pyfunc overhead bN |",
        "|" + "---|" * 10,
    ]
    for ln in lines:
        n = ln.batch
        if ln.skipped:
            out.append(
                f"| {ln.model} | {ln.threads} | {ln.runtime} | - | skipped: {ln.skipped} "
                "| - | - | - | - | - |"
            )
            continue
        out.append(
            f"| {ln.model} | {ln.threads} | {ln.runtime} | {_acc(ln.top1)} "
            f"| {_ms(ln.latency.get(1))} "
            f"| {_spread_x(ln.speedup.get(1))} | {_ms(ln.latency.get(n))} (b{n}) "
            f"| {_spread_x(ln.speedup.get(n))} | {_pct(ln.overhead.get(1))} "
            f"| {_pct(ln.overhead.get(n))} |"
        )
    return out


def _acc(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}".replace("%", " %")


def _spread_x(s: Spread | None) -> str:
    return "-" if s is None else s.text(".2f", "x")


def goal_lines(
    lines: Sequence[Line], checked: Collection[str] | None = None, goal: float = GOAL_OVERHEAD
) -> list[str]:
    """The goal, stated per pyfunc row (of the runtimes in ``checked``; None: all): its
    overhead at batch N under ``goal``."""
    out = []
    for ln in lines:
        over = ln.overhead.get(ln.batch)
        if over is None or (checked is not None and ln.runtime not in checked):
            continue
        verdict = "met" if over.median < goal else "MISSED"
        out.append(
            f"- {ln.model}, {ln.threads} thread(s), {ln.runtime}: overhead at b{ln.batch} "
            f"{_pct(over)}: goal < {goal:.0%} {verdict}"
        )
    return out


SHIPPED = (TUNED_NAME, "tuned plan, pyfunc `predict`", OV_TUNED,
           "OpenVINO tuned plan, pyfunc `predict`", OV_ALL_INT8,
           "OpenVINO all-int8, pyfunc `predict`")  # fmt: skip
GOAL_B1, GOAL_BN = 2.0, 1.05  # shipped model vs FX int8 one-shot, ResNet18, 2 threads


def fastest_lines(lines: Sequence[Line]) -> list[str]:
    """Per model, thread count and batch: the runtime with the lowest median latency."""
    out = []
    groups: dict[tuple[str, int], list[Line]] = {}
    for ln in lines:
        if not ln.skipped:
            groups.setdefault((ln.model, ln.threads), []).append(ln)
    for (model, threads), group in groups.items():
        for b in (1, group[0].batch):
            best = min(group, key=lambda ln: ln.latency[b].median)
            out.append(
                f"- {model}, {threads} thread(s), b{b}: fastest is {best.runtime} "
                f"({best.latency[b].median:.3f} ms, top-1 {_acc(best.top1)})"
            )
    return out


def ship_lines(lines: Sequence[Line], shipped: Collection[str] = SHIPPED) -> list[str]:
    """Each shipped row against FX int8 one-shot of its model and thread count: speed-up
    (ratio of median latencies) at b1 (goal >= 2x) and bN (>= 1.05x), top-1 same or better."""
    base = {(ln.model, ln.threads): ln for ln in lines if ln.runtime == ONE_SHOT and ln.latency}
    out = []
    for ln in lines:
        ref = base.get((ln.model, ln.threads))
        if ln.runtime not in shipped or ln.skipped or ref is None:
            continue
        n = ln.batch
        r1 = ref.latency[1].median / ln.latency[1].median
        rn = ref.latency[n].median / ln.latency[n].median
        acc_ok = ln.top1 is not None and ref.top1 is not None and ln.top1 >= ref.top1
        verdict = "met" if r1 >= GOAL_B1 and rn >= GOAL_BN and acc_ok else "MISSED"
        out.append(
            f"- {ln.model}, {ln.threads} thread(s), {ln.runtime} vs {ONE_SHOT}: b1 {r1:.2f}x, "
            f"b{n} {rn:.2f}x, top-1 {_acc(ln.top1)} vs {_acc(ref.top1)}: goal (>= "
            f"{GOAL_B1:g}x, >= {GOAL_BN:g}x, same or better) {verdict}"
        )
    return out


def top1_of(
    predict: Callable[[torch.Tensor], Any], batches: Sequence[tuple[torch.Tensor, torch.Tensor]]
) -> float:
    """argmax top-1 of ``predict`` (a torch batch -> logits, tensor or numpy) on ``batches``."""
    hits = total = 0
    for x, y in batches:
        out = predict(x)
        if isinstance(out, torch.Tensor):
            out = out.dequantize() if out.is_quantized else out
        else:
            out = torch.as_tensor(out)
        hits += int((out.argmax(1) == y).sum())
        total += len(y)
    return hits / total


# --- one model ----------------------------------------------------------------------------
def make_case(name: str, args: argparse.Namespace) -> Case | str:
    """The model's case, or why it is skipped."""
    subject = SUBJECTS[name]
    why = subject.ensure(args)
    if why:
        return why
    raw = Config.from_yaml(subject.conf).to_dict()
    raw["tracking"] = {"enabled": False}
    if args.eval_batches:
        raw["evaluation"]["accuracy"]["iteration"] = args.eval_batches
    cfg = Config.from_dict(raw)
    args.conf[name] = subject.conf.relative_to(ROOT)
    limit = cfg.evaluation.accuracy.iteration
    evals = []
    for i, b in enumerate(build_dataloader(cfg.evaluation.accuracy.dataloader)):
        if limit is not None and 0 < limit <= i:
            break
        x, y = split_batch(b)
        evals.append((x, torch.as_tensor(y)))
    batch = int(cfg.evaluation.performance.dataloader.batch_size)
    fp32 = subject.load().eval()
    case = Case(name, cfg, fp32, evals[0][0], batch, args.workdir, args)
    case.cache["evals"] = evals
    return case


def bench(name: str, args: argparse.Namespace, runtimes: Sequence[Runtime]) -> list[Line]:
    case = make_case(name, args)
    if isinstance(case, str):
        print(f"== {name}: {case}", flush=True)
        return [Line(name, t, "-", 0, skipped=case) for t in args.threads]
    built: dict[str, Runtime] = {}
    candidates, skipped = [], {}
    for rt in runtimes:
        try:
            obj = rt.build(case)
        except Skip as e:
            skipped[rt.name] = str(e)
            print(f"== {name}: {rt.name} skipped: {e}", flush=True)
            continue
        built[rt.name] = rt
        kind = FP32 if rt.name == FP32_NAME else TRIAL
        candidates.append(Candidate(rt.name, functools.partial(rt.predict, obj), kind, rt.backend))
    if FP32_NAME not in built:
        raise SystemExit(f"{name}: the fp32 runtime could not be built: {skipped}")
    evals = case.cache["evals"]
    top1 = {}
    torch.set_num_threads(max(args.threads))
    for c in candidates:
        if c.backend:
            torch.backends.quantized.engine = c.backend
        with torch.no_grad(), quiet():
            top1[c.name] = top1_of(c.model, evals)
    case.notes.append(
        f"{name}: top-1 of every row on the same {sum(len(y) for _, y in evals)} eval samples "
        f"(argmax, {max(args.threads)} thread(s))"
    )
    inputs = {1: repeat_batch(case.example, 1), case.batch: repeat_batch(case.example, case.batch)}
    lines: list[Line] = []
    for threads in args.threads:
        print(f"== {name}: {len(candidates)} runtimes, {threads} thread(s), "
              f"{args.rounds} rounds x {args.iterations} calls", flush=True)  # fmt: skip
        start = time.perf_counter()
        with quiet():
            samples = time_side_by_side(
                candidates, inputs, lambda f, x: f(x), args.rounds, args.warmup,
                args.iterations, threads,
            )  # fmt: skip
        case.notes.append(
            f"{name}: round at {threads} thread(s) took {time.perf_counter() - start:.0f} s"
        )
        wraps = {n: rt.wraps for n, rt in built.items()}
        lines += summarize(name, threads, case.batch, samples, wraps, top1=top1)
        lines += [Line(name, threads, n, case.batch, skipped=why) for n, why in skipped.items()]
    args.notes += case.notes
    return lines


# --- output -------------------------------------------------------------------------------
def header(args: argparse.Namespace) -> list[str]:
    evals = f"`iteration: {args.eval_batches}`" if args.eval_batches else "the config's"
    return [
        f"Produced by `python benchmarks/bench_runtimes.py` "
        f"({datetime.datetime.now().isoformat(timespec='minutes')}, {platform.node()}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
        f"{torch.__version__}). Every runtime of a model timed in one process, interleaved "
        f"(inc_flow's side-by-side round, the order reversed every round): {args.rounds} "
        f"rounds x {args.iterations} calls after {args.warmup} warm-up calls, per thread "
        "count. Latency: median of the round medians (min-max). Speed-up: fp32 / runtime "
        "per round; pyfunc overhead: pyfunc / `inc_flow.load` model - 1 per round; both "
        "median (min-max). The pyfunc rows call `mlflow.pyfunc.load_model(uri).predict` on "
        "a numpy batch (MLflow's schema check and inc_flow's input checks included). "
        f"Tuning: the model's `conf/` file, eval set {evals}, tracking off; the FX tuned "
        "plan with `quantization.runtime: [torch_fx]`, the OpenVINO one with `[openvino]` "
        "(saved as IR, loaded with `inc_flow.load`). top-1: argmax accuracy of every row "
        "on that same eval subset.",
        "",
        "Latencies are noisy: a shared 2-core machine; compare rows of one table only.",
        "",
    ]


def splice_readme(readme: Path, text: str) -> bool:
    """Replace the text between the markers in ``readme``; False when they are missing."""
    return splice_between(readme, text, BEGIN, END)


def _ints(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"a comma list of counts >= 1, got {text!r}")
    return values


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="lenet,resnet18", help="comma list")
    parser.add_argument("--threads", type=_ints, default=[1, 2], help="comma list, e.g. 1,2")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--iterations", type=int, default=10, help="timed calls per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per round")
    parser.add_argument(
        "--eval-batches", type=int, default=0, help="cap the eval set while tuning (0: config)"
    )
    parser.add_argument("--reuse", action="store_true", help="reuse a tuned output in workdir")
    parser.add_argument("--skip-train", action="store_true", help="skip ResNet18 if untrained")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/inc_flow_bench_runtimes"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "runtimes.md")
    parser.add_argument("--no-readme", action="store_true", help="do not update README.md")
    args = parser.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in SUBJECTS]
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {sorted(SUBJECTS)}")
    if min(args.rounds, args.iterations) < 1 or min(args.warmup, args.eval_batches) < 0:
        parser.error("--rounds and --iterations must be >= 1, --warmup and --eval-batches >= 0")
    args.conf, args.notes = {}, []
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="[%(levelname)s] %(message)s")
    torch.manual_seed(0)
    args.workdir.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    lines = [ln for name in args.models for ln in bench(name, args, RUNTIMES)]
    args.notes.append(
        f"load average (1, 5, 15 min) at start {load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f}; "
        "at end {:.1f}, {:.1f}, {:.1f}".format(*os.getloadavg())
    )
    goals = goal_lines(lines, {rt.name for rt in RUNTIMES if rt.goal})
    goals += ship_lines(lines) + fastest_lines(lines)
    text = "\n".join(header(args) + table(lines) + ["", *goals])
    print("\n" + text + "\n\n" + "\n".join(args.notes))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        "# Runtimes, raw and through the pyfunc\n\n"
        + text
        + "\n\n## Run notes\n\n"
        + "\n".join(f"- {n}" for n in args.notes)
        + "\n"
    )
    print(f"written to {args.out}")
    if not args.no_readme:
        done = splice_readme(ROOT / "README.md", text)
        print("README.md table updated" if done else f"README.md has no {BEGIN} marker")


if __name__ == "__main__":
    main()
