"""Reading ``best_configure.yaml``: every key ``load`` uses is checked before it is used.

A malformed file (not UTF-8, not yaml, not a mapping, ``op: [1, 2]``, a shape that is not a
list of positive integers...) is a :class:`~inc_flow.errors.SaveLoadError` that names the file
and the key path (``op[0]``, ``example_inputs[1].shape``), never an AttributeError.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
import yaml

from inc_flow.errors import PlanError, SaveLoadError
from inc_flow.quant.openvino import IR_FILES
from inc_flow.search.plan import OPTIONAL_KEYS, Plan
from inc_flow.vocab import Runtime

CONFIGURE_FILE = "best_configure.yaml"
WEIGHTS_FILE = "best_model_weights.pt"
FORMAT_VERSION = 1
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _bad(path: Path, key: str, message: str) -> SaveLoadError:
    return SaveLoadError(f"{str(path)!r}: `{key}` {message}")


def _text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise SaveLoadError(f"cannot read {str(path)!r}: {e}") from e
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SaveLoadError(
            f"{str(path)!r} is not UTF-8 text (byte {e.start}: {raw[e.start : e.start + 1]!r})"
            f"; it is not an inc_flow {CONFIGURE_FILE}"
        ) from e


def read_configure(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check ``best_configure.yaml`` (a file or the directory holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / CONFIGURE_FILE
    if not path.is_file():
        raise SaveLoadError(f"no {CONFIGURE_FILE} at {str(path)!r}")
    try:
        data = yaml.safe_load(_text(path))
    except yaml.YAMLError as e:
        raise SaveLoadError(f"{str(path)!r} is not valid yaml: {e}") from e
    if not isinstance(data, dict):
        raise SaveLoadError(
            f"{str(path)!r} must be a mapping of keys (an inc_flow {CONFIGURE_FILE}), "
            f"got {type(data).__name__}"
        )
    if "op" not in data:
        raise SaveLoadError(f"{str(path)!r} is not an inc_flow {CONFIGURE_FILE} (no `op` list)")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise SaveLoadError(
            f"`format_version` in {str(path)!r} must be {FORMAT_VERSION}, got {version!r}"
        )
    for key in ("approach", "framework", "backend", "output", "runtime"):
        if key in data and not isinstance(data[key], str):
            raise _bad(path, key, f"must be a string, got {data[key]!r}")
    _check_ops(path, data["op"])
    _check_inputs(path, data.get("example_inputs"))
    _check_weights(path, data.get("weights"))
    return data


def _check_ops(path: Path, ops: Any) -> None:
    if not isinstance(ops, list):
        raise _bad(path, "op", f"must be a list of ops, got {type(ops).__name__}")
    for i, op in enumerate(ops):
        if not isinstance(op, dict) or not all(
            isinstance(op.get(k), str) for k in ("name", "type")
        ):
            raise _bad(path, f"op[{i}]", f"must be a mapping with `name` and `type`, got {op!r}")
        for part in ("weight", "activation"):
            value = op.get(part)
            if value is not None and not (
                isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
            ):
                raise _bad(path, f"op[{i}].{part}", f"must be a mapping of strings, got {value!r}")


def _check_inputs(path: Path, inputs: Any) -> None:
    if inputs is None:
        return
    if not isinstance(inputs, list):
        raise _bad(path, "example_inputs", f"must be a list, got {type(inputs).__name__}")
    for i, item in enumerate(inputs):
        key = f"example_inputs[{i}]"
        if not isinstance(item, dict):
            raise _bad(path, key, f"must be a mapping with `shape` and `dtype`, got {item!r}")
        shape = item.get("shape")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape
        ):
            raise _bad(path, f"{key}.shape", f"must be a list of positive integers, got {shape!r}")
        dtype = item.get("dtype", "float32")
        if not isinstance(dtype, str) or not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise _bad(path, f"{key}.dtype", f"must name a torch dtype, got {dtype!r}")


def _check_weights(path: Path, weights: Any) -> None:
    """``weights``: what the weights file held when it was saved (absent before inc_flow
    recorded it: such a pair is loaded unverified, with a warning)."""
    if weights is None:
        return
    if not isinstance(weights, dict):
        raise _bad(path, "weights", f"must be a mapping, got {type(weights).__name__}")
    sha = weights.get("sha256")
    if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
        raise _bad(path, "weights.sha256", f"must be 64 lowercase hex digits, got {sha!r}")
    tensors = weights.get("tensors")
    if not isinstance(tensors, dict) or not all(isinstance(k, str) for k in tensors):
        raise _bad(path, "weights.tensors", "must be a mapping of state-dict keys")


def model_files(data: dict[str, Any]) -> tuple[str, ...]:
    """The files besides the configure file that hold the model ``data`` describes: the
    weights, or for runtime ``openvino`` the IR (``model.xml``, ``model.bin``)."""
    if data.get("runtime") == Runtime.OPENVINO:
        return IR_FILES
    return (WEIGHTS_FILE,)


def plan_from_configure(data: dict[str, Any], path: str | os.PathLike = CONFIGURE_FILE) -> Plan:
    """The plan ``data`` (a read configure file) describes."""
    try:
        return Plan.from_dict(
            {
                "approach": data["approach"],
                "backend": data["backend"],
                "framework": data["framework"],
                "ops": data["op"],
                **{key: data[key] for key in OPTIONAL_KEYS if key in data},
            }
        )
    except KeyError as e:
        raise SaveLoadError(f"{str(path)!r}: `{e.args[0]}` is missing") from e
    except (ValueError, TypeError, AttributeError, PlanError) as e:
        raise SaveLoadError(f"{str(path)!r} does not describe a valid plan: {e}") from e
