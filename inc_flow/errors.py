"""Exceptions raised by inc_flow. Every message names what was wrong and echoes the value."""

from __future__ import annotations


class IncFlowError(Exception):
    """Base class of every error inc_flow raises on purpose."""


class ConfigError(IncFlowError, ValueError):
    """A configuration key, type or value is invalid. The message starts with the key path."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        super().__init__(f"`{path}` {message}" if path else message)


class DataError(IncFlowError, ValueError):
    """A dataset, dataloader or batch cannot be used."""


class MetricError(IncFlowError, ValueError):
    """A metric is unknown, misconfigured or returned an unusable value."""


class QuantizationError(IncFlowError, RuntimeError):
    """The model cannot be traced, prepared, calibrated or converted."""


class SaveLoadError(IncFlowError, ValueError):
    """An output directory, configure file or weights file cannot be read or written."""


class PlanError(IncFlowError, ValueError):
    """A quantization plan or search space is inconsistent (unknown op, value or setting)."""


class StudyError(IncFlowError, ValueError):
    """An Optuna study cannot be opened, resumed or used as asked (storage, name, settings)."""


class TrackingError(IncFlowError, RuntimeError):
    """The MLflow record cannot be written or read (tracking store, run, registry)."""


class NoFeasibleModelError(IncFlowError):
    """No plan met the accuracy criterion."""
