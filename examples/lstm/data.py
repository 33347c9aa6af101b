"""Synthetic waveform classification: the repository makes its own sequence data.

Each sample is one noisy periodic waveform of ``SEQ_LEN`` steps and one feature, drawn from
one of five classes::

    0 sine   1 square   2 sawtooth (rising)   3 sawtooth (falling)   4 triangle

Every waveform gets a random frequency (1.5 to 5 periods per sequence), phase, amplitude
(0.5 to 1.5) and DC offset (+-0.5), then Gaussian noise whose standard deviation is 0.1 to
0.5 times the amplitude, plus a slow random-walk drift. Rising versus falling sawtooth needs
the order of the steps; sine versus triangle is hard under noise, so the trained classifier
lands near 90 %, not 100 %.

Generation is deterministic: sample ``i`` of a split depends only on ``(seed, split, i)``
(numpy ``SeedSequence``), so a prefix of a larger dataset equals a smaller one, and the
``train``, ``test`` and ``calib`` splits never share a sample's random stream.

Usable as inc_flow's ``custom`` dataset::

    dataset:
      custom:
        factory: "examples.lstm.data:waveforms"
        kwargs: {split: test, size: 2000}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

SEQ_LEN = 64
N_FEATURES = 1
CLASSES = ("sine", "square", "sawtooth_up", "sawtooth_down", "triangle")
SPLITS = {"train": 0, "test": 1, "calib": 2}
SEED = 20240611
CYCLES = (1.5, 5.0)  # periods per sequence
NOISE = (0.1, 0.5)  # noise standard deviation, relative to the amplitude


def _waveform(label: int, rng: np.random.Generator, length: int) -> np.ndarray:
    t = np.arange(length, dtype=np.float64) / length  # [0, 1)
    cycles = rng.uniform(*CYCLES)
    phase = rng.uniform(0.0, 1.0)
    u = (cycles * t + phase) % 1.0  # position within the period, [0, 1)
    if label == 0:
        clean = np.sin(2 * np.pi * u)
    elif label == 1:
        clean = np.where(u < 0.5, 1.0, -1.0)
    elif label == 2:
        clean = 2.0 * u - 1.0
    elif label == 3:
        clean = 1.0 - 2.0 * u
    else:
        clean = 1.0 - 4.0 * np.abs(u - 0.5)
    amplitude = rng.uniform(0.5, 1.5)
    offset = rng.uniform(-0.5, 0.5)
    noise = rng.uniform(*NOISE) * amplitude
    drift = np.cumsum(rng.normal(0.0, 0.03, length))
    return amplitude * clean + offset + drift + rng.normal(0.0, noise, length)


class Waveforms(torch.utils.data.Dataset):
    """``size`` samples of the ``split`` split: ``(float32 tensor [SEQ_LEN, 1], int label)``.

    Labels cycle through the classes (sample ``i`` has label ``i % 5``), so every prefix is
    balanced. All samples are generated up front (about 0.25 ms each).
    """

    def __init__(
        self,
        split: str = "train",
        size: int = 1000,
        seed: int = SEED,
        seq_len: int = SEQ_LEN,
        transform: Callable[[torch.Tensor], Any] | None = None,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be an integer >= 1, got {size!r}")
        self.split, self.seed, self.transform = split, seed, transform
        self.labels = torch.arange(size) % len(CLASSES)
        rows = []
        for i in range(size):
            rng = np.random.default_rng(np.random.SeedSequence([seed, SPLITS[split], i]))
            rows.append(_waveform(int(self.labels[i]), rng, seq_len))
        self.inputs = torch.from_numpy(np.stack(rows).astype(np.float32)).unsqueeze(-1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        x = self.inputs[index]
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.labels[index])


def waveforms(split: str = "train", size: int = 1000, **kwargs: Any) -> Waveforms:
    """The ``custom`` dataset factory: ``examples.lstm.data:waveforms``."""
    return Waveforms(split=split, size=size, **kwargs)
