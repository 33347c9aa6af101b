"""Classification metrics with INC 1.x meanings: ``topk``, ``Accuracy``, ``F1``.

Every metric has ``update(preds, labels)``, ``reset()``, ``result() -> float`` and a class
attribute ``higher_is_better``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch import Tensor

from inc_flow.errors import MetricError
from inc_flow.metrics.base import as_tensor, no_samples, shape_of


class TopK:
    """Top-k accuracy (INC ``topk``): a sample is correct if its label is among the k highest
    scores.

    ``preds``: scores ``[N, C]`` (``[C]`` is one sample; more dims are flattened to
    ``[N, -1]``). ``labels``: class indices ``[N]``/``[N, 1]`` or one-hot ``[N, C]``.
    ``correct`` and ``count`` are the tallies; ``result() = correct / count``. A label tied
    with other classes at the k-th highest score counts as the fraction of the remaining
    places it would get under a random tie-break (``correct`` may then be fractional).
    """

    higher_is_better = True

    def __init__(self, k: int = 1) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise MetricError(f"`topk.k` must be an integer >= 1, got k={k!r}")
        self.k = k
        self.reset()

    def reset(self) -> None:
        self.correct = 0
        self.count = 0

    def update(self, preds: Any, labels: Any) -> None:
        scores, targets = _scores_and_targets(preds, labels)
        # Ties: int8 outputs sit on a coarse grid, so the k-th highest score is often shared
        # (2 % of test images for the 28x28 MobileNetV2), and which of the tied classes
        # torch.topk or argmax returns is an implementation detail that moved accuracy by
        # more than a tight target. A label tied at the k-th score gets the share of the
        # remaining places it would win under a random tie-break: deterministic and
        # unbiased; without ties this is the plain 0/1 count.
        k = min(self.k, scores.shape[1])
        kth = scores.topk(k, dim=1).values[:, -1:]
        label_score = scores.gather(1, targets.unsqueeze(1))
        above = (scores > kth).sum(dim=1, keepdim=True)
        tied = (scores == kth).sum(dim=1, keepdim=True)
        credit = torch.where(
            label_score > kth,
            1.0,
            torch.where(label_score == kth, (k - above).double() / tied.double(), 0.0),
        )
        self.correct += float(credit.sum())
        self.count += scores.shape[0]

    def result(self) -> float:
        if self.count == 0:
            raise no_samples(f"topk(k={self.k})")
        return self.correct / self.count


def _scores_and_targets(preds: Any, labels: Any) -> tuple[Tensor, Tensor]:
    scores, lab = as_tensor(preds, "preds"), as_tensor(labels, "labels")
    if scores.ndim == 0:
        raise MetricError("`preds` must hold class scores [N, C], got a scalar")
    scores = scores.reshape(1, -1) if scores.ndim == 1 else scores.reshape(scores.shape[0], -1)
    n = scores.shape[0]
    if lab.numel() == n:
        targets = lab.reshape(n)
    elif lab.ndim >= 2 and lab.shape[0] == n:
        targets = lab.reshape(n, -1).argmax(dim=1)  # one-hot
    else:
        raise MetricError(
            f"labels of shape {shape_of(lab)} do not fit preds of shape {shape_of(scores)}: "
            "expected class indices [N] or one-hot [N, C]"
        )
    return scores, targets.long()


class Accuracy:
    """INC ``Accuracy`` for binary, multiclass and multilabel data.

    * preds one dim more than labels (``[N, C, ...]`` vs ``[N, ...]``): multiclass, the
      prediction is the argmax over dim 1 (with ``C == 1`` the squeezed value itself);
    * preds and labels of equal shape: element-wise equality (binary / multilabel).

    ``correct``/``count`` count compared elements; ``result() = correct / count``.
    """

    higher_is_better = True

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.correct = 0
        self.count = 0

    def update(self, preds: Any, labels: Any) -> None:
        p, lab = as_tensor(preds, "preds"), as_tensor(labels, "labels")
        if p.ndim == lab.ndim == 2 and p.shape[1] > 1 and lab.shape[1] == 1:
            lab = lab.squeeze(1)  # class indices as a column
        if p.ndim == lab.ndim + 1 and p.ndim >= 2:
            p = p.squeeze(1) if p.shape[1] == 1 else p.argmax(dim=1)
        if p.shape != lab.shape:
            raise MetricError(
                f"Accuracy: preds of shape {shape_of(p)} do not fit labels of shape "
                f"{shape_of(lab)}: expected preds [N, C, ...] with labels [N, ...], "
                "or equal shapes"
            )
        self.correct += int((p == lab).sum())
        self.count += lab.numel()

    def result(self) -> float:
        if self.count == 0:
            raise no_samples("Accuracy")
        return self.correct / self.count


class F1:
    """F1 score of class predictions, accumulated over all updates.

    ``preds`` are scores ``[N, C]`` (argmax taken, ``C >= 2``) or class indices shaped like
    ``labels``. When only classes 0 and 1 occur (and scores have at most 2 columns) this is
    the binary F1 of class 1, INC's documented meaning; otherwise the macro average over
    the classes seen in labels or predictions. A class never predicted nor present scores 0.
    """

    higher_is_better = True

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._pairs: Counter[tuple[int, int]] = Counter()
        self._width = 0
        self.count = 0

    def update(self, preds: Any, labels: Any) -> None:
        p, lab = as_tensor(preds, "preds"), as_tensor(labels, "labels").reshape(-1)
        if p.ndim == 2 and p.shape[0] == lab.numel() and p.shape[1] >= 2:
            self._width = max(self._width, p.shape[1])
            p = p.argmax(dim=1)
        p = p.reshape(-1)
        if p.numel() != lab.numel():
            raise MetricError(
                f"F1: preds of shape {shape_of(p)} do not fit labels of shape {shape_of(lab)}: "
                "expected scores [N, C] or class indices [N]"
            )
        pairs = torch.stack([lab.long(), p.long()], dim=1)
        uniq, counts = pairs.unique(dim=0, return_counts=True)
        for (t, q), c in zip(uniq.tolist(), counts.tolist(), strict=True):
            self._pairs[(t, q)] += c
        self.count += lab.numel()

    def result(self) -> float:
        if self.count == 0:
            raise no_samples("F1")
        classes = sorted({c for pair in self._pairs for c in pair})
        if set(classes) <= {0, 1} and self._width <= 2:
            return self._class_f1(1)
        return sum(self._class_f1(c) for c in classes) / len(classes)

    def _class_f1(self, c: int) -> float:
        tp = self._pairs[(c, c)]
        fp = sum(n for (t, q), n in self._pairs.items() if q == c and t != c)
        fn = sum(n for (t, q), n in self._pairs.items() if t == c and q != c)
        return 2 * tp / (2 * tp + fp + fn) if tp else 0.0
