"""Build the fp32 model a config names: ``model.factory`` + ``model.weights``."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from inc_flow.errors import ConfigError, SaveLoadError


def import_factory(spec: str, path: str = "model.factory") -> Any:
    """The callable named by ``"package.module:callable"``; imports only that module.

    The current directory is put on ``sys.path`` (as ``python -m`` does), so factories in
    the project (``examples.lenet.model:LeNet``) resolve from its root.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(path, f"must look like 'package.module:callable', got {spec!r}")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(path, f"cannot import module {module_name!r}: {e}") from e
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ConfigError(path, f"module {module_name!r} has no attribute {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(path, f"{spec!r} is not callable")
    return target


def build_model(factory: str, weights: str | None = None) -> nn.Module:
    """Call the factory and load the fp32 state dict (``weights_only=True``) if given."""
    build = import_factory(factory)
    try:
        model = build()
    except (Exception, SystemExit) as e:  # noqa: BLE001 - user code: name the key
        raise ConfigError(
            "model.factory", f"{factory!r} failed to build the model: {type(e).__name__}: {e}"
        ) from e
    if not isinstance(model, nn.Module):
        raise ConfigError(
            "model.factory", f"must return a torch.nn.Module, got {type(model).__name__}"
        )
    if weights:
        load_fp32_weights(model, weights)
    return model.eval()


def load_fp32_weights(model: nn.Module, weights: str | os.PathLike) -> None:
    """Load an fp32 state dict into ``model``; a mismatch names the keys."""
    path = Path(weights)
    if not path.is_file():
        raise ConfigError("model.weights", f"file does not exist: {str(path)!r}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - every failure here means "refused"
        raise SaveLoadError(
            f"`model.weights` {str(path)!r} is not a state dict that loads with "
            f"weights_only=True: {type(e).__name__}: {e}"
        ) from e
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError) as e:
        first = str(e).splitlines()[:6]
        raise SaveLoadError(
            f"`model.weights` {str(path)!r} does not match {type(model).__name__}: "
            + " ".join(first)
        ) from e
