"""OpenVINO beside torch FX on the Fashion-MNIST ResNet18 (or LeNet): fp32 eager, FX int8
(x86, all-int8 default plan), OpenVINO int8 (NNCF, the same plan and calibration images) and
OpenVINO fp32, timed interleaved in one process (``quant.latency.time_side_by_side``: 5
rounds, the order reversed each round) at batch 1 and N (32), with 2 threads; top-1 on the
first 2048 test images.

    python benchmarks/bench_openvino.py [--model resnet18|lenet] [--threads 2] [--batch 32]

Needs the ``[openvino]`` extra and the ResNet18 checkpoint (``python -m
examples.resnet18.train``). ``build(name, model, calib)`` and ``predict(model, x)`` are what
``bench_runtimes.py`` can call for these rows.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inc_flow.data.idx import FashionMNIST  # noqa: E402
from inc_flow.quant.engine import FxEngine  # noqa: E402
from inc_flow.quant.latency import time_side_by_side  # noqa: E402
from inc_flow.quant.openvino import OpenVinoEngine  # noqa: E402
from inc_flow.search.plan import default_plan  # noqa: E402
from inc_flow.search.speed import Candidate, Spread  # noqa: E402

NAMES = ("fp32 eager", "FX int8 (x86)", "OpenVINO int8 (NNCF)", "OpenVINO fp32")
MEAN, STD = 0.2860, 0.3530


def _images(train: bool, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    data = FashionMNIST(train=train)
    xs, ys = zip(*(data[i] for i in range(n)), strict=True)
    return (torch.stack(xs) - MEAN) / STD, torch.as_tensor(ys)  # images come in [0, 1]


def build(name: str, model: nn.Module, calib: list[torch.Tensor]) -> nn.Module:
    """The model ``name`` (one of :data:`NAMES`) of fp32 ``model``, calibrated on ``calib``."""
    if name == NAMES[0]:
        return model
    samples = sum(len(b) for b in calib)
    if name == NAMES[1]:
        fx = FxEngine(model, calib[0], calib_loader=calib, sampling_size=samples)
        return fx.build(default_plan(fx.ops(), backend="x86"))
    ops = FxEngine(model, calib[0]).ops()
    plan = default_plan(ops, runtime="openvino")
    if name == NAMES[3]:
        plan = plan.with_fallback(plan.int8_ops)
    return OpenVinoEngine(model, calib[0], calib, samples).build(plan)


def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model(x)
    return out.dequantize() if out.is_quantized else out


def top1(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    hits = sum(int((predict(model, xb).argmax(1) == yb).sum()) for xb, yb in
               zip(x.split(256), y.split(256), strict=True))  # fmt: skip
    return 100.0 * hits / len(y)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("resnet18", "lenet"), default="resnet18")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32, help="N (LeNet's config uses 64)")
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--eval", type=int, default=2048)
    args = parser.parse_args(argv)
    if args.model == "lenet":
        from examples.lenet.model import load_lenet as load
    else:
        from examples.resnet18.model import load_resnet18 as load

    torch.manual_seed(0)
    model = load().eval()
    xc, _ = _images(True, 256)
    calib = list(xc.split(64))
    xe, ye = _images(False, args.eval)
    models = {name: build(name, model, calib) for name in NAMES}
    torch.set_num_threads(args.threads)
    acc = {name: top1(m, xe, ye) for name, m in models.items()}
    inputs = {1: xe[:1].clone(), args.batch: xe[: args.batch].clone()}
    cands = [Candidate(n, m, backend="x86" if "FX" in n else None) for n, m in models.items()]
    samples = time_side_by_side(
        cands, inputs, predict, rounds=5, warmup=5, iterations=args.iterations,
        threads=args.threads,
    )  # fmt: skip
    fx = {b: Spread.of(samples[NAMES[1]][b]).median for b in inputs}
    title = {"resnet18": "ResNet18 (1x28x28)", "lenet": "LeNet"}[args.model]
    print(f"{title}, {args.threads} threads, interleaved 5 rounds, medians (min-max)")
    print(f"| model | b1 ms | b{args.batch} ms | vs FX int8 b1 / b{args.batch} | top-1 |")
    print("|---|---|---|---|---|")
    for name in NAMES:
        s = {b: Spread.of(samples[name][b]) for b in inputs}
        ratio = " / ".join(f"{fx[b] / s[b].median:.2f}x" for b in inputs)
        print(
            f"| {name} | {s[1].text('.2f')} | {s[args.batch].text('.2f')} | {ratio} "
            f"| {acc[name]:.2f} % |"
        )


if __name__ == "__main__":
    main()
