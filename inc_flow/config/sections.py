"""The inc_flow config: INC 1.x yaml for PyTorch as frozen, validated dataclasses.

A :class:`Config` comes from a yaml file (:meth:`Config.from_yaml`), a dict
(:meth:`Config.from_dict`) or keyword arguments (:meth:`Config.from_kwargs`), and dumps back with
``to_dict``/``to_yaml``; ``Config.from_dict(c.to_dict()) == c``. The schema is closed: unknown
keys, wrong types and impossible values raise one :class:`~inc_flow.errors.ConfigError` listing
every problem found, one line each, each naming the full key path (``error.path`` is the first).

Each field declares its check (see ``_f``); construction runs them, so a dataclass built directly
in Python is checked and normalised like yaml (lists become tuples, "1%" becomes 0.01, a section
given as a dict is parsed). Relative paths (``model.weights``, dataset roots) resolve against
the current working directory, as in INC, and are kept as written. No torch import here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from functools import partial
from typing import Any, ClassVar

import yaml

from inc_flow.config.checks import (
    ACTIVATION_ALGORITHMS,
    APPROACHES,
    BACKENDS,
    DATASETS,
    DTYPES,
    GRANULARITIES,
    METRICS,
    OBJECTIVES,
    POSTPROCESS,
    SCALAR_PARAM,
    SCHEMES,
    STRATEGIES,
    TRANSFORMS,
    WEIGHT_ALGORITHMS,
    Problems,
    check_bool,
    check_device,
    check_factory,
    check_float,
    check_framework,
    check_int,
    check_ints,
    check_iteration,
    check_last_batch,
    check_names,
    check_no_filter,
    check_params,
    check_path,
    check_seed,
    check_storage,
    check_str,
    check_text,
    check_tracking_uri,
    check_version,
    check_workspace,
    config_error,
    folder_not_found,
    join,
    not_one_of,
    show,
    sqlite_folder,
    unknown_key,
    unknown_name,
)
from inc_flow.errors import ConfigError


# --- the machinery every section shares ----------------------------------------------------
def _put(obj: object, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)  # normalising a frozen dataclass during __post_init__


def _problems_of(error: ConfigError) -> tuple[tuple[str, str], ...]:
    return getattr(error, "problems", ((error.path, str(error)),))


def _f(
    default: Any = MISSING, check: Callable | None = None, factory: Any = MISSING, **kw: Any
) -> Any:
    """A field whose value goes through ``check(problems, key, value, **kw)`` at construction."""
    meta = {"check": partial(check, **kw)} if check else {}
    return field(default=default, default_factory=factory, metadata=meta)


def _section(p: Problems, key: str, value: Any, cls: type, optional: bool = False) -> Any:
    """``value`` as a ``cls`` section: kept if it is one, else parsed from its mapping."""
    if isinstance(value, cls) or (value is None and optional):
        return value
    try:
        return cls.from_dict(value)
    except ConfigError as e:
        for path, message in _problems_of(e):
            p.add(join(key, path), message)
        return value


def _sub(cls: type, optional: bool = False) -> Any:
    """A field holding a nested section (None when ``optional``, else ``cls()`` by default)."""
    if optional:
        return _f(None, _section, cls=cls, optional=True)
    return _f(check=_section, factory=cls, cls=cls)


def _dump(value: Any) -> Any:
    """Plain yaml-safe data: tuples become lists, a tuple of named specs one mapping."""
    if isinstance(value, tuple) and value and all(isinstance(v, _NamedSpec) for v in value):
        return {v.name: v.to_item() for v in value}
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_dump(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _dump(v) for k, v in value.items()}
    return value


class _Section:
    """Base of the sections: field checks on construction, closed ``from_dict``, ``to_dict``."""

    _SECTION: ClassVar[str] = ""  # which schema.INC_UNSUPPORTED table explains rejected keys

    def __post_init__(self) -> None:
        p = Problems()
        for f in fields(self):  # type: ignore[arg-type]
            if "check" in f.metadata:
                _put(self, f.name, f.metadata["check"](p, f.name, getattr(self, f.name)))
        if not len(p):
            self._check_together(p)
        p.raise_if_any()

    def _check_together(self, p: Problems) -> None:
        """Checks across fields; overridden where a section has them."""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Any:
        """Builds the section from its yaml mapping; None means all defaults."""
        p = Problems()
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            p.add("", f"must be a mapping, got {show(data)}")
            p.raise_if_any()
        names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        for key in data:
            if key not in names:
                p.add(str(key), unknown_key(key, names, cls._SECTION))
        kwargs = {k: v for k, v in data.items() if k in names}
        missing = [
            f.name
            for f in fields(cls)  # type: ignore[arg-type]
            if f.default is MISSING and f.default_factory is MISSING and f.name not in kwargs
        ]
        for name in missing:
            p.add(name, "is required")
        if not missing:
            try:
                obj = cls(**kwargs)
            except ConfigError as e:
                p.items.extend(_problems_of(e))  # after the unknown keys, in the order found
        p.raise_if_any()
        return obj

    def to_dict(self) -> dict[str, Any]:
        """The yaml form; None fields and empty lists/mappings are left out."""
        out = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is not None and not (isinstance(value, (tuple, dict)) and not value):
                out[f.name] = _dump(value)
        return out


# --- named entries: datasets, transforms, metrics, postprocess ------------------------------
@dataclass(frozen=True)
class _NamedSpec:
    """One yaml entry ``Name: params`` checked against a name table; defaults filled in."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    _TABLE: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    _WHAT: ClassVar[str] = ""

    def __post_init__(self) -> None:
        p = Problems()
        if not isinstance(self.name, str) or self.name not in self._TABLE:
            p.add(str(self.name), unknown_name(self._WHAT, self.name, self._TABLE))
        else:
            table = self._TABLE[self.name]
            _put(self, "params", check_params(p, self.name, self.name, self.params, table))
            if not len(p):
                self._check_together(p)
        p.raise_if_any()

    def _check_together(self, p: Problems) -> None:
        """Checks across parameters; overridden where needed."""

    @classmethod
    def from_item(cls, name: str, value: Any) -> Any:
        """From one yaml entry: ``topk: 1``, ``Normalize: {mean: [0.5]}``, ``ToTensor: {}``."""
        scalar = SCALAR_PARAM.get(name)
        return cls(name, {scalar: value} if scalar else value)

    @classmethod
    def from_dict(cls, data: Any) -> Any:
        """From a mapping with exactly one entry, e.g. ``{"FashionMNIST": {"train": True}}``."""
        if not isinstance(data, Mapping) or len(data) != 1:
            example = next(iter(cls._TABLE))
            message = f"must name exactly one {cls._WHAT}, e.g. {{{example}: ...}}"
            raise config_error([("", f"{message}, got {show(data)}")])
        ((name, value),) = data.items()
        return cls.from_item(name, value)

    def to_item(self) -> Any:
        """The yaml value of the entry (the bare parameter for ``topk``/``LabelShift``)."""
        scalar = SCALAR_PARAM.get(self.name)
        return self.params[scalar] if scalar else _dump(self.params)

    def to_dict(self) -> dict[str, Any]:
        return {self.name: self.to_item()}


