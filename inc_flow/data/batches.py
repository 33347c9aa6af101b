"""The batch conventions of the tuner: split a batch into (inputs, label), call the model.

``split_batch`` reads INC's ``(inputs, label)`` batches, bare tensors and dicts;
``call_model`` passes inputs positionally or by keyword; ``first_input`` gives the example
inputs for tracing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from torch import Tensor

from inc_flow.errors import DataError


def describe(obj: Any, depth: int = 0) -> str:
    """A short structural description of a batch, e.g. ``list[str, int, Tensor[2x3]]``."""
    if isinstance(obj, (Tensor, np.ndarray)):
        kind = "Tensor" if isinstance(obj, Tensor) else "ndarray"
        return f"{kind}[{'x'.join(str(d) for d in obj.shape)}]"
    if depth > 3:
        return "..."
    if isinstance(obj, Mapping):
        items = [f"{k!r}: {describe(v, depth + 1)}" for k, v in list(obj.items())[:8]]
        return (
            type(obj).__name__ + "{" + ", ".join(items) + (", ..." if len(obj) > 8 else "") + "}"
        )
    if isinstance(obj, (list, tuple)):
        items = [describe(v, depth + 1) for v in obj[:8]]
        more = f", ... ({len(obj)} items)" if len(obj) > 8 else ""
        return f"{type(obj).__name__}[{', '.join(items)}{more}]"
    return type(obj).__name__


def _valid_inputs(inputs: Any) -> bool:
    if isinstance(inputs, Tensor):
        return True
    if isinstance(inputs, (list, tuple)):
        return len(inputs) > 0 and all(isinstance(x, Tensor) for x in inputs)
    if isinstance(inputs, Mapping):
        return len(inputs) > 0 and all(isinstance(k, str) for k in inputs)
    return False


def split_batch(batch: Any) -> tuple[Any, Any]:
    """Split a batch into ``(inputs, label)``.

    Rules, first match wins:

    * a Tensor -> ``(tensor, None)``;
    * a dict with a ``"label"`` or ``"labels"`` key -> that value is the label and the other
      items are keyword inputs; any other dict -> keyword inputs, label ``None``;
    * a tuple/list of two -> ``(inputs, label)`` (INC's convention), where inputs is a
      tensor, a tuple/list of tensors (positional inputs) or a dict (keyword inputs);
    * a tuple/list of one -> ``(element, None)`` (e.g. a ``TensorDataset`` without labels).

    Note a label-less two-input batch ``[x1, x2]`` reads as ``(x1, label=x2)``, as in INC.

    Raises:
        DataError: anything else; the message shows the batch structure.
    """
    inputs, label = batch, None
    if isinstance(batch, Mapping):
        key = next((k for k in ("label", "labels") if k in batch), None)
        if key is not None:
            inputs = {k: v for k, v in batch.items() if k != key}
            label = batch[key]
    elif isinstance(batch, (list, tuple)) and len(batch) in (1, 2):
        inputs, label = (batch[0], batch[1]) if len(batch) == 2 else (batch[0], None)
    if not _valid_inputs(inputs):
        raise DataError(
            "cannot split the batch into (inputs, label); expected a Tensor, (inputs, label) "
            f"or a dict of tensors; batch structure: {describe(batch)}"
        )
    return inputs, label


def call_model(model: Callable[..., Any], inputs: Any) -> Any:
    """Run ``model`` on inputs from ``split_batch``: tensor, ``*tuple`` or ``**dict``."""
    if isinstance(inputs, Tensor):
        return model(inputs)
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (list, tuple)):
        return model(*inputs)
    raise DataError(f"model inputs must be a Tensor, tuple or dict, got {describe(inputs)}")


def first_input(loader: Any) -> tuple[Any, ...]:
    """Positional example inputs for tracing, from the loader's first batch.

    A tensor -> ``(tensor,)``; a tuple/list -> a tuple; a dict -> its values in order.
    """
    try:
        batch = next(iter(loader))
    except StopIteration:
        raise DataError(f"the dataloader yields no batches: {loader!r}") from None
    inputs, _ = split_batch(batch)
    if isinstance(inputs, Tensor):
        return (inputs,)
    if isinstance(inputs, Mapping):
        return tuple(inputs.values())
    return tuple(inputs)
