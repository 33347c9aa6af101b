"""Built-in metrics with INC 1.x meanings, multi-metric weighting, and postprocess.

Every metric has ``update(preds, labels)``, ``reset()`` and ``result() -> float`` and a
class attribute ``higher_is_better``. ``preds``/``labels`` may be tensors, arrays, lists or
numbers. ``result()`` on a metric that saw no samples raises ``MetricError``; a NaN result
(NaN model outputs) is returned as NaN, and the caller decides what it means.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from inc_flow.errors import MetricError


def _tensor(x: Any, what: str) -> Tensor:
    if isinstance(x, Tensor):
        return x.detach().cpu()
    try:
        return torch.as_tensor(np.asarray(x))
    except (TypeError, ValueError, RuntimeError) as e:
        raise MetricError(
            f"`{what}` must be a tensor, array or number, got {type(x).__name__}"
        ) from e


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _empty(name: str) -> MetricError:
    return MetricError(f"{name}.result() called before any update(): no samples were seen")


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
            raise _empty(f"topk(k={self.k})")
        return self.correct / self.count


def _scores_and_targets(preds: Any, labels: Any) -> tuple[Tensor, Tensor]:
    scores, lab = _tensor(preds, "preds"), _tensor(labels, "labels")
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
            f"labels of shape {_shape(lab)} do not fit preds of shape {_shape(scores)}: "
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
        p, lab = _tensor(preds, "preds"), _tensor(labels, "labels")
        if p.ndim == lab.ndim == 2 and p.shape[1] > 1 and lab.shape[1] == 1:
            lab = lab.squeeze(1)  # class indices as a column
        if p.ndim == lab.ndim + 1 and p.ndim >= 2:
            p = p.squeeze(1) if p.shape[1] == 1 else p.argmax(dim=1)
        if p.shape != lab.shape:
            raise MetricError(
                f"Accuracy: preds of shape {_shape(p)} do not fit labels of shape {_shape(lab)}: "
                "expected preds [N, C, ...] with labels [N, ...], or equal shapes"
            )
        self.correct += int((p == lab).sum())
        self.count += lab.numel()

    def result(self) -> float:
        if self.count == 0:
            raise _empty("Accuracy")
        return self.correct / self.count


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
        p = _tensor(preds, "preds")
        ref = p if labels is None else _tensor(labels, "labels")
        self.total += float(p.to(torch.float64).sum())
        self.count += ref.shape[0] if ref.ndim else 1

    def result(self) -> float:
        if self.count == 0:
            raise _empty("Loss")
        return self.total / self.count


def _pairs(preds: Any, labels: Any) -> list[tuple[Tensor, Tensor]]:
    """Pairs to compare: one pair, or one per output when both are sequences of tensors."""
    if isinstance(preds, (list, tuple)) and preds and isinstance(preds[0], (Tensor, np.ndarray)):
        if not isinstance(labels, (list, tuple)) or len(labels) != len(preds):
            raise MetricError(f"{len(preds)} outputs need as many label tensors, got {labels!r}")
        return [
            (_tensor(p, "preds"), _tensor(t, "labels")) for p, t in zip(preds, labels, strict=True)
        ]
    return [(_tensor(preds, "preds"), _tensor(labels, "labels"))]


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
            raise _empty(type(self).__name__)
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
                        f"{type(self).__name__}: preds of shape {_shape(p)} and labels of "
                        f"shape {_shape(lab)} must have the same shape"
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
                    f"CosineSimilarity: preds of shape {_shape(p)} and labels of shape "
                    f"{_shape(lab)} must have the same shape, with vectors in the last dim"
                )
            cos = torch.nn.functional.cosine_similarity(
                p.to(torch.float64).reshape(-1, p.shape[-1]),
                lab.to(torch.float64).reshape(-1, lab.shape[-1]),
                dim=-1,
            )
            self.total += float(cos.sum())
            self.count += cos.numel()


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
        p, lab = _tensor(preds, "preds"), _tensor(labels, "labels").reshape(-1)
        if p.ndim == 2 and p.shape[0] == lab.numel() and p.shape[1] >= 2:
            self._width = max(self._width, p.shape[1])
            p = p.argmax(dim=1)
        p = p.reshape(-1)
        if p.numel() != lab.numel():
            raise MetricError(
                f"F1: preds of shape {_shape(p)} do not fit labels of shape {_shape(lab)}: "
                "expected scores [N, C] or class indices [N]"
            )
        pairs = torch.stack([lab.long(), p.long()], dim=1)
        uniq, counts = pairs.unique(dim=0, return_counts=True)
        for (t, q), c in zip(uniq.tolist(), counts.tolist(), strict=True):
            self._pairs[(t, q)] += c
        self.count += lab.numel()

    def result(self) -> float:
        if self.count == 0:
            raise _empty("F1")
        classes = sorted({c for pair in self._pairs for c in pair})
        if set(classes) <= {0, 1} and self._width <= 2:
            return self._class_f1(1)
        return sum(self._class_f1(c) for c in classes) / len(classes)

    def _class_f1(self, c: int) -> float:
        tp = self._pairs[(c, c)]
        fp = sum(n for (t, q), n in self._pairs.items() if q == c and t != c)
        fn = sum(n for (t, q), n in self._pairs.items() if t == c and q != c)
        return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


METRIC_CLASSES: Mapping[str, type] = {
    "topk": TopK,
    "Accuracy": Accuracy,
    "Loss": Loss,
    "MSE": MSE,
    "RMSE": RMSE,
    "MAE": MAE,
    "F1": F1,
    "CosineSimilarity": CosineSimilarity,
}


def wants_reference(metric: Any) -> bool:
    """True when ``metric`` (or one metric of a MultiMetric) has ``compare_label`` False:
    its labels are the fp32 model's outputs on the same inputs (INC's meaning)."""
    metrics = getattr(metric, "metrics", None)
    if isinstance(metrics, Mapping):
        return any(wants_reference(m) for m in metrics.values())
    return getattr(metric, "compare_label", True) is False


def update_metric(metric: Any, preds: Any, labels: Any, reference: Any = None) -> None:
    """``metric.update`` with the right labels: dataset ``labels``, or the fp32 ``reference``
    outputs for metrics with ``compare_label`` False (per metric inside a MultiMetric)."""
    metrics = getattr(metric, "metrics", None)
    if isinstance(metric, MultiMetric) and isinstance(metrics, Mapping):
        for m in metrics.values():
            update_metric(m, preds, labels, reference)
        return
    if wants_reference(metric):
        if reference is None:
            raise MetricError(
                f"{type(metric).__name__} with compare_label false compares with the fp32 "
                "model's outputs, but no fp32 model was given to the evaluator"
            )
        labels = reference
    metric.update(preds, labels)


class MultiMetric:
    """INC ``multi_metrics``: several metrics updated together.

    With ``weight`` the result is the weighted sum ``sum(weight[name] * result[name])``
    (INC's "weighted metric results"); without, each metric is judged on its own against
    the accuracy criterion (INC's "one by one"): use ``results()`` and
    ``higher_is_better``; ``result()`` is then the plain mean, for display only.

    Attributes:
        metrics: name -> metric, in config order.
        weight: name -> weight, or None.
        higher_is_better: name -> bool (default: each metric's own direction).
    """

    def __init__(
        self,
        metrics: Mapping[str, Any],
        weight: Mapping[str, float] | Sequence[float] | None = None,
        higher_is_better: Mapping[str, bool] | Sequence[bool] | None = None,
    ) -> None:
        if not metrics:
            raise MetricError("multi_metrics needs at least one metric")
        self.metrics = dict(metrics)
        self.weight = None if weight is None else self._per_metric(weight, "weight", float)
        default = {n: getattr(m, "higher_is_better", True) for n, m in self.metrics.items()}
        given = (
            {}
            if higher_is_better is None
            else self._per_metric(higher_is_better, "higher_is_better", bool)
        )
        self.higher_is_better = {**default, **given}

    def _per_metric(self, values: Any, what: str, cast: type) -> dict[str, Any]:
        names = list(self.metrics)
        if isinstance(values, Mapping):
            unknown = sorted(set(values) - set(names))
            missing = [n for n in names if n not in values] if what == "weight" else []
            if unknown or missing:
                raise MetricError(
                    f"multi_metrics `{what}` must name the metrics {names}, got {dict(values)}"
                )
            return {n: cast(values[n]) for n in names if n in values}
        if len(values) != len(names):
            raise MetricError(f"multi_metrics `{what}` needs {len(names)} values, got {values!r}")
        return {n: cast(v) for n, v in zip(names, values, strict=True)}

    def update(self, preds: Any, labels: Any) -> None:
        for metric in self.metrics.values():
            metric.update(preds, labels)

    def reset(self) -> None:
        for metric in self.metrics.values():
            metric.reset()

    def results(self) -> dict[str, float]:
        """Each metric's result, by name."""
        return {name: float(m.result()) for name, m in self.metrics.items()}

    def result(self) -> float:
        values = self.results()
        if self.weight is None:
            return sum(values.values()) / len(values)
        return sum(self.weight[n] * v for n, v in values.items())


def _name_params(spec: Any) -> tuple[str, dict[str, Any]]:
    if hasattr(spec, "name"):
        return spec.name, dict(spec.params or {})
    name, params = spec
    return name, dict(params or {})


def build_metric(spec: Any) -> Any:
    """Build a metric from a ``MetricSpec`` (``.name``, ``.params``) or a ``MultiMetricSpec``
    (``.metrics``, ``.weight``, ``.higher_is_better``)."""
    if hasattr(spec, "metrics"):
        metrics = {}
        for item in spec.metrics:
            name, _ = _name_params(item)
            if name in metrics:
                raise MetricError(f"multi_metrics names metric `{name}` twice")
            metrics[name] = build_metric(item)
        weight = getattr(spec, "weight", None)
        return MultiMetric(metrics, weight, getattr(spec, "higher_is_better", None))
    name, params = _name_params(spec)
    if name not in METRIC_CLASSES:
        raise MetricError(f"unknown metric `{name}`; built-in metrics: {list(METRIC_CLASSES)}")
    try:
        return METRIC_CLASSES[name](**params)
    except TypeError as e:
        raise MetricError(f"metric `{name}` with {params}: {e}") from e


def label_shift(output: Any, label: Any, label_shift: int = 0) -> tuple[Any, Any]:
    """INC ``LabelShift``: ``label - label_shift`` (e.g. -1 maps 0-based labels to 1-based)."""
    if isinstance(label_shift, bool) or not isinstance(label_shift, int):
        raise MetricError(f"`LabelShift.label_shift` must be an int, got {label_shift!r}")
    if label is None:
        return output, None
    if isinstance(label, (Tensor, np.ndarray, int)):
        return output, label - label_shift
    return output, _tensor(label, "label") - label_shift


POSTPROCESS_FUNCS: Mapping[str, Any] = {"LabelShift": label_shift}


def apply_postprocess(specs: Sequence[Any] | None, output: Any, label: Any) -> tuple[Any, Any]:
    """Apply postprocess steps (``(name, params)`` pairs or objects with ``.name``/``.params``)
    in order to one batch's model output and label; returns ``(output, label)``."""
    for spec in specs or ():
        name, params = _name_params(spec)
        if name not in POSTPROCESS_FUNCS:
            raise MetricError(f"unknown postprocess `{name}`; built-in: {list(POSTPROCESS_FUNCS)}")
        try:
            output, label = POSTPROCESS_FUNCS[name](output, label, **params)
        except TypeError as e:
            raise MetricError(f"postprocess `{name}` with {params}: {e}") from e
    return output, label
