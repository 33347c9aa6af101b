"""What the served model refuses, and the scoring server's answers to malformed requests.

Three limits, each a key of the logged model's ``model_config`` (MLflow's way to configure a
model at load time; the defaults are written into ``MLmodel`` by ``log_model``):

- ``allow_non_finite`` (default false): a float input holding NaN or ±inf is refused with
  ``INVALID_PARAMETER_VALUE`` (HTTP 400), naming the input, the count and the first index.
- ``max_elements`` (default 2**24): a request whose inputs hold more numbers in total is
  refused the same way, before the model runs.
- ``max_request_bytes`` (default 64 MiB): inside ``mlflow models serve``, a body larger than
  this gets HTTP 413 before it is parsed (MLflow's server, uvicorn + FastAPI, has no body
  limit of its own; the body is still read into memory first, so a hard cap on what reaches
  the process belongs in a reverse proxy).

Override them when loading: ``mlflow.pyfunc.load_model(uri, model_config={...})``, or for
``mlflow models serve`` the environment variable ``MLFLOW_PYFUNC_INFERENCE_CONFIG`` (JSON).

Inside the scoring server (:func:`guard_scoring_server`, installed by the loader only when
``mlflow models serve`` loads the model), a body MLflow's parser fails on with an exception
it does not handle (JSON nested deeper than Python's recursion limit raises RecursionError,
which MLflow 3.x answers with 500) becomes ``INVALID_PARAMETER_VALUE``: HTTP 400.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from inc_flow.errors import IncFlowError, SaveLoadError

logger = logging.getLogger("inc_flow")

ALLOW_NON_FINITE, MAX_ELEMENTS, MAX_REQUEST_BYTES = (
    "allow_non_finite",
    "max_elements",
    "max_request_bytes",
)
DEFAULTS: dict[str, Any] = {
    ALLOW_NON_FINITE: False,
    MAX_ELEMENTS: 2**24,
    MAX_REQUEST_BYTES: 64 * 2**20,
}
# exceptions MLflow's request parsing lets escape on a malformed body (-> HTTP 500 there)
PARSE_ERRORS = (RecursionError, ValueError, TypeError, KeyError, IndexError, OverflowError)


class InvalidInputError(MlflowException, IncFlowError):
    """A prediction input has the wrong type, dtype or shape, holds NaN/inf, or is too large
    (HTTP 400 when served)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)


# the finite check's sum: float32 for float16 (whose own range overflows at 65504), else the
# array's dtype (None)
_ACCUMULATE = {np.dtype(np.float16): np.float32}


