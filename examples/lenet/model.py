"""The seed LeNet (the PyTorch MNIST example network) and its Fashion-MNIST checkpoint.

Inputs are [N, 1, 28, 28] images normalized with mean 0.2860 / std 0.3530 (done by the
dataloader, not the model); outputs are log-probabilities over the 10 classes.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

CHECKPOINT = Path(__file__).resolve().parent / "lenet_fmnist.pt"
MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST training-set pixel statistics


class LeNet(nn.Module):
    """Two conv + two linear layers; ``torch.flatten`` instead of ``view`` so FX traces it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.conv2_drop = nn.Dropout2d()
        self.fc1 = nn.Linear(320, 50)
        self.fc2 = nn.Linear(50, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.dropout(x, training=self.training)
        x = self.fc2(x)
        return F.log_softmax(x, dim=1)


def load_lenet(path: str | Path | None = None) -> LeNet:
    """A LeNet in eval mode with the trained weights (default: the committed checkpoint).

    Usable as a config model factory: ``examples.lenet.model:load_lenet``.
    """
    model = LeNet()
    state = torch.load(path or CHECKPOINT, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()
