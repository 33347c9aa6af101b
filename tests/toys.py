"""A toy factory model for subprocess tests (``model.factory: tests.toys:SleepyNet``).

``SleepyNet`` is TinyNet with a call that sleeps ``INC_FLOW_TEST_SLEEP_S`` seconds per forward
pass. The call is an FX leaf (``torch.fx.wrap``), so it stays in every traced, prepared and
converted graph: each trial of a study takes a predictable wall time, while the CPU stays
free. With ``INC_FLOW_TEST_BARRIER=<dir>:<n>``, building the model waits (60 s at most) until
``n`` processes have built it, so that workers start tuning together.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

SLEEP_ENV = "INC_FLOW_TEST_SLEEP_S"
BARRIER_ENV = "INC_FLOW_TEST_BARRIER"
SHAPE = (1, 20, 20)


def pause(x: torch.Tensor) -> torch.Tensor:
    """Identity that sleeps; a leaf of FX graphs."""
    seconds = float(os.environ.get(SLEEP_ENV, "0") or 0)
    if seconds > 0:
        time.sleep(seconds)
    return x


torch.fx.wrap("pause")


class SleepyNet(nn.Module):
    """TinyNet (two convs, two linears; input ``(N, 1, 20, 20)``) with a sleeping call."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)  # the same weights in every process: no weights file needed
        self.conv1 = nn.Conv2d(1, 4, 3)
        self.conv2 = nn.Conv2d(4, 8, 3)
        self.fc1 = nn.Linear(8 * 4 * 4, 16)
        self.fc2 = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(F.max_pool2d(self.conv1(pause(x)), 2))
        x = F.relu(self.conv2(x))
        x = F.adaptive_avg_pool2d(x, 4)
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc2(x)


def sleepy_net() -> SleepyNet:
    """The factory: a SleepyNet, after the barrier when ``INC_FLOW_TEST_BARRIER`` is set."""
    barrier = os.environ.get(BARRIER_ENV)
    if barrier:
        where, _, n = barrier.rpartition(":")
        Path(where).mkdir(parents=True, exist_ok=True)
        (Path(where) / str(os.getpid())).touch()
        deadline = time.monotonic() + 60
        while len(list(Path(where).iterdir())) < int(n) and time.monotonic() < deadline:
            time.sleep(0.05)
    return SleepyNet()
