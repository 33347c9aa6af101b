"""The output directory: ``best_configure.yaml`` + ``best_model_weights.pt``, and ``load()``.

The configure file is plain safe yaml (no python tags) in INC's spirit: one entry per op with
its weight and activation dtype/scheme/granularity/algorithm, plus approach, framework,
backend, calibration size and versions. The weights file is the int8 state dict only, read
back with ``torch.load(weights_only=True)``; no pickled objects, no TorchScript.
"""

from __future__ import annotations

import importlib.metadata
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from inc_flow.errors import SaveLoadError
from inc_flow.model import inc_configure
from inc_flow.quant.ao import quiet
from inc_flow.quant.state import plain_state_dict, rebuild
from inc_flow.quant.stats import format_statistics, op_statistics, statistics_frame
from inc_flow.search.plan import Plan

CONFIGURE_FILE = "best_configure.yaml"
WEIGHTS_FILE = "best_model_weights.pt"
FORMAT_VERSION = 1


def _version() -> str:
    try:
        return importlib.metadata.version("inc-flow")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def describe_inputs(example_inputs: Any) -> list[dict[str, Any]]:
    """Shapes and dtypes of example inputs (a tensor or a tuple of tensors), as yaml data."""
    inputs = example_inputs if isinstance(example_inputs, tuple | list) else (example_inputs,)
    out = []
    for t in inputs:
        if not isinstance(t, torch.Tensor):
            raise SaveLoadError(
                f"example inputs must be tensors to be saved, got {type(t).__name__}"
            )
        out.append({"shape": [1, *t.shape[1:]], "dtype": str(t.dtype).removeprefix("torch.")})
    return out


def make_inputs(described: list[dict[str, Any]]) -> tuple[torch.Tensor, ...]:
    """Zero tensors of the described shapes: what ``rebuild`` needs to prepare the graph."""
    try:
        return tuple(
            torch.zeros(d["shape"], dtype=getattr(torch, d.get("dtype", "float32")))
            for d in described
        )
    except (KeyError, TypeError, AttributeError) as e:
        raise SaveLoadError(f"`example_inputs` in {CONFIGURE_FILE} is malformed: {e}") from e


@dataclass
class QuantizedModel:
    """A quantized model and what is needed to save and rebuild it (INC's ``q_model``).

    Attributes:
        model: the int8 ``nn.Module``.
        plan: the per-op plan it was built from.
        example_inputs: a batch of inputs (shapes are saved, values are not).
        calibration_size: samples used to calibrate (0 for dynamic).
        info: scores and other facts to record beside the plan (accuracy, latency, ...).
    """

    model: nn.Module
    plan: Plan
    example_inputs: Any
    calibration_size: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)

    @property
    def statistics(self):  # -> pandas.DataFrame
        """Mixed Precision Statistics of the int8 model."""
        return statistics_frame(op_statistics(self.model, self.plan.approach))

    def statistics_lines(self) -> list[str]:
        return format_statistics(self.statistics)

    def configure(self) -> dict[str, Any]:
        """The content of ``best_configure.yaml``."""
        plan = self.plan.to_dict()
        return {
            "format_version": FORMAT_VERSION,
            "approach": plan["approach"],
            "framework": plan["framework"],
            "backend": plan["backend"],
            "calibration_sampling_size": int(self.calibration_size),
            "example_inputs": describe_inputs(self.example_inputs),
            "versions": {"inc_flow": _version(), "torch": torch.__version__.split("+")[0]},
            "op": plan["ops"],
            "info": _plain(self.info),
        }

    def save(self, output_dir: str | os.PathLike) -> Path:
        """Write ``best_configure.yaml`` and ``best_model_weights.pt`` into ``output_dir``."""
        out = Path(output_dir)
        try:
            out.mkdir(parents=True, exist_ok=True)
            text = yaml.safe_dump(self.configure(), sort_keys=False)
            (out / CONFIGURE_FILE).write_text(text)
            with quiet():
                torch.save(plain_state_dict(self.model.state_dict()), out / WEIGHTS_FILE)
        except OSError as e:
            raise SaveLoadError(f"cannot write the output directory {str(out)!r}: {e}") from e
        return out