@dataclass(frozen=True)
class DatasetSpec(_NamedSpec):
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
class TransformSpec(_NamedSpec):
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
class MetricSpec(_NamedSpec):
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
class PostprocessSpec(_NamedSpec):
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
        _put(self, "metrics", tuple(metrics))
        names = [m.name for m in metrics]
        if not names:
            p.add("", "must name at least one metric, e.g. {topk: 1, Loss: {}}")
        weight = partial(check_float, minimum=0.0)
        _put(self, "weight", _per_metric(p, "weight", self.weight, names, weight))
        hib = _per_metric(p, "higher_is_better", self.higher_is_better, names, check_bool)
        _put(self, "higher_is_better", hib)
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
            _section(p, "", {k: v}, MetricSpec) for k, v in data.items() if k not in options
        ]
        p.raise_if_any()
        try:
            return cls(tuple(metrics), data.get("weight"), data.get("higher_is_better"))
        except ConfigError as e:
            raise config_error(_problems_of(e)) from e

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {m.name: m.to_item() for m in self.metrics}
        for key in ("weight", "higher_is_better"):
            if getattr(self, key) is not None:
                out[key] = [getattr(self, key)[m.name] for m in self.metrics]
        return out


# --- checks of single fields that the schema module does not have --------------------------


def _specs(p: Problems, key: str, value: Any, cls: type[_NamedSpec]) -> Any:
    """A yaml mapping ``{Name: params, ...}`` (or a sequence of ``cls``) as a tuple of ``cls``."""
    if value is None:
        return ()
    before = len(p)
    if isinstance(value, Mapping):
        value = [_section(p, key, {name: params}, cls) for name, params in value.items()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, cls) for v in value):
        if len(p) == before:
            p.add(key, f"must be a mapping of {cls._WHAT} names to parameters, got {show(value)}")
        return value
    names = [v.name for v in value]
    for name in sorted({n for n in names if names.count(n) > 1}):
        p.add(f"{key}.{name}", f"is given more than once; each {cls._WHAT} may appear once")
    return tuple(value)


