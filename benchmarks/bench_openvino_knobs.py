"""Which NNCF setting keeps the OpenVINO int8 ResNet18's accuracy: one ``nncf.quantize`` per
variant of inc_flow's OpenVINO all-int8 plan, each scored beside fp32 eager and FX int8
one-shot (x86) in the same run, on the same calibration and eval images.

Calibration: the first ``--calib`` Fashion-MNIST training images in batches of 64 (the
config's ``sampling_size: 256`` and batch), the same batches for FX and every OpenVINO
variant (a variant with more calibration images has an FX row with the same images).
Eval: argmax top-1 on the first ``--eval`` test images (10k: all), also reported on the
first 2048 (the config's ``iteration: 8``), and the images where a variant's argmax differs
from fp32's. The variants start from ``quant.openvino.nncf_parameters`` of the all-int8 plan
(what the search builds) and change one setting (see :data:`VARIANTS`)::

    python benchmarks/bench_openvino_knobs.py [--eval 10000] [--only base,bc_full]

Prints a markdown table; ``--out`` also writes it (default: print only). No timing: the
winners are timed by ``bench_runtimes.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import logging
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from bench_openvino import _images, predict  # noqa: E402

from inc_flow.quant.engine import FxEngine  # noqa: E402
from inc_flow.quant.openvino import (  # noqa: E402
    OpenVinoEngine,
    OpenVinoModel,
    ignored_scope,
    modules,
    nncf_parameters,
)
from inc_flow.search.plan import default_plan  # noqa: E402

Kwargs = dict[str, Any]


def _advanced(kw: Kwargs, **changes: Any) -> Kwargs:
    import dataclasses

    return {**kw, "advanced_parameters": dataclasses.replace(kw["advanced_parameters"], **changes)}


def _range(name: str) -> Callable[[Kwargs], Kwargs]:
    def apply(kw: Kwargs) -> Kwargs:
        from nncf.quantization.range_estimator import RangeEstimatorParametersSet

        return _advanced(kw, activations_range_estimator_params=getattr(
            RangeEstimatorParametersSet, name))  # fmt: skip

    return apply


def _nncf_defaults(kw: Kwargs) -> Kwargs:
    return {}


def _preset_performance(kw: Kwargs) -> Kwargs:
    import nncf
    from nncf.common.quantization.structs import QuantizationScheme as QS
    from nncf.quantization.advanced_parameters import QuantizationParameters

    kw = _advanced(kw, activations_quantization_params=QuantizationParameters(mode=QS.SYMMETRIC))
    return {**kw, "preset": nncf.QuantizationPreset.PERFORMANCE}


def _overflow_off(kw: Kwargs) -> Kwargs:
    from nncf.quantization.advanced_parameters import OverflowFix

    return _advanced(kw, overflow_fix=OverflowFix.DISABLE)


def _transformer(kw: Kwargs) -> Kwargs:
    import nncf

    return {**kw, "model_type": nncf.ModelType.TRANSFORMER}


# name -> (what it changes, kwargs -> kwargs, fp32 ops, calibration images or None)
VARIANTS: dict[str, tuple[str, Callable[[Kwargs], Kwargs], tuple[str, ...], int | None]] = {
    "base": ("inc_flow's all-int8 plan as built now (MIXED, MINMAX, fast BC)", dict, (), None),
    "nncf_defaults": ("nncf.quantize defaults (PERFORMANCE, MEAN_MINMAX)", _nncf_defaults, (),
                      None),
    "performance": ("preset PERFORMANCE (symmetric activations)", _preset_performance, (), None),
    "bc_full": ("fast_bias_correction=False (full BiasCorrection)",
                lambda kw: {**kw, "fast_bias_correction": False}, (), None),
    "bc_off": ("disable_bias_correction=True", lambda kw: _advanced(
        kw, disable_bias_correction=True), (), None),
    "mean_minmax": ("activation range MEAN_MINMAX (NNCF's default)", _range("MEAN_MINMAX"), (),
                    None),
    "histogram": ("activation range HISTOGRAM", _range("HISTOGRAM"), (), None),
    "overflow_off": ("overflow_fix=DISABLE (first conv's weights 8-bit, not 7)", _overflow_off,
                     (), None),
    "transformer": ("model_type=TRANSFORMER", _transformer, (), None),
    "conv1_fp32": ("first conv `conv1` in fp32 (IgnoredScope)", dict, ("conv1",), None),
    "fc_fp32": ("last `fc` in fp32 (IgnoredScope)", dict, ("fc",), None),
    "calib_1024": ("1024 calibration images (FX row with the same)", dict, (), 1024),
}  # fmt: skip


def top1_hits(model: Any, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([predict(model, xb).argmax(1) for xb in x.split(256)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval", type=int, default=10000)
    parser.add_argument("--calib", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", default="", help="comma list of VARIANTS (default: all)")
    parser.add_argument("--combine", default="", help="comma list applied together, one row")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    from examples.resnet18.model import load_resnet18

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    ov, nncf = modules()
    nncf.set_log_level(logging.ERROR)
    model = load_resnet18().eval()
    sizes = sorted({args.calib, *(v[3] for v in VARIANTS.values() if v[3])})
    xc_all, _ = _images(True, max(sizes))
    calib = {n: list(xc_all[:n].split(64)) for n in sizes}
    xe, ye = _images(False, args.eval)
    ops = FxEngine(model, calib[args.calib][0]).ops()
    plan = default_plan(ops, runtime="openvino")
    rows: list[tuple[str, str, torch.Tensor, float]] = []

    def add(name: str, what: str, m: Any, secs: float) -> None:
        pred = top1_hits(m, xe)
        rows.append((name, what, pred, secs))
        a2k, aall = (100.0 * float((pred[:k] == ye[:k]).float().mean()) for k in (2048, None))
        print(f"{name}: {a2k:.2f} % first 2048, {aall:.2f} % all", flush=True)

    add("fp32", "fp32 eager", model, 0.0)
    for n in sizes:
        t0 = time.perf_counter()
        fx = FxEngine(model, calib[n][0], calib_loader=calib[n], sampling_size=n)
        add(f"fx_{n}", f"FX int8 one-shot (x86), {n} calibration images",
            fx.build(default_plan(ops, backend="x86")), time.perf_counter() - t0)  # fmt: skip
    engine = OpenVinoEngine(model, calib[args.calib][0], calib[args.calib], args.calib)
    base = engine.fp32_ov()
    chosen = [v for v in args.only.split(",") if v] or ([] if args.combine else list(VARIANTS))
    keys = chosen + [args.combine.replace(",", "+")] if args.combine else chosen
    for key in keys:
        parts = key.split("+")
        kw = nncf_parameters(plan)
        fp32_ops: tuple[str, ...] = ()
        n = args.calib
        for part in parts:
            _, change, more, size = VARIANTS[part]
            kw, fp32_ops, n = change(kw), fp32_ops + more, size or n
        p = plan.with_fallback(set(fp32_ops))
        ignored = nncf.IgnoredScope(**ignored_scope(model, base.get_ordered_ops(), p))
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            q = nncf.quantize(
                base, nncf.Dataset([[b.numpy()] for b in calib[n]]),
                subset_size=len(calib[n]), ignored_scope=ignored, **kw,
            )  # fmt: skip
        what = " + ".join(VARIANTS[part][0] for part in parts)
        add(f"ov_{key}", what, OpenVinoModel(q, p), time.perf_counter() - t0)
    ref = rows[0][2]
    lines = [
        f"`python benchmarks/bench_openvino_knobs.py {' '.join(argv or sys.argv[1:])}` "
        f"({datetime.datetime.now().isoformat(timespec='minutes')}, {platform.node()}, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__}, nncf {nncf.__version__}, "
        f"openvino {ov.__version__.split('-')[0]}). Calibration: the first {args.calib} "
        f"training images (batches of 64) unless the row says; eval: argmax top-1.",
        "",
        f"| row | what | top-1 first 2048 | top-1 {args.eval} | vs fp32: images differing "
        f"({args.eval}) | build (s) |",
        "|---|---|---|---|---|---|",
    ]
    for name, what, pred, secs in rows:
        a2k = 100.0 * float((pred[:2048] == ye[:2048]).float().mean())
        aall = 100.0 * float((pred == ye).float().mean())
        diff = int((pred != ref).sum())
        lines.append(f"| {name} | {what} | {a2k:.2f} % | {aall:.2f} % | {diff} | {secs:.1f} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with args.out.open("a") as f:
            f.write(text + "\n\n")


if __name__ == "__main__":
    main()
