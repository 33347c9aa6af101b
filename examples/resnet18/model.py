"""torchvision's ResNet18 adapted to 1x28x28 Fashion-MNIST images, and its checkpoint.

``conv1`` becomes a 3x3 stride-1 convolution over one channel and the max-pool an identity,
so the 28x28 input keeps its resolution into ``layer1`` (the usual CIFAR-style stem). Inputs
are normalized with mean 0.2860 / std 0.3530 by the dataloader; outputs are 10 logits.

The trained state dict (~45 MB) is not committed: ``python -m examples.resnet18.train``
writes it to :func:`checkpoint_path` (``$INC_FLOW_CACHE/resnet18_fmnist.pt``, else
``~/.cache/inc_flow/resnet18_fmnist.pt``).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet18

CHECKPOINT_NAME = "resnet18_fmnist.pt"
MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST training-set pixel statistics


def cache_dir() -> Path:
    """``$INC_FLOW_CACHE``, else ``~/.cache/inc_flow``: outside the git tree."""
    env = os.environ.get("INC_FLOW_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "inc_flow"


def checkpoint_path() -> Path:
    """Where ``examples.resnet18.train`` saves and :func:`load_resnet18` looks by default."""
    return cache_dir() / CHECKPOINT_NAME


def build_resnet18() -> nn.Module:
    """An untrained ResNet18 for [N, 1, 28, 28] inputs and 10 classes."""
    model = resnet18(num_classes=10)
    model.conv1 = nn.Conv2d(1, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def load_resnet18(path: str | os.PathLike | None = None) -> nn.Module:
    """The trained ResNet18 in eval mode (default: :func:`checkpoint_path`).

    Usable as a config model factory: ``examples.resnet18.model:load_resnet18``.

    Raises:
        FileNotFoundError: no checkpoint; the message says how to train one.
    """
    target = Path(path) if path is not None else checkpoint_path()
    if not target.is_file():
        raise FileNotFoundError(
            f"no ResNet18 checkpoint at {target}; train one (a few minutes on 2 CPU cores) "
            "from the repository root with `python -m examples.resnet18.train` "
            f"(it writes {checkpoint_path()}; set INC_FLOW_CACHE to change the directory)"
        )
    model = build_resnet18()
    model.load_state_dict(torch.load(target, map_location="cpu", weights_only=True))
    return model.eval()
