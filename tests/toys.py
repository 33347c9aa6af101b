"""The shared toy models of the tests, written once.

``TinyNet`` (two convs, two linears; input ``(N, 1, 20, 20)``, see ``SHAPE``) is the model of
the engine, io, report and tracking tests; tests/test_flavor.py ships its source as a package
of its own. ``Untraceable`` wraps it in data-dependent control flow, ``NoOps`` has nothing to
quantize.

``LogSoftmaxNet`` ends in ``log_softmax`` (an op after the last quantizable one).

``SleepyNet`` is TinyNet with a call that sleeps ``INC_FLOW_TEST_SLEEP_S`` seconds per forward
pass of a batch of ``SLEEP_BATCH`` samples, for subprocess tests (``model.factory:
tests.toys:SleepyNet``). The call is an FX leaf (``torch.fx.wrap``), so it stays in every
traced, prepared and converted graph: each trial of a study takes a predictable wall time,
while the CPU stays free. Latency is timed at other batch sizes (1 and 64 in
tests/helpers/stores.py's config), where it does not sleep: there int8 is faster than fp32 in
the side-by-side round, as a model registered ``@champion`` must be. With
``INC_FLOW_TEST_BARRIER=<dir>:<n>``, the ``sleepy_net`` factory waits (60 s at most) until
``n`` processes have built the model, so that workers start tuning together. With
``INC_FLOW_TEST_HOLD=<file>``, the call blocks inside a traced graph (a trial's calibration or
evaluation; the fp32 baseline runs eagerly) while ``<file>`` exists (120 s at most), so a test
can hold a trial running in each worker until it lets them go.

``tiny_study`` tunes a TinyNet for real (two trials), for the tests that read its record.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

SLEEP_ENV = "INC_FLOW_TEST_SLEEP_S"
BARRIER_ENV = "INC_FLOW_TEST_BARRIER"
HOLD_ENV = "INC_FLOW_TEST_HOLD"
SHAPE = (1, 20, 20)
SLEEP_BATCH = 8  # pause() sleeps on batches of this size only (calibration and evaluation)


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        # wide enough that int8 is clearly faster than fp32 at batch 32 (about 3.4x, one
        # thread; 1.6x with 4 and 8 channels, which a loaded CI machine could flip)
        self.conv1 = nn.Conv2d(1, 16, 3)
        self.conv2 = nn.Conv2d(16, 32, 3)
        self.fc1 = nn.Linear(32 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(self.conv2(x))
        x = F.adaptive_avg_pool2d(x, 4)
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc2(x)


class LogSoftmaxNet(TinyNet):
    """TinyNet ending in ``log_softmax``, as LeNet does: a tail after its last quantizable op
    (``Plan.fp32_output``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(super().forward(x), dim=1)


class Untraceable(nn.Module):
    """Data-dependent control flow at the top; its sub-modules trace."""

    def __init__(self) -> None:
        super().__init__()
        self.body = TinyNet()
        self.head = nn.Linear(10, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        if y.sum() > 0:
            y = y * 2
        return self.head(y)


class NoOps(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)


def pause(x: torch.Tensor) -> torch.Tensor:
    """Identity that sleeps on a batch of ``SLEEP_BATCH`` samples; a leaf of FX graphs."""
    seconds = float(os.environ.get(SLEEP_ENV, "0") or 0)
    if seconds > 0 and x.shape[0] == SLEEP_BATCH:
        time.sleep(seconds)
    hold = os.environ.get(HOLD_ENV)
    if hold and "eval_with_key" in sys._getframe(1).f_code.co_filename:  # in an FX graph
        deadline = time.monotonic() + 120
        while Path(hold).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    return x


torch.fx.wrap("pause")


class SleepyNet(TinyNet):
    """TinyNet with a sleeping call before it, and seeded weights. Class 0 (the ``dummy``
    dataset's label) wins on any input, so a topk baseline on dummy data is 1.0, not below
    chance (which the tuner rejects)."""

    def __init__(self) -> None:
        torch.manual_seed(0)  # the same weights in every process: no weights file needed
        super().__init__()
        with torch.no_grad():
            self.fc2.bias[0] += 10.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(pause(x))


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


def _local_net() -> nn.Module:
    class Net(TinyNet):  # defined in a function: no factory, so no slow model logging
        pass

    return Net().eval()


def tiny_study(tmp: Path, backend: str) -> None:
    """Tune a TinyNet (study ``tiny``, two trials) into the current MLflow store."""
    from inc_flow import quantize

    torch.manual_seed(0)
    x = torch.randn(32, 1, 20, 20)
    conf = {
        "model": {"name": "tiny"},
        "quantization": {"backend": backend},
        "tuning": {
            "workspace": {"path": str(tmp / backend)},
            "exit_policy": {"timeout": 600, "max_trials": 2},
            "accuracy_criterion": {"absolute": 0.5},
        },
    }
    quantize(conf, model=_local_net(), calib_dataloader=[x], eval_func=lambda m: 0.9)
