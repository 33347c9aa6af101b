"""What MLflow calls on the logged model: ``Int8PyfuncModel.predict``, its input conversion
and checks, kept cheap per call.

Loaded by :func:`inc_flow.model.pyfunc._load_pyfunc`. A request is checked (dtype, shape,
size, NaN/inf: :mod:`inc_flow.model.serving`) and run under ``torch.inference_mode``. The
fixed cost per call is kept small (``benchmarks/bench_pyfunc_overhead.py``): a float32
ndarray of the right shape is taken as it is, and its tensor shares its memory; the finite
check reads the batch once (torch's sum of the tensor); the quantized engine and the thread
count are set only when they differ from what is in force, and the usual call enters no
context but ``inference_mode``; torch.ao's warnings are silenced on the first call only
(they come once per process, and ``warnings.catch_warnings`` costs tens of microseconds and
is not thread-safe); and ``predict``'s signature, which MLflow reads on every call, is an
attribute of the instance's ``predict``. What is left, and MLflow's own cost around it:
``benchmarks/pyfunc_overhead.md``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from inc_flow.errors import IncFlowError
from inc_flow.model.serving import InvalidInputError, Limits
from inc_flow.model.signature import FLOAT32, InputSpec, as_specs, supported_dtype
from inc_flow.model.threads import check_threads, intra_op_threads
from inc_flow.quant.ao import quiet, set_backend
from inc_flow.quant.openvino import OpenVinoModel


class Int8PyfuncModel:
    """What ``_load_pyfunc`` returns: the int8 model behind MLflow's ``predict``.

    Args:
        model: the int8 ``nn.Module``.
        inputs: the model's :class:`InputSpec` list, in ``forward`` order; or a per-sample
            shape, for one unnamed float32 input (a batch is ``(N, *input_shape)``).
        threads: intra-op threads during ``predict`` (restored afterwards); None: torch's
            default, the count is left alone (:mod:`inc_flow.model.threads`).
        backend: the quantized engine the model was built for.
        limits: NaN/inf and size limits on the inputs (:mod:`inc_flow.model.serving`).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        inputs: Sequence[InputSpec] | Sequence[int],
        threads: int | None,
        backend: str,
        limits: Limits | None = None,
    ) -> None:
        self.model = model.eval()
        self.inputs = as_specs(inputs)
        self.threads = check_threads(threads, "`threads`")
        self.backend = backend
        self.limits = limits or Limits()
        self._labels = [s.label for s in self.inputs]
        self._warm = False  # set after the first predict (which runs under `quiet()`)
        # the finite check sums on the threads the model runs on (serving.Limits.check)
        self._torch_sum = not isinstance(model, OpenVinoModel)
        # one unnamed float32 input: an ndarray of it needs no conversion (`_arrays`)
        plain = self.inputs[0] if len(self.inputs) == 1 else None
        self._plain = plain if plain and plain.name is None and plain.dtype == FLOAT32 else None
        # MLflow's PyFuncModel.predict calls inspect.signature(model_impl.predict) on every
        # call (to see whether it takes `params`). On a bound method that builds a new
        # Signature each time (~25 us, 60 between forwards, even with `__signature__` on the
        # function); on this instance attribute, which carries its signature, it is a lookup.
        self.predict = functools.partial(type(self).predict, self)
        self.predict.__signature__ = _PREDICT_SIGNATURE

    def get_raw_model(self) -> torch.nn.Module:
        """The int8 ``nn.Module`` (MLflow's ``PyFuncModel.get_raw_model()``)."""
        return self.model

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The first input's per-sample shape (the only one of a single-input model)."""
        return self.inputs[0].shape

    @property
    def expected(self) -> str:
        if len(self.inputs) == 1 and self.inputs[0].name is None:
            return self.inputs[0].describe().partition(" ")[2]  # "float32 array of ..."
        specs = ", ".join(f"{s.name!r}: {s.describe()}" for s in self.inputs)
        return f"dict of {specs} (the same N for all)"

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> np.ndarray:
        """The int8 model's outputs for a batch.

        One unnamed float32 input: an ndarray, DataFrame or nested list. Named inputs: a dict
        name -> ndarray or nested list (a single input may also come bare), or with several
        inputs a list/tuple of them in ``forward`` order.

        Raises:
            InvalidInputError: (an ``MlflowException`` with ``INVALID_PARAMETER_VALUE``) when
                an input is missing, unknown, not numeric, of the wrong dtype or not
                ``(N, *shape)``, when the inputs' batch sizes differ, when a float input
                holds NaN or ±inf (unless ``model_config`` ``allow_non_finite``), or when
                the inputs hold more than ``max_elements`` values. The message names the
                input and what was expected.
        """
        del params  # the model takes none; accepted because MLflow passes them
        tensors = [torch.from_numpy(a) for a in self._arrays(model_input)]  # no copy
        self.limits.check(tensors, self._labels, self._torch_sum)
        if torch.backends.quantized.engine != self.backend:  # set once, or if changed since
            set_backend(self.backend)
        if self._warm and self.threads is None:  # the usual call: inference_mode only
            with torch.inference_mode():
                out = self.model(*tensors)
        else:
            out = self._forward(tensors)
        if not isinstance(out, torch.Tensor):
            raise IncFlowError(f"the int8 model returned {type(out).__name__}, not a tensor")
        return (out.dequantize() if out.is_quantized else out).numpy()

    def _forward(self, tensors: list[torch.Tensor]) -> Any:
        """The forward with the thread count set for it (:mod:`inc_flow.model.threads`), and
        on the first call torch.ao's warnings silenced (they come once per process, when its
        int8 kernels first run)."""
        with contextlib.ExitStack() as stack:
            if not self._warm:
                stack.enter_context(quiet())
            stack.enter_context(torch.inference_mode())
            stack.enter_context(intra_op_threads(self.threads))  # None: changes nothing
            out = self.model(*tensors)
        self._warm = True
        return out

    def _fail(self, spec: InputSpec | None, problem: str) -> InvalidInputError:
        if spec is None or spec.name is None:
            return InvalidInputError(f"expected a {self.expected}; {problem}")
        return InvalidInputError(
            f"{spec.label}: expected {spec.describe()}; {problem} (the model takes a "
            f"{self.expected})"
        )

    def _arrays(self, model_input: Any) -> list[np.ndarray]:
        plain = self._plain
        if (  # the common request, taken as it is: what the checks below would return
            plain is not None
            and type(model_input) is np.ndarray
            and model_input.dtype == FLOAT32
            and model_input.ndim == len(plain.shape) + 1
            and model_input.shape[1:] == plain.shape
            and len(model_input)
            and model_input.flags.c_contiguous
            and model_input.flags.writeable
        ):
            return [model_input]
        specs = self.inputs
        names = [s.name for s in specs]
        if isinstance(model_input, Mapping) and names[0] is not None:
            unknown = [k for k in model_input if k not in names]
            if unknown:
                raise self._fail(None, f"got unknown input(s) {unknown}")
            missing = [n for n in names if n not in model_input]
            if missing:
                raise self._fail(None, f"input(s) {missing} missing")
            arrays = [self._array(model_input[s.name], s) for s in specs]
        elif len(specs) == 1:
            arrays = [self._array(model_input, specs[0], frame=True)]
        elif isinstance(model_input, list | tuple):
            if len(model_input) != len(specs):
                raise self._fail(
                    None,
                    f"got a {type(model_input).__name__} of {len(model_input)} items, not "
                    f"the {len(specs)} inputs {names} in order",
                )
            arrays = [self._array(v, s) for v, s in zip(model_input, specs, strict=True)]
        else:
            raise self._fail(None, f"got {type(model_input).__name__}")
        sizes = {s.name: len(a) for s, a in zip(specs, arrays, strict=True)}
        if len(set(sizes.values())) > 1:
            raise self._fail(None, f"the inputs' batch sizes differ: {sizes}")
        return arrays

    def _array(self, value: Any, spec: InputSpec, frame: bool = False) -> np.ndarray:
        """One input as a C-contiguous, writable ndarray of ``spec.dtype`` (torch wants
        writable memory), or InvalidInputError naming it."""
        numeric = spec.dtype if spec.dtype == FLOAT32 else None  # lists of floats: float32
        if frame and isinstance(value, pd.DataFrame):
            try:
                arr = value.to_numpy(dtype=numeric)
            except (ValueError, TypeError) as e:
                raise self._fail(spec, "got non-numeric columns") from e
            if not supported_dtype(arr.dtype):
                raise self._fail(spec, f"got columns of dtype {arr.dtype}")
            if arr.shape[1] != math.prod(spec.shape):
                raise self._fail(
                    spec,
                    f"got a DataFrame with {arr.shape[1]} columns, not {math.prod(spec.shape)}",
                )
            arr = arr.reshape(-1, *spec.shape)
        elif isinstance(value, list | tuple):
            try:
                arr = np.asarray(value, dtype=numeric)
            except (ValueError, TypeError, RecursionError) as e:
                why = str(e).partition(". ")[2][:120] or str(e)[:120]
                raise self._fail(spec, f"got non-numeric or ragged data ({why})") from e
            if arr.dtype.kind not in "iufb":
                raise self._fail(spec, "got non-numeric data")
        elif isinstance(value, np.ndarray):
            arr = value
        else:
            raise self._fail(spec, f"got {type(value).__name__}")
        if not spec.accepts(arr.dtype):
            lossless = f" (integer dtypes that convert to {spec.dtype} without loss are taken)"
            hint = lossless if spec.dtype.kind in "iu" else ""
            raise self._fail(spec, f"got dtype {arr.dtype}{hint}")
        if arr.ndim != len(spec.shape) + 1 or arr.shape[1:] != spec.shape or not len(arr):
            raise self._fail(spec, f"got shape {tuple(arr.shape)}")
        return np.require(arr.astype(spec.dtype, copy=False), spec.dtype, ["C", "W"])


# `predict`'s signature as seen on an instance, without `self` (see `__init__`)
_signature = inspect.signature(Int8PyfuncModel.predict)
_PREDICT_SIGNATURE = _signature.replace(parameters=list(_signature.parameters.values())[1:])
