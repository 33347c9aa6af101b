"""Train the 28x28 MobileNetV2 briefly on Fashion-MNIST and save its fp32 state dict.

Run from the repository root: ``python -m examples.mobilenetv2.train [--steps 1900]
[--batch-size 64] [--time-budget 1200] [--out PATH]``. A short budget on purpose (the model is
a quantization subject, not a state of the art): Adam lr 1e-3 over ``--steps`` batches of a
shuffled training set (``torch.manual_seed(1)``, 2 threads), or fewer if ``--time-budget``
seconds pass first; the learning rate follows a cosine over whichever of the two is further
along, so it anneals even when time runs out. Then top-1 on the 10k test set (20-60 s).
The defaults aim at 2 epochs (1875 steps of 64) in 20 minutes. On 2 CPU cores shared with
one other benchmark (load average ~2.5, about 0.93 s a step), the time budget stopped
training at step 1286 (82,304 samples, 1.4 epochs, 1201 s) with 88.56 % test top-1
(2026-12-01; 21 min in all); the cached checkpoint is that run. A quieter machine gets further
in the same 20 minutes, so the step count (and the weights) depend on the load. The
earlier defaults (600 steps, 300 s) stopped at step 136 on a loaded machine: 77.29 % on the
config's 2048 eval images, too weak a subject for the search benchmark. The checkpoint goes
to ``examples.mobilenetv2.model.checkpoint_path()`` (outside git).
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Iterable
from pathlib import Path

# On a shared machine, OpenMP threads that spin while waiting fight the other processes for
# the cores: with 2 threads a training step of this model took 18 s instead of 1 s under a
# load of 7 on 2 cores. Passive waiting must be set before torch loads its OpenMP runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from examples.mobilenetv2.model import (  # noqa: E402
    MEAN,
    STD,
    build_mobilenetv2,
    checkpoint_path,
)
from inc_flow.common import DataLoader  # noqa: E402
from inc_flow.data import FashionMNIST, Normalize  # noqa: E402
from inc_flow.metrics import TopK  # noqa: E402


def evaluate(model: torch.nn.Module, loader: DataLoader) -> float:
    """Top-1 accuracy of ``model`` over ``loader``."""
    model.eval()
    metric = TopK(k=1)
    with torch.no_grad():
        for images, labels in loader:
            metric.update(model(images), labels)
    return metric.result()


def recalibrate_batchnorm(model: torch.nn.Module, batches: Iterable) -> torch.nn.Module:
    """Re-estimate every BatchNorm's running mean and variance as a plain average over
    ``batches`` (``(images, labels)`` pairs), with the weights unchanged; eval mode after.

    After a few dozen steps the running statistics (momentum 0.1) still describe the
    weights of earlier steps, and the eval-mode model can predict one class for everything;
    the tests use this on their briefly trained model. The full training does not need it.
    """
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for images, _ in batches:
            model(images)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = 0.1
    return model.eval()


def train_model(
    steps: int,
    batch_size: int,
    time_budget: float,
    lr: float,
    seed: int = 1,
    train_set: torch.utils.data.Dataset | None = None,
    log_every: int = 25,
    threads: int = 2,
) -> tuple[torch.nn.Module, int, float]:
    """A MobileNetV2 trained for ``steps`` batches or ``time_budget`` seconds, in eval mode;
    also the steps done and the seconds taken. ``train_set``: default the whole normalized
    Fashion-MNIST training set (tests pass a subset)."""
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    if train_set is None:
        train_set = FashionMNIST(train=True, transform=Normalize(mean=[MEAN], std=[STD]))
    train_loader = DataLoader(train_set, batch_size, shuffle=True, last_batch="no_rollover")
    model = build_mobilenetv2()
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
            if log_every and (step % log_every == 0 or step == steps):
                print(f"step {step}/{steps}: loss {running:.4f} ({elapsed:.0f} s)", flush=True)
            if step >= steps or elapsed >= time_budget:
                break
        if time.perf_counter() - start >= time_budget:
            print(f"time budget of {time_budget:.0f} s reached at step {step}", flush=True)
            break
    return model.eval(), step, time.perf_counter() - start


def train(steps: int, batch_size: int, time_budget: float, lr: float, out: Path) -> float:
    """Train, evaluate on the test set, save to ``out``; returns the test accuracy."""
    model, step, train_seconds = train_model(steps, batch_size, time_budget, lr)
    print(
        f"trained {step} steps x {batch_size} = {step * batch_size} samples "
        f"in {train_seconds:.1f} s",
        flush=True,
    )
    normalize = Normalize(mean=[MEAN], std=[STD])
    test_loader = DataLoader(FashionMNIST(train=False, transform=normalize), 500)
    t0 = time.perf_counter()
    accuracy = evaluate(model, test_loader)
    print(f"test top-1 accuracy: {accuracy:.4f} ({time.perf_counter() - t0:.1f} s)")
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out)
    print(f"saved {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return accuracy


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1900, help="optimizer steps (batches)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--time-budget", type=float, default=1200.0, help="seconds of training")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--out", type=Path, default=None, help="default: the cache path")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1 or args.time_budget <= 0:
        parser.error("--steps and --batch-size must be >= 1 and --time-budget > 0")
    train(args.steps, args.batch_size, args.time_budget, args.lr, args.out or checkpoint_path())


if __name__ == "__main__":
    main()
