"""An INC 1.x script for LeNet, ported by changing only its imports.

Originally:
    from neural_compressor.experimental import Quantization, common
    from neural_compressor.utils.pytorch import load

Run from the repository root:  python -m examples.lenet.inc_style [--output DIR]
"""

from __future__ import annotations

import argparse

import torch

from examples.lenet.model import MEAN, STD, LeNet, load_lenet
from inc_flow import Quantization, common, load
from inc_flow.data import FashionMNIST, Normalize


class Top1Metric:
    """A custom metric as INC users write them: update / reset / result."""

    def __init__(self) -> None:
        self.correct = 0
        self.total = 0

    def update(self, output: torch.Tensor, label: torch.Tensor) -> None:
        self.correct += int((output.argmax(dim=1) == label).sum())
        self.total += int(label.numel())

    def reset(self) -> None:
        self.correct = 0
        self.total = 0

    def result(self) -> float:
        return self.correct / self.total


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--conf", default="conf/lenet_static.yaml")
    parser.add_argument("--output", default="./outputs/lenet_inc_style")
    parser.add_argument("--eval-samples", type=int, default=10000)
    args = parser.parse_args(argv)

    normalize = Normalize(mean=[MEAN], std=[STD])
    train = FashionMNIST(train=True, transform=normalize)
    test = FashionMNIST(train=False, transform=normalize)
    if args.eval_samples < len(test):
        test = torch.utils.data.Subset(test, range(args.eval_samples))

    quantizer = Quantization(args.conf)
    quantizer.model = common.Model(load_lenet())
    quantizer.calib_dataloader = common.DataLoader(train, batch_size=64)
    quantizer.eval_dataloader = common.DataLoader(test, batch_size=256)
    quantizer.metric = common.Metric(Top1Metric)
    q_model = quantizer.fit()
    if q_model is None:
        print("Not found any quantized model that meets the accuracy target.")
        return float("nan")
    q_model.save(args.output)

    int8 = load(args.output, LeNet())
    metric = Top1Metric()
    with torch.no_grad():
        for x, y in common.DataLoader(test, batch_size=256):
            metric.update(int8(x), y)
    print(f"reloaded int8 LeNet: top-1 {metric.result():.4f} on {metric.total} samples")
    return metric.result()


if __name__ == "__main__":
    main()
