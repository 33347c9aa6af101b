"""Train the LSTM waveform classifier and save its fp32 state dict.

Run from the repository root: ``python -m examples.lstm.train [--epochs 10] [--out PATH]``.
8,000 training waveforms, Adam lr 3e-3 with cosine decay, batch 64, gradient clipping at 1,
``torch.manual_seed(0)``, 1 thread (faster than 2 for an LSTM this small); prints the
top-1 accuracy on 2,000 test waveforms. About 80 s on one core.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from examples.lstm.data import waveforms
from examples.lstm.model import CHECKPOINT, LSTMClassifier
from inc_flow.common import DataLoader
from inc_flow.metrics import TopK

TRAIN_SIZE = 8000
TEST_SIZE = 2000


def evaluate(model: torch.nn.Module, loader: DataLoader) -> float:
    """Top-1 accuracy of ``model`` over ``loader``."""
    model.eval()
    metric = TopK(k=1)
    with torch.no_grad():
        for inputs, labels in loader:
            metric.update(model(inputs), labels)
    return metric.result()


def train(epochs: int, out: Path) -> float:
    """Train, evaluate, save to ``out``; returns the test accuracy."""
    torch.manual_seed(0)
    torch.set_num_threads(1)  # a small LSTM trains fastest on one thread
    train_loader = DataLoader(waveforms("train", TRAIN_SIZE), 64, shuffle=True)
    test_loader = DataLoader(waveforms("test", TEST_SIZE), 500)
    model = LSTMClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=epochs * len(train_loader)
    )
    begin = time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        start, total = time.perf_counter(), 0.0
        for inputs, labels in train_loader:
            optimizer.zero_grad()
            loss = F.cross_entropy(model(inputs), labels)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            total += loss.item()
        elapsed = time.perf_counter() - start
        accuracy = evaluate(model, test_loader)
        print(
            f"epoch {epoch}: mean loss {total / len(train_loader):.4f}, "
            f"test top-1 {accuracy:.4f} ({elapsed:.1f} s)"
        )
    print(f"training took {time.perf_counter() - begin:.1f} s")
    accuracy = evaluate(model, test_loader)
    print(f"test top-1 accuracy: {accuracy:.4f}")
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out)
    print(f"saved {out} ({out.stat().st_size} bytes)")
    return accuracy


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=CHECKPOINT)
    args = parser.parse_args(argv)
    train(args.epochs, args.out)


if __name__ == "__main__":
    main()