@dataclass(frozen=True)
class Limits:
    """The served model's input limits (see the module docstring)."""

    allow_non_finite: bool = DEFAULTS[ALLOW_NON_FINITE]
    max_elements: int = DEFAULTS[MAX_ELEMENTS]
    max_request_bytes: int = DEFAULTS[MAX_REQUEST_BYTES]

    @classmethod
    def from_config(cls, model_config: Mapping[str, Any] | None) -> Limits:
        """The limits a ``model_config`` sets (other keys are left to MLflow)."""
        config = {**DEFAULTS, **(model_config or {})}
        allow = config[ALLOW_NON_FINITE]
        if not isinstance(allow, bool):
            raise SaveLoadError(
                f"model_config `{ALLOW_NON_FINITE}` must be true or false, got {allow!r}"
            )
        sizes = {}
        for key in (MAX_ELEMENTS, MAX_REQUEST_BYTES):
            value = config[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SaveLoadError(
                    f"model_config `{key}` must be a positive integer, got {value!r}"
                )
            sizes[key] = value
        return cls(allow, sizes[MAX_ELEMENTS], sizes[MAX_REQUEST_BYTES])

    def check(
        self, tensors: Sequence[torch.Tensor], labels: Sequence[str], torch_sum: bool = True
    ) -> None:
        """Refuse inputs over ``max_elements`` in total, or holding NaN/inf (unless allowed).

        Args:
            tensors: the inputs as CPU tensors (``torch.from_numpy`` of the request's arrays:
                no copy), in the order of ``labels``.
            torch_sum: sum with torch (a torch model: the cheaper call, on the threads the
                model uses next), else with numpy (a model on other threads, e.g. OpenVINO's:
                from 32768 values on torch sums on its OpenMP threads, whose spinning then
                slowed OpenVINO's own; LeNet b64, 2 threads: 1.56 ms alone, 2.79 ms after
                torch's sum, 1.64 ms after numpy's).

        Raises:
            InvalidInputError: naming the input, what was found and the key that allows it.
        """
        total = 0
        for tensor in tensors:  # a loop, not sum(<generator>): a third of the cost
            total += tensor.numel()
        if total > self.max_elements:
            raise InvalidInputError(
                f"the request holds {total} input values, more than the {self.max_elements} "
                f"the model takes at once (model_config `{MAX_ELEMENTS}`); send smaller "
                "batches"
            )
        if self.allow_non_finite:
            return
        for tensor, label in zip(tensors, labels, strict=True):
            if not tensor.is_floating_point():
                continue
            # A finite sum means no NaN/inf (either makes it NaN or inf; a sum that overflows
            # only takes the exact check below): one read, no temporary. numpy's needs
            # `np.errstate` (overflow and inf + -inf would warn); torch's warns nothing.
            if torch_sum:
                summed = float(tensor.sum())
            else:
                array = tensor.numpy()
                with np.errstate(all="ignore"):
                    summed = np.add.reduce(array, axis=None, dtype=_ACCUMULATE.get(array.dtype))
            if math.isfinite(summed):
                continue
            array = tensor.numpy()  # the rare path: name the first bad value
            bad = ~np.isfinite(array)
            if not bad.any():
                continue
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise InvalidInputError(
                f"{label} holds {int(bad.sum())} NaN or infinite value(s), the first at "
                f"index {first} (value {array[first]}); the model's outputs for them mean "
                f"nothing. To pass them through anyway, set model_config "
                f"`{ALLOW_NON_FINITE}` to true (e.g. MLFLOW_PYFUNC_INFERENCE_CONFIG='{{\""
                f"{ALLOW_NON_FINITE}\": true}}')"
            )


def guard_scoring_server(limits: Limits) -> None:
    """Wrap ``mlflow.pyfunc.scoring_server.invocations`` (this process's scoring server):
    a body over ``limits.max_request_bytes`` gets 413 before parsing, and an exception
    MLflow's parser lets escape (:data:`PARSE_ERRORS`) becomes an ``INVALID_PARAMETER_VALUE``
    (400), not a 500. Installed again, the new limits replace the old ones."""
    from mlflow.pyfunc import scoring_server

    current = scoring_server.invocations
    original = getattr(current, "__wrapped__", current)

    @functools.wraps(original)
    def invocations(data: Any, content_type: Any, model: Any, input_schema: Any) -> Any:
        size = len(data) if isinstance(data, bytes | str) else 0
        if size > limits.max_request_bytes:
            message = (
                f"the request body is {size} bytes, more than the {limits.max_request_bytes} "
                f"this model accepts (model_config `{MAX_REQUEST_BYTES}`); send smaller batches"
            )
            body = json.dumps({"error_code": "REQUEST_LIMIT_EXCEEDED", "message": message})
            return scoring_server.InvocationsResponse(body, 413, "application/json")
        try:
            return original(data, content_type, model, input_schema)
        except MlflowException:
            raise
        except PARSE_ERRORS as e:
            what = "nested too deeply" if isinstance(e, RecursionError) else "malformed"
            raise MlflowException(
                f"the request body is {what} to be read as model input: {type(e).__name__}: "
                f"{str(e)[:200]}",
                error_code=INVALID_PARAMETER_VALUE,
            ) from e

    scoring_server.invocations = invocations
    logger.debug("scoring server guarded: %s", limits)
