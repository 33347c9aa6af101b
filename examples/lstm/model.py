"""A 2-layer LSTM sequence classifier and its checkpoint, trained on ``examples.lstm.data``.

Inputs are [N, T, 1] float32 waveforms (batch first); outputs are logits over the five
waveform classes, read by a Linear head from the mean of the LSTM outputs over time. FX
traces the model with ``nn.LSTM`` as a leaf module, so dynamic PTQ sees two ops: ``lstm``
(LSTM) and ``fc`` (Linear).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from examples.lstm.data import CLASSES, N_FEATURES

CHECKPOINT = Path(__file__).resolve().parent / "lstm_classifier.pt"
HIDDEN = 64
LAYERS = 2


class LSTMClassifier(nn.Module):
    """``nn.LSTM`` (batch first) over the sequence, then a Linear head on its mean output
    (mean pooling trains several times faster than reading the last step alone)."""

    def __init__(
        self,
        input_size: int = N_FEATURES,
        hidden_size: int = HIDDEN,
        num_layers: int = LAYERS,
        num_classes: int = len(CLASSES),
    ) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers=num_layers, batch_first=True)
        self.fc = nn.Linear(hidden_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.fc(out.mean(dim=1))


def load_lstm(path: str | Path | None = None) -> LSTMClassifier:
    """An LSTMClassifier in eval mode with the trained weights (default: the committed
    checkpoint). Usable as a config model factory: ``examples.lstm.model:load_lstm``.
    """
    model = LSTMClassifier()
    state = torch.load(path or CHECKPOINT, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()
