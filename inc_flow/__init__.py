"""inc_flow: the fastest int8 version of a PyTorch model that meets an accuracy target.

INC 1.x's workflow (``Quantization("conf.yaml")``, ``q_model.save``, ``load``) on Optuna,
torch FX and MLflow. Heavy modules load on first use so ``import inc_flow`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "Config",
    "Quantization",
    "QuantizedModel",
    "common",
    "fit",
    "load",
    "quantize",
]

_LAZY = {
    "Config": ("inc_flow.config", "Config"),
    "Quantization": ("inc_flow.api", "Quantization"),
    "quantize": ("inc_flow.api", "quantize"),
    "fit": ("inc_flow.api", "fit"),
    "QuantizedModel": ("inc_flow.model.output", "QuantizedModel"),
    "load": ("inc_flow.model.output", "load"),
}


def __getattr__(name: str) -> Any:
    if name == "common":
        return importlib.import_module("inc_flow.common")
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'inc_flow' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
