"""Averaged metrics with INC 1.x meanings: ``Loss``, ``MSE``, ``RMSE``, ``MAE``, and
``CosineSimilarity``; all but ``Loss`` compare with dataset labels or the fp32 outputs.

A NaN result (NaN model outputs) is returned as NaN, and the caller decides what it means.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from inc_flow.errors import MetricError
from inc_flow.metrics.base import as_tensor, no_samples, shape_of


class Loss:
    """INC ``Loss``: the model output *is* the loss; result = sum of preds / samples seen.

    The number of samples of an update is ``len(labels)`` (``len(preds)`` without labels).
    """

    higher_is_better = False

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.total = 0.0
        self.count = 0

    def update(self, preds: Any, labels: Any = None) -> None:
        p = as_tensor(preds, "preds")
        ref = p if labels is None else as_tensor(labels, "labels")
        self.total += float(p.to(torch.float64).sum())
        self.count += ref.shape[0] if ref.ndim else 1

    def result(self) -> float:
        if self.count == 0:
            raise no_samples("Loss")
        return self.total / self.count


def _pairs(preds: Any, labels: Any) -> list[tuple[Tensor, Tensor]]:
    """Pairs to compare: one pair, or one per output when both are sequences of tensors."""
    if isinstance(preds, (list, tuple)) and preds and isinstance(preds[0], (Tensor, np.ndarray)):
        if not isinstance(labels, (list, tuple)) or len(labels) != len(preds):
            raise MetricError(f"{len(preds)} outputs need as many label tensors, got {labels!r}")
        return [
            (as_tensor(p, "preds"), as_tensor(t, "labels"))
            for p, t in zip(preds, labels, strict=True)
        ]
    return [(as_tensor(preds, "preds"), as_tensor(labels, "labels"))]


class _Averaged:
    """A mean of per-element (or per-sample) values, with INC's ``compare_label`` switch:
    True compares with the dataset labels, False with the fp32 model's outputs on the same
    inputs (the evaluator passes those as ``labels``); None takes the class default."""

    higher_is_better = False
    compare_label_default = True

    def __init__(self, compare_label: bool | None = None) -> None:
        if compare_label is None:
            compare_label = self.compare_label_default
        if not isinstance(compare_label, bool):
            raise MetricError(f"`compare_label` must be a bool, got {compare_label!r}")
        self.compare_label = compare_label
        self.reset()

    def reset(self) -> None:
        self.total = 0.0
        self.count = 0

    def result(self) -> float:
        if self.count == 0:
            raise no_samples(type(self).__name__)
        return self.total / self.count


class MSE(_Averaged):
    """INC ``MSE``: mean over all elements of ``(preds - labels) ** 2``.

    Args:
        compare_label: INC's switch. True: ``labels`` are the dataset labels. False: the
            data has no usable labels and the evaluator passes the fp32 model's outputs on
            the same inputs as ``labels``; the arithmetic is the same either way.
    """

    def _error(self, diff: Tensor) -> Tensor:
        return diff.square()

    def update(self, preds: Any, labels: Any) -> None:
        for p, lab in _pairs(preds, labels):
            if p.shape != lab.shape:
                if p.numel() != lab.numel() or p.squeeze().shape != lab.squeeze().shape:
                    raise MetricError(
                        f"{type(self).__name__}: preds of shape {shape_of(p)} and labels of "
                        f"shape {shape_of(lab)} must have the same shape"
                    )
                lab = lab.reshape(p.shape)
            diff = p.to(torch.float64) - lab.to(torch.float64)
            self.total += float(self._error(diff).sum())
            self.count += diff.numel()


class RMSE(MSE):
    """INC ``RMSE``: the square root of ``MSE``."""

    def result(self) -> float:
        return math.sqrt(super().result())


class MAE(MSE):
    """INC ``MAE``: mean over all elements of ``|preds - labels|``."""

    def _error(self, diff: Tensor) -> Tensor:
        return diff.abs()


class CosineSimilarity(_Averaged):
    """inc_flow: mean cosine similarity between each sample's output and its label vector
    (the last dimension is the vector; higher is better, 1.0 is identical direction).

    Args:
        compare_label: as for ``MSE``; the default False compares with the fp32 model's
            outputs on the same inputs: agreement of int8 embeddings with fp32 embeddings.
    """

    higher_is_better = True
    compare_label_default = False

    def update(self, preds: Any, labels: Any) -> None:
        for p, lab in _pairs(preds, labels):
            if p.shape != lab.shape or p.dim() == 0:
                raise MetricError(
                    f"CosineSimilarity: preds of shape {shape_of(p)} and labels of shape "
                    f"{shape_of(lab)} must have the same shape, with vectors in the last dim"
                )
            cos = torch.nn.functional.cosine_similarity(
                p.to(torch.float64).reshape(-1, p.shape[-1]),
                lab.to(torch.float64).reshape(-1, lab.shape[-1]),
                dim=-1,
            )
            self.total += float(cos.sum())
            self.count += cos.numel()
