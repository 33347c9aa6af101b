"""The inc_flow config: INC 1.x yaml for PyTorch as frozen, validated dataclasses.

A :class:`Config` comes from a yaml file (:meth:`Config.from_yaml`), a dict
(:meth:`Config.from_dict`) or keyword arguments (:meth:`Config.from_kwargs`), and dumps back with
``to_dict``/``to_yaml``; ``Config.from_dict(c.to_dict()) == c``. The schema is closed: unknown
keys, wrong types and impossible values raise one :class:`~inc_flow.errors.ConfigError` listing
every problem found, one line each, each naming the full key path (``error.path`` is the first).

Each field declares its check (see :func:`~inc_flow.config.base.checked`); construction runs
them, so a dataclass built directly in Python is checked and normalised like yaml (lists become
tuples, "1%" becomes 0.01, a section given as a dict is parsed). Relative paths
(``model.weights``, dataset roots) resolve against the current working directory, as in INC, and
are kept as written. No torch import here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from inc_flow.config.base import Section, as_section, as_specs, checked, put, sub
from inc_flow.config.checks import (
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
    check_path,
    check_seed,
    check_storage,
    check_str,
    check_tracking_uri,
    check_version,
    check_workspace,
    folder_not_found,
    sqlite_folder,
)
from inc_flow.config.instances import InstanceConfig
from inc_flow.config.names import DATASETS, DEFAULT_QCONFIG
from inc_flow.config.naming import (
    check_derived_names,
    check_name,
    experiment_problem,
    path_name_problem,
    registered_name_problem,
    study_problem,
)
from inc_flow.config.problems import Problems, config_error, problems_of, show, unknown_key
from inc_flow.config.spaces import OpSpace, TensorSpace, as_op_spaces
from inc_flow.config.specs import (
    DatasetSpec,
    MetricSpec,
    MultiMetricSpec,
    PostprocessSpec,
    TransformSpec,
)
from inc_flow.config.yamlio import dump_yaml, load_yaml
from inc_flow.errors import ConfigError
from inc_flow.vocab import Approach, Backend, Objective, Runtime, Strategy, names


# --- data ----------------------------------------------------------------------------------
def _dataset(p: Problems, key: str, value: Any) -> Any:
    if value is None:
        p.add(key, f"is required: one of {list(DATASETS)}")
        return value
    return as_section(p, key, value, DatasetSpec)


def _postprocess(p: Problems, key: str, value: Any) -> Any:
    if isinstance(value, Mapping):  # yaml: postprocess: {transform: {LabelShift: -1}}
        for k in value:
            if k != "transform":
                p.add(f"{key}.{k}", unknown_key(k, ["transform"], ""))
        return as_specs(p, f"{key}.transform", value.get("transform"), PostprocessSpec)
    return as_specs(p, key, value, PostprocessSpec)


@dataclass(frozen=True)
class DataloaderConfig(Section):
    """A built-in dataloader (INC ``dataloader``); ``dataset`` is required."""

    batch_size: int = checked(1, check_int, minimum=1)
    last_batch: str = checked("rollover", check_last_batch)
    shuffle: bool = checked(False, check_bool)
    dataset: DatasetSpec | None = checked(None, _dataset)
    transform: tuple[TransformSpec, ...] = checked((), as_specs, cls=TransformSpec)
    filter: None = checked(None, check_no_filter)

    _SECTION: ClassVar[str] = "dataloader"


# --- quantization --------------------------------------------------------------------------
@dataclass(frozen=True)
class CalibrationConfig(Section):
    """Calibration: the sample counts to try (INC ``sampling_size``) and the data."""

    sampling_size: tuple[int, ...] = checked((100,), check_ints)
    dataloader: DataloaderConfig | None = sub(DataloaderConfig, optional=True)


@dataclass(frozen=True)
class QuantizationConfig(Section):
    """INC ``quantization``; ``backend`` (the int8 kernels to try) and ``runtime`` (what runs
    the model: ``torch_fx``, ``openvino``; several are a search dimension) are inc_flow's.

    As in INC, ``model_wise`` values may be single strings; ``optype_wise``/``op_wise`` values
    must be lists. ``op_wise`` keys are op names or regular expressions.
    """

    approach: str = checked("post_training_static_quant", check_str, choices=names(Approach))
    backend: tuple[str, ...] = checked(
        ("x86",), check_names, choices=names(Backend), optional=False
    )
    runtime: tuple[str, ...] = checked(
        ("torch_fx",), check_names, choices=names(Runtime), optional=False
    )
    calibration: CalibrationConfig = sub(CalibrationConfig)
    model_wise: OpSpace = sub(OpSpace)
    optype_wise: dict[str, OpSpace] = checked(check=as_op_spaces, factory=dict, regex=False)
    op_wise: dict[str, OpSpace] = checked(check=as_op_spaces, factory=dict, regex=True)

    _SECTION: ClassVar[str] = "quantization"

    def op_space_for(self, name: str, op_type: str) -> OpSpace:
        """The settings allowed for one op, resolved field by field as in INC.

        ``op_wise`` (the exact op name, else the first key, in yaml order, that fully matches
        as a regex) beats ``optype_wise[op_type]``, which beats ``op_wise.default_qconfig``
        (INC's FX default for the ops not listed), which beats ``model_wise``. The result has
        both tensors; a field left None is unconstrained.
        """
        listed = {k: s for k, s in self.op_wise.items() if k != DEFAULT_QCONFIG}
        op_entry = listed.get(name)
        if op_entry is None:
            op_entry = next((s for k, s in listed.items() if re.fullmatch(k, name)), None)
        weight, activation = TensorSpace(), TensorSpace()
        default = self.op_wise.get(DEFAULT_QCONFIG)
        for layer in (self.model_wise, default, self.optype_wise.get(op_type), op_entry):
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
class AccuracyConfig(Section):
    """INC ``evaluation.accuracy``: ``metric`` or ``multi_metrics`` (or neither when the metric
    or eval_func comes from Python), the data, postprocess steps and iterations (-1: all)."""

    metric: MetricSpec | None = sub(MetricSpec, optional=True)
    multi_metrics: MultiMetricSpec | None = sub(MultiMetricSpec, optional=True)
    dataloader: DataloaderConfig | None = sub(DataloaderConfig, optional=True)
    postprocess: tuple[PostprocessSpec, ...] = checked((), _postprocess)
    iteration: int = checked(-1, check_iteration)
    configs: InstanceConfig | None = sub(InstanceConfig, optional=True)  # threads: all cores

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
class PerformanceConfig(Section):
    """INC ``evaluation.performance``: warmup and measured iterations (-1: whole loader);
    ``configs`` sets the timing threads (default 1)."""

    warmup: int = checked(5, check_int, minimum=0)
    iteration: int = checked(-1, check_iteration)
    dataloader: DataloaderConfig | None = sub(DataloaderConfig, optional=True)
    configs: InstanceConfig | None = sub(InstanceConfig, optional=True)

    _SECTION: ClassVar[str] = "performance"


@dataclass(frozen=True)
class EvaluationConfig(Section):
    """INC ``evaluation``."""

    accuracy: AccuracyConfig | None = sub(AccuracyConfig, optional=True)
    performance: PerformanceConfig | None = sub(PerformanceConfig, optional=True)


# --- tuning --------------------------------------------------------------------------------
@dataclass(frozen=True)
class StrategyConfig(Section):
    """INC ``tuning.strategy``; the name maps to an Optuna sampler."""

    name: str = checked("basic", check_str, choices=names(Strategy))

    _SECTION: ClassVar[str] = "strategy"


@dataclass(frozen=True)
class AccuracyCriterion(Section):
    """Allowed accuracy loss: exactly one of ``relative`` (default 0.01) or ``absolute``.

    Numbers, numeric strings and percent strings ("1%" is 0.01) are accepted, as in INC.
    """

    relative: float | None = checked(
        None, check_float, minimum=0.0, below=1.0, percent=True, optional=True
    )
    absolute: float | None = checked(None, check_float, minimum=0.0, percent=True, optional=True)
    higher_is_better: bool = checked(True, check_bool)

    def _check_together(self, p: Problems) -> None:
        if self.relative is not None and self.absolute is not None:
            p.add("", "must set exactly one of `relative` or `absolute`, got both")
        elif self.relative is None and self.absolute is None:
            put(self, "relative", 0.01)


@dataclass(frozen=True)
class ExitPolicy(Section):
    """INC ``tuning.exit_policy``; ``timeout`` in seconds, 0 = no limit."""

    timeout: float = checked(0.0, check_float, minimum=0.0)
    max_trials: int = checked(100, check_int, minimum=1)
    performance_only: bool = checked(False, check_bool)


@dataclass(frozen=True)
class WorkspaceConfig(Section):
    """INC ``tuning.workspace``: where tuning writes (INC's ``resume`` is rejected: a rerun of
    the same config resumes its study)."""

    path: str = checked("./nc_workspace", check_workspace)

    _SECTION: ClassVar[str] = "workspace"


@dataclass(frozen=True)
class TuningConfig(Section):
    """INC ``tuning``; ``storage`` (an Optuna storage URL), ``study_name`` and ``finalists``
    (the passing plans timed again beside fp32 after the search) are inc_flow's."""

    strategy: StrategyConfig = sub(StrategyConfig)
    accuracy_criterion: AccuracyCriterion = sub(AccuracyCriterion)
    objective: str = checked("performance", check_str, choices=names(Objective))
    exit_policy: ExitPolicy = sub(ExitPolicy)
    random_seed: int = checked(1978, check_seed)
    workspace: WorkspaceConfig = sub(WorkspaceConfig)
    storage: str | None = checked(None, check_storage)
    study_name: str | None = checked(None, check_name, rule=study_problem, optional=True)
    finalists: int = checked(3, check_int, minimum=1)  # plans timed again beside fp32

    _SECTION: ClassVar[str] = "tuning"

    def _check_together(self, p: Problems) -> None:
        folder = sqlite_folder(self.storage) if self.storage else None
        workspace = os.path.abspath(self.workspace.path)
        if folder and not os.path.isdir(folder) and os.path.abspath(folder) != workspace:
            p.add("storage", folder_not_found(folder))  # the workspace is created at start


# --- model, tracking, the whole config -----------------------------------------------------
@dataclass(frozen=True)
class ModelConfig(Section):
    """INC ``model``, plus inc_flow's ``factory``, ``weights`` and ``input_shape``.

    Attributes:
        name: the model name: the default MLflow experiment, registered model (``-int8``) and
            output folder (``outputs/<name>``), so one folder name by MLflow's rules.
        framework: ``pytorch_fx`` (graph mode, default) or ``pytorch`` (eager).
        factory: ``"package.module:callable"`` building the fp32 model (not imported here).
        weights: fp32 state dict file; must exist (relative to the current directory).
        input_shape: per-sample input shape, e.g. ``(1, 28, 28)``.
    """

    name: str = checked(check=check_name, rule=path_name_problem)
    framework: str = checked("pytorch_fx", check_framework)
    factory: str | None = checked(None, check_factory)
    weights: str | None = checked(None, check_path, directory=False, optional=True)
    input_shape: tuple[int, ...] | None = checked(None, check_ints, optional=True)

    _SECTION: ClassVar[str] = "model"


@dataclass(frozen=True)
class TrackingConfig(Section):
    """inc_flow's ``tracking``: MLflow store, experiment and registered model name.

    ``uri`` None means ``MLFLOW_TRACKING_URI`` or the project default; ``experiment`` None means
    ``model.name`` (see :attr:`Config.experiment_name`). ``predict_threads``: the logged model's
    ``predict`` threads; None: torch's default where it is served (:mod:`inc_flow.model.threads`).
    """

    uri: str | None = checked(None, check_tracking_uri)
    experiment: str | None = checked(None, check_name, rule=experiment_problem, optional=True)
    registered_model_name: str | None = checked(
        None, check_name, rule=registered_name_problem, optional=True
    )
    enabled: bool = checked(True, check_bool)
    predict_threads: int | None = checked(None, check_int, minimum=1, optional=True)

    def _check_together(self, p: Problems) -> None:
        if self.predict_threads is not None and not self.enabled:
            why = "sets the logged model's threads, but `enabled: false` logs no model"
            p.add("predict_threads", f"{why}; got {self.predict_threads}: remove one of them")


@dataclass(frozen=True)
class Config(Section):
    """The whole config: INC 1.x sections for PyTorch plus inc_flow's ``tracking``."""

    model: ModelConfig = checked(check=as_section, cls=ModelConfig)
    device: str = checked("cpu", check_device)
    quantization: QuantizationConfig = sub(QuantizationConfig)
    evaluation: EvaluationConfig = sub(EvaluationConfig)
    tuning: TuningConfig = sub(TuningConfig)
    tracking: TrackingConfig = sub(TrackingConfig)
    version: float = checked(1.0, check_version)

    _SECTION: ClassVar[str] = "config"

    def _check_together(self, p: Problems) -> None:
        t = self.tracking
        check_derived_names(p, self.model.name, t.experiment, t.registered_model_name)

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
            raise config_error(problems_of(e), f"(in {os.fspath(path)})") from e

    def to_dict(self) -> dict[str, Any]:
        """The whole config as plain yaml-safe data, ``version`` first as in INC files."""
        out = super().to_dict()
        return {"version": out.pop("version"), **out}

    def to_yaml(self, path: str | os.PathLike[str] | None = None) -> str:
        """The config as yaml text; also written to ``path`` when given."""
        text = dump_yaml(self.to_dict())
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
