"""The named entries of a config: datasets, transforms, metrics (single or several), postprocess.

Each is checked against its table in :mod:`inc_flow.config.names`, defaults filled in; yaml
``metric: {topk: 1}`` is ``MetricSpec("topk", {"k": 1})``. No torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

from inc_flow.config.base import NamedSpec, as_section, put
from inc_flow.config.checks import check_bool, check_float
from inc_flow.config.names import DATASETS, METRICS, POSTPROCESS, TRANSFORMS
from inc_flow.config.problems import Problems, config_error, problems_of, show
from inc_flow.errors import ConfigError


@dataclass(frozen=True)
class DatasetSpec(NamedSpec):
    """A built-in dataset: ``name`` from DATASETS and its parameters."""

    _TABLE: ClassVar = DATASETS
    _WHAT: ClassVar = "dataset"

    def _check_together(self, p: Problems) -> None:
        params = self.params
        if self.name not in ("dummy", "dummy_v2"):
            return
        shape = params.get("shape", params.get("input_shape"))
        inputs = len(shape) if shape and isinstance(shape[0], tuple) else 1
        for key in ("low", "high", "dtype"):
            value = params[key]
            if isinstance(value, tuple) and len(value) != inputs:
                p.add(
                    f"{self.name}.{key}", f"must have one value per input ({inputs}), got {value}"
                )
        low, high = params["low"], params["high"]
        lows = low if isinstance(low, tuple) else (low,) * inputs
        highs = high if isinstance(high, tuple) else (high,) * inputs
        if any(lo >= hi for lo, hi in zip(lows, highs, strict=True)):
            p.add(f"{self.name}.high", f"must be greater than `low`, got low={low}, high={high}")


@dataclass(frozen=True)
class TransformSpec(NamedSpec):
    """A preprocessing transform: ``name`` from TRANSFORMS and its parameters."""

    _TABLE: ClassVar = TRANSFORMS
    _WHAT: ClassVar = "transform"

    def _check_together(self, p: Problems) -> None:
        if self.name == "Normalize":
            mean, std = self.params["mean"], self.params["std"]
            if len(mean) > 1 and len(std) > 1 and len(mean) != len(std):
                message = f"must have 1 value or as many as `mean` ({len(mean)}), got {list(std)}"
                p.add("Normalize.std", message)


@dataclass(frozen=True)
class MetricSpec(NamedSpec):
    """A built-in metric; yaml ``metric: {topk: 1}`` is ``MetricSpec("topk", {"k": 1})``."""

    _TABLE: ClassVar = METRICS
    _WHAT: ClassVar = "metric"

    @classmethod
    def from_dict(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and len(data) > 1:
            message = f"must name one metric, got {list(data)}; use `multi_metrics` for several"
            raise config_error([("", message)])
        return super().from_dict(data)


@dataclass(frozen=True)
class PostprocessSpec(NamedSpec):
    """A step applied to (output, label) before the metric, e.g. yaml ``LabelShift: -1``."""

    _TABLE: ClassVar = POSTPROCESS
    _WHAT: ClassVar = "postprocess transform"


def _per_metric(p: Problems, key: str, value: Any, names: list[str], check: Callable) -> Any:
    """One value per metric: INC's list in metric order, or a mapping by metric name."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)) and len(value) == len(names):
        value = dict(zip(names, value, strict=True))
    if not isinstance(value, Mapping) or set(value) != set(names):
        p.add(key, f"must have one value per metric {names}, got {show(value)}")
        return value
    return {name: check(p, key, value[name]) for name in names}


@dataclass(frozen=True)
class MultiMetricSpec:
    """Several metrics scored together (INC ``multi_metrics``).

    Attributes:
        metrics: the metrics, in yaml order.
        weight: metric name -> weight of its score (yaml: a list in metric order).
        higher_is_better: metric name -> direction (yaml: a list in metric order).
    """

    metrics: tuple[MetricSpec, ...]
    weight: dict[str, float] | None = None
    higher_is_better: dict[str, bool] | None = None

    def __post_init__(self) -> None:
        p = Problems()
        metrics = self.metrics
        if not isinstance(metrics, (list, tuple)) or not all(
            isinstance(m, MetricSpec) for m in metrics
        ):
            p.add("metrics", f"must be a sequence of MetricSpec, got {show(metrics)}")
            p.raise_if_any()
        put(self, "metrics", tuple(metrics))
        names = [m.name for m in metrics]
        if not names:
            p.add("", "must name at least one metric, e.g. {topk: 1, Loss: {}}")
        weight = partial(check_float, minimum=0.0)
        put(self, "weight", _per_metric(p, "weight", self.weight, names, weight))
        hib = _per_metric(p, "higher_is_better", self.higher_is_better, names, check_bool)
        put(self, "higher_is_better", hib)
        p.raise_if_any()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> MultiMetricSpec:
        """From INC's ``{topk: 1, MSE: {}, weight: [0.5, 0.5], higher_is_better: [...]}``."""
        p = Problems()
        if not isinstance(data, Mapping):
            p.add("", f"must be a mapping of metric names to parameters, got {show(data)}")
            p.raise_if_any()
        options = ("weight", "higher_is_better")
        metrics = [
            as_section(p, "", {k: v}, MetricSpec) for k, v in data.items() if k not in options
        ]
        p.raise_if_any()
        try:
            return cls(tuple(metrics), data.get("weight"), data.get("higher_is_better"))
        except ConfigError as e:
            raise config_error(problems_of(e)) from e

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {m.name: m.to_item() for m in self.metrics}
        for key in ("weight", "higher_is_better"):
            if getattr(self, key) is not None:
                out[key] = [getattr(self, key)[m.name] for m in self.metrics]
        return out