def _plain(value: Any) -> Any:
    """Make values safe-yaml friendly (numpy/torch scalars, tuples)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def read_configure(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check ``best_configure.yaml`` (a file or the directory holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / CONFIGURE_FILE
    if not path.is_file():
        raise SaveLoadError(f"no {CONFIGURE_FILE} at {str(path)!r}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise SaveLoadError(f"{str(path)!r} is not valid yaml: {e}") from e
    if not isinstance(data, dict) or "op" not in data:
        raise SaveLoadError(f"{str(path)!r} is not an inc_flow {CONFIGURE_FILE} (no `op` list)")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise SaveLoadError(
            f"`format_version` in {str(path)!r} must be {FORMAT_VERSION}, got {version!r}"
        )
    return data


def plan_from_configure(data: dict[str, Any]) -> Plan:
    try:
        return Plan.from_dict(
            {
                "approach": data["approach"],
                "backend": data["backend"],
                "framework": data["framework"],
                "ops": data["op"],
            }
        )
    except (KeyError, ValueError, TypeError) as e:
        raise SaveLoadError(f"{CONFIGURE_FILE} does not describe a valid plan: {e}") from e


def read_weights(path: str | os.PathLike) -> dict[str, Any]:
    """The int8 state dict, read with ``weights_only=True``; anything else is refused."""
    path = Path(path)
    if not path.is_file():
        raise SaveLoadError(f"no weights file at {str(path)!r}")
    try:
        with quiet():
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises several kinds; all mean "refused"
        raise SaveLoadError(
            f"{str(path)!r} is not a plain state dict that loads with weights_only=True "
            f"(refused, nothing from it was executed): {type(e).__name__}: {e}"
        ) from e
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise SaveLoadError(
            f"{str(path)!r} must hold a state dict (str -> tensor), got {type(state).__name__}"
        )
    return state


def load(
    checkpoint_dir: str | os.PathLike,
    model: nn.Module,
    history_cfg: Any = None,
    **kwargs: Any,
) -> nn.Module:
    """Rebuild the int8 model saved in ``checkpoint_dir`` on top of the fp32 ``model``.

    Mirrors ``neural_compressor.utils.pytorch.load(checkpoint_dir, model)``: no calibration
    data is needed; outputs are identical to the model that was saved.

    Args:
        checkpoint_dir: directory with ``best_configure.yaml`` and ``best_model_weights.pt``.
        model: the fp32 model (architecture; its weights are replaced by the saved ones).
        history_cfg: accepted for INC compatibility, unused.
        **kwargs: accepted for INC compatibility (e.g. ``dataloader``), unused.

    Returns:
        The int8 ``nn.Module`` in eval mode.
    """
    del history_cfg, kwargs
    if not isinstance(model, nn.Module):
        raise SaveLoadError(
            f"`model` must be the fp32 torch.nn.Module, got {type(model).__name__}"
        )
    inc = inc_configure.read(checkpoint_dir)  # INC 1.x's own file, mapped; None: inc_flow's
    data = read_configure(checkpoint_dir) if inc is None else inc
    plan = plan_from_configure(data)
    state = read_weights(Path(checkpoint_dir) / WEIGHTS_FILE)
    inputs = make_inputs(data.get("example_inputs") or [])
    try:
        return rebuild(model.eval(), plan, state, inputs)
    except Exception as e:  # noqa: BLE001 - re-raised with what was being loaded
        raise SaveLoadError(
            f"cannot rebuild the int8 model from {str(checkpoint_dir)!r} on "
            f"{type(model).__name__}: {e}"
        ) from e
