"""Dataset factories for tests/test_custom_data.py (imported by name from configs)."""

from __future__ import annotations

import torch

CALLS: list[dict] = []


def blobs(size: int = 64, seed: int = 0, transform=None):
    """``size`` samples of (x[8], label): two Gaussian blobs, label = which one."""
    CALLS.append({"size": size, "seed": seed, "transform": transform})
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(size) % 2
    x = torch.randn(size, 8, generator=g) + (labels[:, None] * 2 - 1).float()
    if transform is not None:
        x = transform(x)
    return list(zip(x, labels.tolist(), strict=True))


def broken(**kwargs):
    raise RuntimeError("the data server is down")


def not_a_dataset(**kwargs):
    return 42
