"""Train the seed LeNet on Fashion-MNIST and save its fp32 state dict.

Run from the repository root: ``python -m examples.lenet.train [--epochs 3] [--out PATH]``.
SGD lr 0.01 momentum 0.5, batch 64, ``torch.manual_seed(1)``, 2 threads; prints the top-1
accuracy on the 10k test set.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from examples.lenet.model import CHECKPOINT, MEAN, STD, LeNet
from inc_flow.common import DataLoader
from inc_flow.data import FashionMNIST, Normalize
from inc_flow.metrics import TopK


def evaluate(model: torch.nn.Module, loader: DataLoader) -> float:
    """Top-1 accuracy of ``model`` over ``loader``."""
    model.eval()
    metric = TopK(k=1)
    with torch.no_grad():
        for images, labels in loader:
            metric.update(model(images), labels)
    return metric.result()


def train(epochs: int, out: Path) -> float:
    """Train, evaluate, save to ``out``; returns the test accuracy."""
    torch.manual_seed(1)
    torch.set_num_threads(2)
    normalize = Normalize(mean=[MEAN], std=[STD])
    train_loader = DataLoader(FashionMNIST(train=True, transform=normalize), 64, shuffle=True)
    test_loader = DataLoader(FashionMNIST(train=False, transform=normalize), 1000)
    model = LeNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.5)
    for epoch in range(1, epochs + 1):
        model.train()
        start, total = time.perf_counter(), 0.0
        for images, labels in train_loader:
            optimizer.zero_grad()
            loss = F.nll_loss(model(images), labels)
            loss.backward()
            optimizer.step()
            total += loss.item()
        elapsed = time.perf_counter() - start
        print(f"epoch {epoch}: mean loss {total / len(train_loader):.4f} ({elapsed:.1f} s)")
    accuracy = evaluate(model, test_loader)
    print(f"test top-1 accuracy: {accuracy:.4f}")
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out)
    print(f"saved {out} ({out.stat().st_size} bytes)")
    return accuracy


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=CHECKPOINT)
    args = parser.parse_args(argv)
    train(args.epochs, args.out)


if __name__ == "__main__":
    main()
