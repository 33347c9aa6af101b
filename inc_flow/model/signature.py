"""The pyfunc's inputs: their specs, the sidecar ``inc_flow_model.yaml`` and the signature.

A model of one float32 input has an unnamed tensor signature and ``predict`` takes the batch
itself (ndarray, nested list or DataFrame); its sidecar is format 1 (``input: {shape,
dtype}``). Any other model (several inputs, or one integer/bool input) has one *named* tensor
spec per input, named after the positional parameters of the model's ``forward``
(``input_ids``, ``attention_mask``; ``input_0``, ``input_1``... when those cannot be read),
and ``predict`` takes a dict name -> batch (or, with several inputs, a list of batches in
``forward`` order); its sidecar is format 2 (``inputs: [{name, shape, dtype}]``). Dtypes:
floating inputs are float32, strictly (a float64 batch is refused, never rounded); an integer
input accepts any integer dtype that converts to its own without loss (int32 token ids for an
int64 input), and is converted; bool is bool. Every input is ``(N, *shape)`` with the same
``N``.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from mlflow.models import ModelSignature
from mlflow.types.schema import Schema, TensorSpec

from inc_flow.errors import SaveLoadError
from inc_flow.model.factory import build_model
from inc_flow.model.output import QuantizedModel

SIDECAR_FILE = "inc_flow_model.yaml"
# 1: one unnamed float32 input (`input: {shape, dtype}`); 2: named inputs (`inputs: [...]`).
# log_model writes 1 whenever it suffices, so older loaders still read those models.
SIDECAR_VERSION = 2
SIDECAR_VERSIONS = (1, 2)
FLOAT32 = np.dtype(np.float32)


@dataclass(frozen=True)
class InputSpec:
    """One model input: name (None for the single unnamed float32 input), dtype and
    per-sample shape (a batch is ``(N, *shape)``)."""

    name: str | None
    dtype: np.dtype
    shape: tuple[int, ...]

    @property
    def label(self) -> str:
        return "the input" if self.name is None else f"input {self.name!r}"

    def describe(self) -> str:
        dims = ", ".join(map(str, (-1, *self.shape))) + ("," if not self.shape else "")
        article = "an" if str(self.dtype)[0] in "aeiou" else "a"
        return f"{article} {self.dtype} array of shape ({dims})"

    def to_yaml(self) -> dict[str, Any]:
        data = {"shape": list(self.shape), "dtype": str(self.dtype)}
        return data if self.name is None else {"name": self.name, **data}

    def accepts(self, dtype: np.dtype) -> bool:
        if dtype == self.dtype:
            return True
        return (
            self.dtype.kind in "iu"
            and dtype.kind in "iu"
            and np.can_cast(dtype, self.dtype, "safe")
        )


def supported_dtype(dtype: np.dtype) -> bool:
    """float32, any integer dtype, or bool: what the flavor takes as a model input."""
    return dtype == FLOAT32 or dtype.kind in "iub"


def as_specs(inputs: Sequence[InputSpec] | Sequence[int]) -> tuple[InputSpec, ...]:
    """``inputs`` as specs: given as specs, or a per-sample shape of one float32 input."""
    items = list(inputs)
    if all(isinstance(i, InputSpec) for i in items) and items:
        return tuple(items)  # type: ignore[arg-type]
    return (InputSpec(None, FLOAT32, tuple(int(d) for d in items)),)  # a per-sample shape


def _read_inputs(data: dict[str, Any]) -> list[InputSpec]:
    if data["format_version"] == 1:  # one unnamed float32 input
        return [InputSpec(None, FLOAT32, tuple(int(d) for d in data["input"]["shape"]))]
    items = data["inputs"]
    if not isinstance(items, list) or not items:
        raise SaveLoadError(f"`inputs` must be a non-empty list, got {items!r}")
    specs = [
        InputSpec(str(d["name"]), np.dtype(d["dtype"]), tuple(int(x) for x in d["shape"]))
        for d in items
    ]
    names = [s.name for s in specs]
    if len(set(names)) != len(names) or not all(names):
        raise SaveLoadError(f"input names must be unique and non-empty, got {names}")
    bad = [str(s.dtype) for s in specs if not supported_dtype(s.dtype)]
    if bad:
        raise SaveLoadError(f"input dtypes must be float32, integer or bool, got {bad}")
    return specs


def read_sidecar(data_path: str | Path) -> dict[str, Any]:
    """Read and check ``inc_flow_model.yaml`` in a logged model's data directory.

    Returns ``factory``, ``inputs`` (:class:`InputSpec` list), ``input_shape`` (the first
    input's per-sample shape, as format 1 had it) and ``threads`` (None when the sidecar has
    none: torch's default). Reads formats 1 and 2.
    """
    path = Path(data_path) / SIDECAR_FILE
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise SaveLoadError(f"cannot read {str(path)!r}: {e}") from e
    if not isinstance(data, dict) or data.get("format_version") not in SIDECAR_VERSIONS:
        raise SaveLoadError(
            f"{str(path)!r} must be an inc_flow sidecar with format_version "
            + " or ".join(map(str, SIDECAR_VERSIONS))
        )
    try:
        inputs = _read_inputs(data)
        return {
            "factory": str(data["factory"]),
            "inputs": inputs,
            "input_shape": list(inputs[0].shape),
            "threads": _threads(data.get("threads")),
        }
    except (KeyError, TypeError, ValueError) as e:
        raise SaveLoadError(f"{str(path)!r} is malformed: {e!r}") from e


def example_batches(example_input: Any, q_model: QuantizedModel | None) -> list[np.ndarray]:
    """The first sample of each example input (a batch, or a tuple/list of batches);
    default the ``q_model``'s example inputs."""
    if example_input is None and q_model is not None:
        example_input = q_model.example_inputs
    items = list(example_input) if isinstance(example_input, tuple | list) else [example_input]
    if not items:
        raise SaveLoadError("`example_input` must hold at least one input, got none")
    arrays = []
    for i, item in enumerate(items):
        what = "`example_input`" if len(items) == 1 else f"`example_input` #{i}"
        if isinstance(item, torch.Tensor):
            item = item.detach().cpu().numpy()
        if not isinstance(item, np.ndarray) or not supported_dtype(item.dtype):
            raise SaveLoadError(
                f"{what} must be a batch (numpy or torch) of a model input: float32, integer "
                f"or bool, got {type(item).__name__}"
                + (f" of dtype {item.dtype}" if hasattr(item, "dtype") else "")
            )
        if item.ndim < 1 or not len(item):
            raise SaveLoadError(f"{what} must be a non-empty batch, got shape {item.shape}")
        arrays.append(item)
    sizes = [len(a) for a in arrays]
    if len(set(sizes)) > 1:
        raise SaveLoadError(f"the example inputs' batch sizes differ: {sizes}")
    return [np.ascontiguousarray(a[:1]).copy() for a in arrays]


def _forward_names(model: torch.nn.Module, n: int) -> list[str] | None:
    """The first ``n`` positional parameters of ``model.forward``, if there are ``n``."""
    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    names = []
    for p in params:
        if p.kind not in kinds:
            break
        names.append(p.name)
    names = names[:n]
    return names if len(names) == n and len(set(names)) == n else None


def input_specs(
    examples: list[np.ndarray],
    names: Sequence[str] | None,
    model: torch.nn.Module | None,
    factory: str,
) -> list[InputSpec]:
    """Unnamed for one float32 input; otherwise named ``names``, else after ``forward``."""
    n = len(examples)
    if n == 1 and examples[0].dtype == FLOAT32 and names is None:
        return [InputSpec(None, FLOAT32, examples[0].shape[1:])]
    if names is not None:
        names = [str(x) for x in names]
        if len(names) != n or len(set(names)) != n or not all(names):
            raise SaveLoadError(
                f"`input_names` must be {n} unique non-empty names, one per input, got {names}"
            )
    else:
        model = model if model is not None else build_model(factory)
        names = _forward_names(model, n) or [f"input_{i}" for i in range(n)]
    return [InputSpec(nm, a.dtype, a.shape[1:]) for nm, a in zip(names, examples, strict=True)]


def _threads(value: Any) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"`threads` must be a positive integer, got {value!r}")
    return value


def sidecar_data(factory: str, specs: list[InputSpec], threads: int | None) -> dict[str, Any]:
    """The sidecar's content: format 1 for one unnamed float32 input, else format 2.
    ``threads`` None (torch's default) is left out: a loader that predates it reads 1."""
    if len(specs) == 1 and specs[0].name is None:  # format 1, as before named inputs
        head: dict[str, Any] = {"format_version": 1, "factory": factory}
        head["input"] = specs[0].to_yaml()
    else:
        head = {"format_version": 2, "factory": factory}
        head["inputs"] = [s.to_yaml() for s in specs]
    threads_key = {} if threads is None else {"threads": int(threads)}
    return {**head, "output": {"type": "tensor"}, **threads_key}


def model_signature(specs: Sequence[InputSpec], output: np.ndarray) -> ModelSignature:
    """The MLflow signature: one tensor spec per input, and the output batch's."""
    return ModelSignature(
        inputs=Schema([TensorSpec(s.dtype, (-1, *s.shape), s.name) for s in specs]),
        outputs=Schema([TensorSpec(output.dtype, (-1, *output.shape[1:]))]),
    )