def _op_spaces(p: Problems, key: str, value: Any, regex: bool) -> Any:
    """``optype_wise``/``op_wise``: name -> OpSpace. As in INC, their values must be lists."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        p.add(key, f"must map names to {{weight: ..., activation: ...}}, got {show(value)}")
        return value
    out = {}
    for name, space in value.items():
        path = f"{key}.{name}"
        before = len(p)
        if not isinstance(name, str) or not name:
            p.add(path, f"must be keyed by a name, got key {show(name)}")
        elif regex:
            try:
                re.compile(name)
            except re.error as e:
                p.add(path, f"is not a valid regular expression: {e}")
        for tensor in ("weight", "activation"):
            entry = space.get(tensor) if isinstance(space, Mapping) else None
            for k, v in entry.items() if isinstance(entry, Mapping) else ():
                if k in ("dtype", "scheme", "granularity", "algorithm") and not isinstance(
                    v, (list, tuple)
                ):
                    example = repr(v) if isinstance(v, (str, int, float)) else "..."
                    message = f"must be a list, e.g. [{example}], got {show(v)}"
                    p.add(f"{path}.{tensor}.{k}", message)
        if len(p) == before:
            out[name] = _section(p, path, space, OpSpace)
    return out


def _dataset(p: Problems, key: str, value: Any) -> Any:
    if value is None:
        p.add(key, f"is required: one of {list(DATASETS)}")
        return value
    return _section(p, key, value, DatasetSpec)


def _postprocess(p: Problems, key: str, value: Any) -> Any:
    if isinstance(value, Mapping):  # yaml: postprocess: {transform: {LabelShift: -1}}
        for k in value:
            if k != "transform":
                p.add(f"{key}.{k}", unknown_key(k, ["transform"], ""))
        return _specs(p, f"{key}.transform", value.get("transform"), PostprocessSpec)
    return _specs(p, key, value, PostprocessSpec)


# --- quantization --------------------------------------------------------------------------
@dataclass(frozen=True)
class TensorSpace(_Section):
    """Allowed settings for one tensor (weight or activation); None leaves a field open."""

    dtype: tuple[str, ...] | None = _f(None, check_names, choices=DTYPES)
    scheme: tuple[str, ...] | None = _f(None, check_names, choices=SCHEMES)
    granularity: tuple[str, ...] | None = _f(None, check_names, choices=GRANULARITIES)
    algorithm: tuple[str, ...] | None = _f(None, check_names, choices=ACTIVATION_ALGORITHMS)

    _SECTION: ClassVar[str] = "tensor"

    def over(self, base: TensorSpace) -> TensorSpace:
        """``base`` with every field this space sets replaced (INC's per-field precedence)."""
        return replace(base, **{k: v for k, v in vars(self).items() if v is not None})


@dataclass(frozen=True)
class OpSpace(_Section):
    """INC's ``{weight: {...}, activation: {...}}`` for the model, an op type or one op."""

    weight: TensorSpace | None = _sub(TensorSpace, optional=True)
    activation: TensorSpace | None = _sub(TensorSpace, optional=True)

    def _check_together(self, p: Problems) -> None:
        algorithms = self.weight.algorithm if isinstance(self.weight, TensorSpace) else None
        for name in algorithms or ():
            if name not in WEIGHT_ALGORITHMS:
                p.add("weight.algorithm", not_one_of(name, WEIGHT_ALGORITHMS))


@dataclass(frozen=True)
class DataloaderConfig(_Section):
    """A built-in dataloader (INC ``dataloader``); ``dataset`` is required."""

    batch_size: int = _f(1, check_int, minimum=1)
    last_batch: str = _f("rollover", check_last_batch)
    shuffle: bool = _f(False, check_bool)
    dataset: DatasetSpec | None = _f(None, _dataset)
    transform: tuple[TransformSpec, ...] = _f((), _specs, cls=TransformSpec)
    filter: None = _f(None, check_no_filter)

    _SECTION: ClassVar[str] = "dataloader"


@dataclass(frozen=True)
class CalibrationConfig(_Section):
    """Calibration: the sample counts to try (INC ``sampling_size``) and the data."""

    sampling_size: tuple[int, ...] = _f((100,), check_ints)
    dataloader: DataloaderConfig | None = _sub(DataloaderConfig, optional=True)


@dataclass(frozen=True)
class QuantizationConfig(_Section):
    """INC ``quantization``; ``backend`` is inc_flow's (the int8 kernels to try).

    As in INC, ``model_wise`` values may be single strings; ``optype_wise``/``op_wise`` values
    must be lists. ``op_wise`` keys are op names or regular expressions.
    """

    approach: str = _f("post_training_static_quant", check_str, choices=APPROACHES)
    backend: tuple[str, ...] = _f(("x86",), check_names, choices=BACKENDS, optional=False)
    calibration: CalibrationConfig = _sub(CalibrationConfig)
    model_wise: OpSpace = _sub(OpSpace)
    optype_wise: dict[str, OpSpace] = _f(check=_op_spaces, factory=dict, regex=False)
    op_wise: dict[str, OpSpace] = _f(check=_op_spaces, factory=dict, regex=True)

    _SECTION: ClassVar[str] = "quantization"

    def op_space_for(self, name: str, op_type: str) -> OpSpace:
        """The settings allowed for one op, resolved field by field as in INC.

        ``op_wise`` (the exact op name, else the first key, in yaml order, that fully matches
        as a regex) beats ``optype_wise[op_type]``, which beats ``model_wise``. The result has
        both tensors; a field left None is unconstrained.
        """
        op_entry = self.op_wise.get(name)
        if op_entry is None:
            op_entry = next((s for k, s in self.op_wise.items() if re.fullmatch(k, name)), None)
        weight, activation = TensorSpace(), TensorSpace()
        for layer in (self.model_wise, self.optype_wise.get(op_type), op_entry):
            if layer is not None and layer.weight is not None:
                weight = layer.weight.over(weight)
            if layer is not None and layer.activation is not None:
                activation = layer.activation.over(activation)
        return OpSpace(weight=weight, activation=activation)

    def fallback_forced(self, name: str, op_type: str) -> bool:
        """True when the config pins the op to fp32 (activation or weight dtype ['fp32'])."""
        space = self.op_space_for(name, op_type)
        return ("fp32",) in (space.weight.dtype, space.activation.dtype)  # type: ignore[union-attr]


# --- evaluation ----------------------------------------------------------------------------
@dataclass(frozen=True)
class AccuracyConfig(_Section):
    """INC ``evaluation.accuracy``: ``metric`` or ``multi_metrics`` (or neither when the metric
    or eval_func comes from Python), the data, postprocess steps and iterations (-1: all)."""

    metric: MetricSpec | None = _sub(MetricSpec, optional=True)
    multi_metrics: MultiMetricSpec | None = _sub(MultiMetricSpec, optional=True)
    dataloader: DataloaderConfig | None = _sub(DataloaderConfig, optional=True)
    postprocess: tuple[PostprocessSpec, ...] = _f((), _postprocess)
    iteration: int = _f(-1, check_iteration)

    _SECTION: ClassVar[str] = "accuracy"

    def _check_together(self, p: Problems) -> None:
        if self.metric is not None and self.multi_metrics is not None:
            p.add("multi_metrics", "cannot be combined with `metric`; keep one of the two")

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if "postprocess" in out:
            out["postprocess"] = {"transform": out["postprocess"]}
        return out


@dataclass(frozen=True)
class PerformanceConfig(_Section):
    """INC ``evaluation.performance``: warmup and measured iterations (-1: whole loader)."""

    warmup: int = _f(5, check_int, minimum=0)
    iteration: int = _f(-1, check_iteration)
    dataloader: DataloaderConfig | None = _sub(DataloaderConfig, optional=True)

    _SECTION: ClassVar[str] = "performance"


@dataclass(frozen=True)
class EvaluationConfig(_Section):
    """INC ``evaluation``."""

    accuracy: AccuracyConfig | None = _sub(AccuracyConfig, optional=True)
    performance: PerformanceConfig | None = _sub(PerformanceConfig, optional=True)


# --- tuning --------------------------------------------------------------------------------
@dataclass(frozen=True)
class StrategyConfig(_Section):
    """INC ``tuning.strategy``; the name maps to an Optuna sampler."""

    name: str = _f("basic", check_str, choices=STRATEGIES)

    _SECTION: ClassVar[str] = "strategy"


@dataclass(frozen=True)
class AccuracyCriterion(_Section):
    """Allowed accuracy loss: exactly one of ``relative`` (default 0.01) or ``absolute``.

    Numbers, numeric strings and percent strings ("1%" is 0.01) are accepted, as in INC.
    """

    relative: float | None = _f(
        None, check_float, minimum=0.0, below=1.0, percent=True, optional=True
    )
    absolute: float | None = _f(None, check_float, minimum=0.0, percent=True, optional=True)
    higher_is_better: bool = _f(True, check_bool)

    def _check_together(self, p: Problems) -> None:
        if self.relative is not None and self.absolute is not None:
            p.add("", "must set exactly one of `relative` or `absolute`, got both")
        elif self.relative is None and self.absolute is None:
            _put(self, "relative", 0.01)


@dataclass(frozen=True)
class ExitPolicy(_Section):
    """INC ``tuning.exit_policy``; ``timeout`` in seconds, 0 = no limit."""

    timeout: float = _f(0.0, check_float, minimum=0.0)
    max_trials: int = _f(100, check_int, minimum=1)
    performance_only: bool = _f(False, check_bool)


@dataclass(frozen=True)
class WorkspaceConfig(_Section):
    """INC ``tuning.workspace``: where tuning writes; ``resume`` as in INC."""

    path: str = _f("./nc_workspace", check_workspace)
    resume: str | None = _f(None, check_text, optional=True)


@dataclass(frozen=True)
class TuningConfig(_Section):
    """INC ``tuning``; ``storage`` (an Optuna storage URL) and ``study_name`` are inc_flow's."""

    strategy: StrategyConfig = _sub(StrategyConfig)
    accuracy_criterion: AccuracyCriterion = _sub(AccuracyCriterion)
    objective: str = _f("performance", check_str, choices=OBJECTIVES)
    exit_policy: ExitPolicy = _sub(ExitPolicy)
    random_seed: int = _f(1978, check_seed)
    workspace: WorkspaceConfig = _sub(WorkspaceConfig)
    storage: str | None = _f(None, check_storage)
    study_name: str | None = _f(None, check_str, optional=True)

    _SECTION: ClassVar[str] = "tuning"

    def _check_together(self, p: Problems) -> None:
        folder = sqlite_folder(self.storage) if self.storage else None
        workspace = os.path.abspath(self.workspace.path)
        if folder and not os.path.isdir(folder) and os.path.abspath(folder) != workspace:
            p.add("storage", folder_not_found(folder))  # the workspace is created at start


# --- model, tracking, the whole config -----------------------------------------------------
@dataclass(frozen=True)
class ModelConfig(_Section):
    """INC ``model``, plus inc_flow's ``factory``, ``weights`` and ``input_shape``.

    Attributes:
        name: the model name (also the default MLflow experiment).
        framework: ``pytorch_fx`` (graph mode, default) or ``pytorch`` (eager).
        factory: ``"package.module:callable"`` building the fp32 model (not imported here).
        weights: fp32 state dict file; must exist (relative to the current directory).
        input_shape: per-sample input shape, e.g. ``(1, 28, 28)``.
    """

    name: str = _f(check=check_str)
    framework: str = _f("pytorch_fx", check_framework)
    factory: str | None = _f(None, check_factory)
    weights: str | None = _f(None, check_path, directory=False, optional=True)
    input_shape: tuple[int, ...] | None = _f(None, check_ints, optional=True)

    _SECTION: ClassVar[str] = "model"


@dataclass(frozen=True)
class TrackingConfig(_Section):
    """inc_flow's ``tracking``: MLflow store, experiment and registered model name.

    ``uri`` None means ``MLFLOW_TRACKING_URI`` or the project default; ``experiment`` None means
    ``model.name`` (see :attr:`Config.experiment_name`).
    """

    uri: str | None = _f(None, check_tracking_uri)
    experiment: str | None = _f(None, check_str, optional=True)
    registered_model_name: str | None = _f(None, check_str, optional=True)
    enabled: bool = _f(True, check_bool)


@dataclass(frozen=True)
class Config(_Section):
    """The whole config: INC 1.x sections for PyTorch plus inc_flow's ``tracking``."""

    model: ModelConfig = _f(check=_section, cls=ModelConfig)
    device: str = _f("cpu", check_device)
    quantization: QuantizationConfig = _sub(QuantizationConfig)
    evaluation: EvaluationConfig = _sub(EvaluationConfig)
    tuning: TuningConfig = _sub(TuningConfig)
    tracking: TrackingConfig = _sub(TrackingConfig)
    version: float = _f(1.0, check_version)

    _SECTION: ClassVar[str] = "config"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Config:
        """From the yaml mapping; sections may be dicts, unknown keys are rejected."""
        if not isinstance(data, Mapping):
            message = "the config must be a mapping of sections (model, quantization, ...)"
            raise config_error([("", f"{message}, got {show(data)}")])
        return super().from_dict({"model": None, **data})  # no model: "model.name is required"

    @classmethod
    def from_kwargs(cls, **sections: Any) -> Config:
        """``Config.from_kwargs(model={"name": "x"}, tuning={"random_seed": 1})``."""
        return cls.from_dict(sections)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> Config:
        """From a yaml file, read with a safe loader; the file is never modified."""
        data = load_yaml(path)
        try:
            return cls.from_dict(data)
        except ConfigError as e:
            raise config_error(_problems_of(e), f"(in {os.fspath(path)})") from e

    def to_dict(self) -> dict[str, Any]:
        """The whole config as plain yaml-safe data, ``version`` first as in INC files."""
        out = super().to_dict()
        return {"version": out.pop("version"), **out}

    def to_yaml(self, path: str | os.PathLike[str] | None = None) -> str:
        """The config as yaml text; also written to ``path`` when given."""
        text = yaml.dump(self.to_dict(), Dumper=_Dumper, sort_keys=False)
        if path is not None:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        return text

    @property
    def experiment_name(self) -> str:
        """The MLflow experiment: ``tracking.experiment``, else ``model.name``."""
        return self.tracking.experiment or self.model.name

    def op_space_for(self, name: str, op_type: str) -> OpSpace:
        """See :meth:`QuantizationConfig.op_space_for`."""
        return self.quantization.op_space_for(name, op_type)

    def fallback_forced(self, name: str, op_type: str) -> bool:
        """See :meth:`QuantizationConfig.fallback_forced`."""
        return self.quantization.fallback_forced(name, op_type)


# --- yaml ----------------------------------------------------------------------------------
class _Dumper(yaml.SafeDumper):
    """SafeDumper writing lists of scalars inline (``shape: [1, 28, 28]``)."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = all(not isinstance(v, (list, dict)) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys, which PyYAML would silently overwrite."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        self.flatten_mapping(node)
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float)) and key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
            if isinstance(key, (str, int, float)):
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str | os.PathLike[str]) -> Any:
    """The data in a yaml config file; ConfigError if missing, unreadable, invalid or empty."""
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError as e:
        where = "" if os.path.isabs(name) else f" (relative to {os.getcwd()})"
        raise ConfigError("", f"config file not found: {name!r}{where}") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError("", f"cannot read config file {name!r}: {e}") from e
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506  (a SafeLoader subclass)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError("", f"invalid YAML in {name!r}{at}: {e.problem or e}") from e
    except yaml.YAMLError as e:
        raise ConfigError("", f"invalid YAML in {name!r}: {e}") from e
    if data is None:
        message = "is empty; a config needs at least `model.name`, e.g. 'model: {name: my_model}'"
        raise ConfigError("", f"config file {name!r} {message}")
    return data
