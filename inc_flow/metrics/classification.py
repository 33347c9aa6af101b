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
    scores, ranked as the deployed model ranks them.

    ``preds``: scores ``[N, C]`` (``[C]`` is one sample; more dims are flattened to
    ``[N, -1]``). ``labels``: class indices ``[N]``/``[N, 1]`` or one-hot ``[N, C]``.
    ``correct`` and ``count`` are the tallies; ``result() = correct / count``.

    Top-1 is ``argmax`` (the first maximal index, as torch documents it); top-k takes the first
    k indices of a stable descending sort. So a label tied with another class at the cut-off
    counts only if it comes first, exactly as ``model(x).argmax(1) == y`` counts it. ``tied``
    counts the samples whose top score is shared by more than one class (int8 logits sit on a
    coarse grid, so this is a property of the model: the tuner records it per trial);
    ``classes`` is the scores' width, and ``chance`` the result of a random ranking.
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
        self.tied = 0
        self.classes = 0

    @property
    def chance(self) -> float | None:
        """``min(k, C) / C``, the expected result of ranking at random; None before scores."""
        return min(self.k, self.classes) / self.classes if self.classes else None

    def update(self, preds: Any, labels: Any) -> None:
        scores, targets = _scores_and_targets(preds, labels)
        self.correct += int(ranked_hits(scores, targets, self.k).sum())
        self.count += scores.shape[0]
        self.tied += top_ties(scores)
        self.classes = max(self.classes, scores.shape[1])

    def result(self) -> float:
        if self.count == 0:
            raise no_samples(f"topk(k={self.k})")
        return self.correct / self.count


def ranked_hits(scores: Tensor, targets: Tensor, k: int) -> Tensor:
    """Per sample, whether ``targets`` is among the first ``k`` classes of ``scores [N, C]``:
    ``argmax`` for k = 1, the first k of a stable descending sort otherwise (ties go to the
    lower class index, as the deployed model's ``argmax`` gives them)."""
    if k == 1:
        return scores.argmax(dim=1) == targets
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    return (order == targets.unsqueeze(1)).any(dim=1)


def top_ties(scores: Tensor) -> int:
    """How many rows of ``scores [N, C]`` have their maximum at more than one index."""
    if scores.shape[1] < 2 or scores.shape[0] == 0:
        return 0
    top = scores.max(dim=1, keepdim=True).values
    return int(((scores == top).sum(dim=1) > 1).sum())


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
    targets = targets.long()
    if n and (int(targets.min()) < 0 or int(targets.max()) >= scores.shape[1]):
        bad = targets[(targets < 0) | (targets >= scores.shape[1])][0]
        raise MetricError(
            f"label {int(bad)} is not a class index of scores with {scores.shape[1]} classes "
            "(expected 0 .. C-1; a LabelShift postprocess may be missing)"
        )
    return scores, targets


class Accuracy:
    """INC ``Accuracy`` for binary, multiclass and multilabel data.

    * preds one dim more than labels (``[N, C, ...]`` vs ``[N, ...]``): multiclass, the
      prediction is the argmax over dim 1 (with ``C == 1`` the squeezed value itself);
    * preds and labels of equal shape: element-wise equality (binary / multilabel).

    ``correct``/``count`` count compared elements; ``result() = correct / count``. The argmax
    is torch's (first maximal index), as the deployed model's. On class scores ``[N, C]``,
    ``tied`` counts the samples whose top score is shared and ``chance`` is ``1 / C``; both
    are None when no update held class scores.
    """

    higher_is_better = True

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.correct = 0
        self.count = 0
        self.tied: int | None = None
        self.classes = 0

    @property
    def chance(self) -> float | None:
        """``1 / C`` once class scores ``[N, C]`` were seen, else None."""
        return 1 / self.classes if self.classes else None

    def update(self, preds: Any, labels: Any) -> None:
        p, lab = as_tensor(preds, "preds"), as_tensor(labels, "labels")
        if p.ndim == lab.ndim == 2 and p.shape[1] > 1 and lab.shape[1] == 1:
            lab = lab.squeeze(1)  # class indices as a column
        if p.ndim == lab.ndim + 1 and p.ndim >= 2:
            if p.ndim == 2 and p.shape[1] > 1:
                self.tied = (self.tied or 0) + top_ties(p)
                self.classes = max(self.classes, p.shape[1])
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
    The argmax is torch's (first maximal index); ``tied`` counts the samples whose top score
    is shared (None when no update held scores).
    """

    higher_is_better = True

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._pairs: Counter[tuple[int, int]] = Counter()
        self._width = 0
        self.count = 0
        self.tied: int | None = None

    def update(self, preds: Any, labels: Any) -> None:
        p, lab = as_tensor(preds, "preds"), as_tensor(labels, "labels").reshape(-1)
        if p.ndim == 2 and p.shape[0] == lab.numel() and p.shape[1] >= 2:
            self._width = max(self._width, p.shape[1])
            self.tied = (self.tied or 0) + top_ties(p)
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
