"""What every built-in metric shares: preds/labels as tensors, and the no-samples error.

``preds``/``labels`` may be tensors, arrays, lists or numbers; ``result()`` on a metric that
saw no samples raises ``MetricError``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from inc_flow.errors import MetricError


def as_tensor(x: Any, what: str) -> Tensor:
    """``x`` as a CPU tensor; ``MetricError`` naming ``what`` if it cannot be one."""
    if isinstance(x, Tensor):
        return x.detach().cpu()
    try:
        return torch.as_tensor(np.asarray(x))
    except (TypeError, ValueError, RuntimeError) as e:
        raise MetricError(
            f"`{what}` must be a tensor, array or number, got {type(x).__name__}"
        ) from e


def shape_of(t: Tensor) -> tuple[int, ...]:
    """A tensor's shape as a plain tuple, for messages."""
    return tuple(t.shape)


def no_samples(name: str) -> MetricError:
    """The error of ``name.result()`` before any ``update()``."""
    return MetricError(f"{name}.result() called before any update(): no samples were seen")
