"""Train the 28x28 ResNet18 briefly on Fashion-MNIST and save its fp32 state dict.

Run from the repository root: ``python -m examples.resnet18.train [--steps 140]
[--batch-size 32] [--time-budget 210] [--out PATH]``. A short budget on purpose (the model is
a benchmark subject, not a state of the art): Adam lr 1e-3 over ``--steps`` batches of a
shuffled training set (``torch.manual_seed(1)``, 2 threads), or fewer if ``--time-budget``
seconds pass first; the learning rate follows a cosine over whichever of the two is further
along, so it anneals even when time runs out. Then top-1 on the 10k test set (2-2.5 min).
On 2 CPU cores: 140 steps take 2.5 min when the machine is quiet (~83% top-1); under load
the time budget stops training earlier (~80%); 4.5-6 min in all. The checkpoint goes to
``examples.resnet18.model.checkpoint_path()`` (outside git).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from examples.resnet18.model import MEAN, STD, build_resnet18, checkpoint_path
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


def train(steps: int, batch_size: int, time_budget: float, lr: float, out: Path) -> float:
    """Train, evaluate on the test set, save to ``out``; returns the test accuracy."""
    torch.manual_seed(1)
    torch.set_num_threads(2)
    normalize = Normalize(mean=[MEAN], std=[STD])
    train_set = FashionMNIST(train=True, transform=normalize)
    train_loader = DataLoader(train_set, batch_size, shuffle=True, last_batch="no_rollover")
    test_loader = DataLoader(FashionMNIST(train=False, transform=normalize), 500)
    model = build_resnet18()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    start, step, running = time.perf_counter(), 0, 0.0
    while step < steps:
        for images, labels in train_loader:
            progress = max(step / steps, (time.perf_counter() - start) / time_budget)
            for group in optimizer.param_groups:
                group["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
            optimizer.zero_grad()
            loss = F.cross_entropy(model(images), labels)
            loss.backward()
            optimizer.step()
            step += 1
            running = loss.item() if step == 1 else 0.9 * running + 0.1 * loss.item()
            elapsed = time.perf_counter() - start
            if step % 10 == 0 or step == steps:
                print(f"step {step}/{steps}: loss {running:.4f} ({elapsed:.0f} s)", flush=True)
            if step >= steps or elapsed >= time_budget:
                break
        if time.perf_counter() - start >= time_budget:
            print(f"time budget of {time_budget:.0f} s reached at step {step}", flush=True)
            break
    train_seconds = time.perf_counter() - start
    print(
        f"trained {step} steps x {batch_size} = {step * batch_size} samples "
        f"in {train_seconds:.1f} s",
        flush=True,
    )
    t0 = time.perf_counter()
    accuracy = evaluate(model, test_loader)
    print(f"test top-1 accuracy: {accuracy:.4f} ({time.perf_counter() - t0:.1f} s)")
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out)
    print(f"saved {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return accuracy


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=140, help="optimizer steps (batches)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--time-budget", type=float, default=210.0, help="seconds of training")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--out", type=Path, default=None, help="default: the cache path")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1 or args.time_budget <= 0:
        parser.error("--steps and --batch-size must be >= 1 and --time-budget > 0")
    train(args.steps, args.batch_size, args.time_budget, args.lr, args.out or checkpoint_path())


if __name__ == "__main__":
    main()
