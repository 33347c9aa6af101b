"""torchvision's MobileNetV2 adapted to 1x28x28 Fashion-MNIST images, and its checkpoint.

``features.0.0`` (the stem) becomes a 3x3 stride-1 convolution over one channel, so the
28x28 input keeps its resolution into the first inverted-residual block (the usual
CIFAR-style stem). Everything else is torchvision's ``mobilenet_v2(num_classes=10)``: width
1.0, the 17 inverted-residual blocks with their strides (2, 2, 2 and 2 take the maps to
14, 7, 4 and 2 pixels), ReLU6, the 1280-channel last conv, global average pooling and the
dropout + linear classifier. 52 Conv2d (17 of them depthwise) and 1 Linear are quantizable.
Inputs are normalized with mean 0.2860 / std 0.3530 by the dataloader; outputs are 10
logits.

In long-trained MobileNets, depthwise convolutions with batch norm folded in have weight
ranges that differ by orders of magnitude between channels, so per-tensor int8 weights lose
accuracy; ``conf/mobilenetv2_static.yaml`` allows only per-tensor weights and lets tuning
fall ops back to fp32. The briefly trained checkpoint here shows this only mildly: after
folding, a layer's largest output channel is about 2x its median channel (median over the 35
Conv+BatchNorm pairs 1.8x, at most 5.1x in the depthwise ``features.15.conv.1``, on the
1286-step checkpoint of ``examples.mobilenetv2.train``): see the README's "Example models".

The trained state dict (~9 MB) is not committed: ``python -m examples.mobilenetv2.train``
writes it to :func:`checkpoint_path` (``$INC_FLOW_CACHE/mobilenetv2_fmnist.pt``, else
``~/.cache/inc_flow/mobilenetv2_fmnist.pt``).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
from torchvision.models import mobilenet_v2

from examples.resnet18.model import cache_dir

CHECKPOINT_NAME = "mobilenetv2_fmnist.pt"
MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST training-set pixel statistics


def checkpoint_path() -> Path:
    """Where ``examples.mobilenetv2.train`` saves and :func:`load_mobilenetv2` looks by
    default."""
    return cache_dir() / CHECKPOINT_NAME


def build_mobilenetv2() -> nn.Module:
    """An untrained MobileNetV2 for [N, 1, 28, 28] inputs and 10 classes."""
    model = mobilenet_v2(num_classes=10)
    stem = model.features[0][0]
    model.features[0][0] = nn.Conv2d(
        1, stem.out_channels, kernel_size=3, stride=1, padding=1, bias=False
    )
    return model


def load_mobilenetv2(path: str | os.PathLike | None = None) -> nn.Module:
    """The trained MobileNetV2 in eval mode (default: :func:`checkpoint_path`).

    Usable as a config model factory: ``examples.mobilenetv2.model:load_mobilenetv2``.

    Raises:
        FileNotFoundError: no checkpoint; the message says how to train one.
    """
    target = Path(path) if path is not None else checkpoint_path()
    if not target.is_file():
        raise FileNotFoundError(
            f"no MobileNetV2 checkpoint at {target}; train one (a few minutes on 2 CPU cores) "
            "from the repository root with `python -m examples.mobilenetv2.train` "
            f"(it writes {checkpoint_path()}; set INC_FLOW_CACHE to change the directory)"
        )
    model = build_mobilenetv2()
    model.load_state_dict(torch.load(target, map_location="cpu", weights_only=True))
    return model.eval()
