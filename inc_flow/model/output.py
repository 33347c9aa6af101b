"""The output directory: ``best_configure.yaml`` + ``best_model_weights.pt``, and ``load()``.

The configure file is plain safe yaml (no python tags) in INC's spirit: one entry per op with
its weight and activation dtype/scheme/granularity/algorithm, plus approach, framework,
backend, calibration size and versions, and ``weights``: the weights file's sha256 and each
entry's dtype and shape. The weights file is the int8 state dict only, read back with
``torch.load(weights_only=True)``; no pickled objects, no TorchScript. ``save`` replaces both
files at once (:mod:`inc_flow.model.atomic`); ``load`` checks the configure file's keys
(:mod:`inc_flow.model.configure`), the weights against ``weights``, and every entry against
the rebuilt int8 model (:mod:`inc_flow.quant.tensors`).
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from inc_flow.errors import SaveLoadError
from inc_flow.model import atomic, inc_configure
from inc_flow.model.configure import (
    CONFIGURE_FILE,
    FORMAT_VERSION,
    WEIGHTS_FILE,
    plan_from_configure,
    read_configure,
)
from inc_flow.model.faults import AFTER_CONFIGURE_WRITTEN, AFTER_WEIGHTS_WRITTEN, fault_point
from inc_flow.quant.ao import quiet
from inc_flow.quant.openvino import IR_FILES, OpenVinoModel, load_ir, plan_statistics
from inc_flow.quant.state import plain_state_dict, rebuild
from inc_flow.quant.stats import format_statistics, op_statistics, statistics_frame
from inc_flow.quant.tensors import describe_state
from inc_flow.search.plan import Plan
from inc_flow.vocab import Runtime

__all__ = [
    "CONFIGURE_FILE",
    "FORMAT_VERSION",
    "WEIGHTS_FILE",
    "QuantizedModel",
    "load",
    "plan_from_configure",
    "read_configure",
    "read_weights",
]
logger = logging.getLogger("inc_flow")


def _version(package: str = "inc-flow") -> str:
    try:
        return importlib.metadata.version(package)
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
    except (KeyError, TypeError, AttributeError, ValueError, RuntimeError) as e:
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
        if isinstance(self.model, OpenVinoModel):
            return statistics_frame(plan_statistics(self.plan))
        return statistics_frame(op_statistics(self.model, self.plan.approach))

    def statistics_lines(self) -> list[str]:
        return format_statistics(self.statistics)

    def configure(self) -> dict[str, Any]:
        """The content of ``best_configure.yaml``."""
        plan = self.plan.to_dict()
        versions = {"inc_flow": _version(), "torch": torch.__version__.split("+")[0]}
        runtime = {"runtime": plan["runtime"]} if "runtime" in plan else {}  # FX: INC's keys
        if runtime:
            versions[plan["runtime"]] = _version(plan["runtime"])
        out = {
            "format_version": FORMAT_VERSION,
            "approach": plan["approach"],
            "framework": plan["framework"],
            "backend": plan["backend"],
            **runtime,
            "calibration_sampling_size": int(self.calibration_size),
            "example_inputs": describe_inputs(self.example_inputs),
            "versions": versions,
            "op": plan["ops"],
            "info": _plain(self.info),
        }
        if "output" in plan:  # the plan's fp32 output (absent: int8)
            out["output"] = plan["output"]
        if "bias_correction" in plan:  # an OpenVINO plan's NNCF bias correction
            out["bias_correction"] = plan["bias_correction"]
        return out

    def save(self, output_dir: str | os.PathLike) -> Path:
        """Write ``best_configure.yaml`` and ``best_model_weights.pt`` into ``output_dir``,
        atomically (:mod:`inc_flow.model.atomic`): both files are written and fsynced in a
        temporary sibling directory, then swapped in. The configure file records the weights
        file's sha256 and each entry's dtype and shape, which ``load`` checks.

        Raises:
            SaveLoadError: the directory cannot be written (a full disk, no permission); the
                message names the path, nothing partial is left, a previous output is kept.
        """
        out = Path(output_dir)
        ir = isinstance(self.model, OpenVinoModel)
        # write order: the configure file last
        names = (*IR_FILES, CONFIGURE_FILE) if ir else (WEIGHTS_FILE, CONFIGURE_FILE)
        if not ir:
            with quiet():
                state = plain_state_dict(self.model.state_dict())
        configure = self.configure()
        swapping = False
        try:
            with atomic.staging(out, names) as tmp:
                if ir:
                    configure["ir"] = _write_ir(self.model, tmp)
                else:
                    weights = tmp / WEIGHTS_FILE
                    with quiet():
                        atomic.write_synced(weights, lambda f: torch.save(state, f))
                    configure["weights"] = {
                        "file": WEIGHTS_FILE,
                        "sha256": atomic.sha256_file(weights),
                        "bytes": weights.stat().st_size,
                        "tensors": describe_state(state),
                    }
                fault_point(AFTER_WEIGHTS_WRITTEN)
                text = yaml.safe_dump(configure, sort_keys=False).encode()
                atomic.write_synced(tmp / CONFIGURE_FILE, lambda f: f.write(text))
                fault_point(AFTER_CONFIGURE_WRITTEN)
                swapping = True
                atomic.commit(tmp, out, names)
        except OSError as e:
            kept = " (the previous output there is unchanged)" if out.is_dir() else ""
            if swapping:
                kept = " (failed while putting the new files in place; save again)"
            raise SaveLoadError(
                f"cannot write the output directory {str(out)!r}{kept}: {e}"
            ) from e
        return out


def _write_ir(model: OpenVinoModel, tmp: Path) -> dict[str, Any]:
    """The OpenVINO IR written and fsynced in ``tmp``; each file's sha256 and size."""
    model.save_ir(tmp)
    recorded = {}
    for name in IR_FILES:
        fd = os.open(tmp / name, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        recorded[name] = {
            "sha256": atomic.sha256_file(tmp / name),
            "bytes": (tmp / name).stat().st_size,
        }
    return recorded


def verify_ir(directory: Path, data: dict[str, Any]) -> None:
    """The IR files are the ones the configure file was saved with (sha256 of each)."""
    recorded = data.get("ir")
    if not isinstance(recorded, dict):
        raise SaveLoadError(
            f"{str(directory / CONFIGURE_FILE)!r}: `ir` must record the sha256 of "
            f"{list(IR_FILES)}, got {recorded!r}"
        )
    for name in IR_FILES:
        path = directory / name
        if not path.is_file():
            raise SaveLoadError(f"no {name} in {str(directory)!r} (runtime openvino)")
        want = (recorded.get(name) or {}).get("sha256") if isinstance(recorded, dict) else None
        sha = atomic.sha256_file(path)
        if sha != want:
            raise SaveLoadError(
                f"{str(path)!r} is not the file {CONFIGURE_FILE} was saved with: its sha256 is "
                f"{sha}, `ir.{name}.sha256` records {want!r} (save the model again)"
            )


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


def verify_weights(directory: Path, data: dict[str, Any], state: dict[str, Any]) -> None:
    """The weights file is the one its configure file was saved with: the same sha256 and
    the same entries (key, dtype, shape). A pair saved before inc_flow recorded them is
    loaded with a warning."""
    configure, weights = directory / CONFIGURE_FILE, directory / WEIGHTS_FILE
    recorded = data.get("weights")
    if recorded is None:
        logger.warning(
            "%s records no sha256 of %s (saved by an older inc_flow): the pair is loaded "
            "unverified; save it again to record one",
            configure,
            weights,
        )
        return
    sha = atomic.sha256_file(weights)
    if sha != recorded["sha256"]:
        raise SaveLoadError(
            f"{str(weights)!r} is not the weights file {str(configure)!r} was saved with: its "
            f"sha256 is {sha}, `weights.sha256` records {recorded['sha256']} (the two files "
            "come from different saves, or one was changed; save the model again)"
        )
    found = describe_state(state)
    tensors = recorded["tensors"]
    wrong = [k for k in sorted(set(found) | set(tensors)) if found.get(k) != tensors.get(k)]
    if wrong:
        k = wrong[0]
        raise SaveLoadError(
            f"{str(weights)!r} does not hold what `weights.tensors` in {str(configure)!r} "
            f"records: {k!r} is {found.get(k)!r} there, recorded {tensors.get(k)!r}"
            + (f" ({len(wrong)} keys differ)" if len(wrong) > 1 else "")
        )


def _interrupted(directory: Path) -> None:
    """Name a previous output a save moved aside when it was killed mid-swap."""
    if (directory / CONFIGURE_FILE).is_file():
        return
    moved = atomic.leftovers(directory)
    if moved:
        raise SaveLoadError(
            f"no {CONFIGURE_FILE} in {str(directory)!r}: a save into it was interrupted; "
            f"the previous output is complete in {str(moved[-1])!r} (move it back, or save "
            "again)"
        )


def load(
    checkpoint_dir: str | os.PathLike,
    model: nn.Module | None = None,
    history_cfg: Any = None,
    **kwargs: Any,
) -> nn.Module:
    """Rebuild the int8 model saved in ``checkpoint_dir`` on top of the fp32 ``model``.

    Mirrors ``neural_compressor.utils.pytorch.load(checkpoint_dir, model)``: no calibration
    data is needed; outputs are identical to the model that was saved.

    Args:
        checkpoint_dir: directory with ``best_configure.yaml`` and ``best_model_weights.pt``.
        model: the fp32 model (architecture; its weights are replaced by the saved ones).
            Not needed for a model saved with runtime ``openvino`` (its IR is loaded).
        history_cfg: accepted for INC compatibility, unused.
        **kwargs: accepted for INC compatibility (e.g. ``dataloader``), unused.

    Returns:
        The int8 ``nn.Module`` in eval mode (for runtime ``openvino``, an
        :class:`~inc_flow.quant.openvino.OpenVinoModel`: torch tensors in and out).

    Raises:
        SaveLoadError: naming the file and the key: a malformed configure file; weights that
            are not the ones the configure file was saved with (sha256, dtypes, shapes); or
            entries the plan's int8 model does not take (a float64 bias, qint32 weights, a
            NaN or non-positive scale).
    """
    del history_cfg, kwargs
    wrong = SaveLoadError(f"`model` must be the fp32 torch.nn.Module, got {type(model).__name__}")
    if model is not None and not isinstance(model, nn.Module):
        raise wrong
    directory = Path(checkpoint_dir)
    _interrupted(directory)
    inc = inc_configure.read(directory)  # INC 1.x's own file, mapped; None: inc_flow's
    data = read_configure(directory) if inc is None else inc
    if data.get("runtime", Runtime.TORCH_FX) != Runtime.TORCH_FX:
        return _load_runtime(directory, data)
    if model is None:
        raise wrong
    plan = plan_from_configure(data, directory / CONFIGURE_FILE)
    state = read_weights(directory / WEIGHTS_FILE)
    verify_weights(directory, data, state)
    inputs = make_inputs(data.get("example_inputs") or [])
    try:
        return rebuild(model.eval(), plan, state, inputs)
    except Exception as e:  # noqa: BLE001 - re-raised with what was being loaded
        raise SaveLoadError(
            f"cannot rebuild the int8 model from {str(directory / WEIGHTS_FILE)!r} on "
            f"{type(model).__name__}: {e}"
        ) from e


def _load_runtime(directory: Path, data: dict[str, Any]) -> nn.Module:
    """The model of a plan run outside torch (runtime ``openvino``): its IR, checked."""
    plan = plan_from_configure(data, directory / CONFIGURE_FILE)
    verify_ir(directory, data)
    try:
        return load_ir(directory, plan).eval()
    except SaveLoadError:
        raise
    except Exception as e:  # noqa: BLE001 - re-raised with what was being loaded
        raise SaveLoadError(f"cannot load the OpenVINO IR in {str(directory)!r}: {e}") from e
