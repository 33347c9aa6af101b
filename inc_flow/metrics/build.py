"""Config names -> metric classes and postprocess functions; building metrics from config,
INC's ``multi_metrics`` weighting, and which labels each metric is updated with.

Every metric has ``update(preds, labels)``, ``reset()`` and ``result() -> float`` and a
class attribute ``higher_is_better``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from torch import Tensor

from inc_flow.errors import MetricError
from inc_flow.metrics.base import as_tensor
from inc_flow.metrics.classification import F1, Accuracy, TopK
from inc_flow.metrics.regression import MAE, MSE, RMSE, CosineSimilarity, Loss

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


def tied_outputs(metric: Any) -> int | None:
    """Samples whose top score was shared, as counted by a ranking metric (``tied``); the
    largest count of a MultiMetric's ranking metrics; None when no metric ranks scores."""
    metrics = getattr(metric, "metrics", None)
    if isinstance(metric, MultiMetric) and isinstance(metrics, Mapping):
        counts = [c for c in map(tied_outputs, metrics.values()) if c is not None]
        return max(counts) if counts else None
    tied = getattr(metric, "tied", None)
    return int(tied) if isinstance(tied, int | np.integer) and not isinstance(tied, bool) else None


def chance_level(metric: Any) -> float | None:
    """The result a random ranking gets (``chance``: ``k / C`` for topk, ``1 / C`` for
    Accuracy on scores), combined like ``MultiMetric.result``; None when unknown."""
    metrics = getattr(metric, "metrics", None)
    if isinstance(metric, MultiMetric) and isinstance(metrics, Mapping):
        levels = {name: chance_level(m) for name, m in metrics.items()}
        if any(v is None for v in levels.values()):
            return None
        if metric.weight is None:
            return sum(levels.values()) / len(levels)  # type: ignore[arg-type]
        return sum(metric.weight[n] * v for n, v in levels.items())  # type: ignore[operator]
    chance = getattr(metric, "chance", None)
    known = isinstance(chance, int | float) and not isinstance(chance, bool)
    return float(chance) if known else None


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
    return output, as_tensor(label, "label") - label_shift


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
