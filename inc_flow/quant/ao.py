"""torch's int8 runtime as inc_flow uses it: the ``torch.ao.quantization`` names, imported
once under the deprecation filter, :func:`quiet` for torch.ao's known warnings, and
:func:`set_backend` for the int8 kernel library.

The rest of :mod:`inc_flow.quant` imports torch.ao names from here, so the warning filters
(each an exact message) live in this one place.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch

from inc_flow.errors import QuantizationError
from inc_flow.vocab import Backend

# torch 2.14 marks all of torch.ao.quantization deprecated (its successor, torchao's PT2E
# flow, has no x86/onednn int8 kernels for eager CPU inference here). Filter exactly that.
_TORCH_AO_DEPRECATION = r"torch\.ao\.quantization is deprecated and will be removed"
# Emitted by observers built with reduce_range; we set quant_min/quant_max ourselves, but
# torch's own default qconfigs (fixed-qparams ops) still pass reduce_range.
_REDUCE_RANGE = r"Please use quant_min and quant_max to specify the range for observers"
# Quantized modules create quantized tensors when they are built and run.
_QTENSOR_DEPRECATION = r"torch\.quantize_per_tensor, torch\.quantize_per_channel and other"
# Reading quantized tensors back with torch.load goes through TypedStorage.
_TYPED_STORAGE = r"TypedStorage is deprecated"
# Rebuilding from a state dict converts observers that never saw data; the values are
# overwritten by load_state_dict right after.
_UNCALIBRATED = r"must run observer before calling calculate_qparams"
# convert_fx builds reference LSTM/GRU modules with torch.tensor(tensor) on their qparams
# (torch 2.14, reference/modules/rnn.py): twice per dynamic RNN convert. Only from there.
_COPY_CONSTRUCT = r"To copy construct from a tensor, it is recommended to use"
_COPY_CONSTRUCT_MODULE = r"torch\.ao\.nn\.quantized\.reference\.modules\.rnn"
WARNING_FILTERS: tuple[tuple[str, type[Warning]], ...] = (
    (_TORCH_AO_DEPRECATION, DeprecationWarning),
    (_REDUCE_RANGE, UserWarning),
    (_QTENSOR_DEPRECATION, UserWarning),
)

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=_TORCH_AO_DEPRECATION, category=DeprecationWarning)
    import torch.ao.nn.intrinsic.quantized  # noqa: F401 - the fused int8 subclasses (ConvReLU2d)
    import torch.ao.nn.intrinsic.quantized.dynamic  # noqa: F401 - and LinearReLU (dynamic)
    import torch.ao.nn.quantized as nnq
    import torch.ao.nn.quantized.dynamic as nnqd
    from torch.ao.nn.quantized import DeQuantize, Quantize
    from torch.ao.quantization import (
        DeQuantStub,
        FakeQuantize,
        HistogramObserver,
        MinMaxObserver,
        MovingAverageMinMaxObserver,
        MovingAveragePerChannelMinMaxObserver,
        PerChannelMinMaxObserver,
        PlaceholderObserver,
        QConfig,
        QConfigMapping,
        QuantStub,
        get_default_qat_qconfig_mapping,
        get_default_qconfig_mapping,
    )
    from torch.ao.quantization import convert as eager_convert
    from torch.ao.quantization import prepare as eager_prepare
    from torch.ao.quantization import prepare_qat as eager_prepare_qat
    from torch.ao.quantization import quantize_dynamic as eager_quantize_dynamic
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx, prepare_qat_fx

# The int8 modules that compute (weights x activations), fused variants being subclasses;
# what a plan op becomes when it is int8. Not QuantStub glue, dropout or QFunctional.
INT8_COMPUTE_TYPES: tuple[type[torch.nn.Module], ...] = (
    nnq.Conv1d, nnq.Conv2d, nnq.Conv3d, nnq.ConvTranspose1d, nnq.ConvTranspose2d,
    nnq.ConvTranspose3d, nnq.Linear, nnqd.LSTM, nnqd.GRU, nnqd.LSTMCell, nnqd.GRUCell,
    nnqd.RNNCell,
)  # fmt: skip

__all__ = [
    "INT8_COMPUTE_TYPES",
    "WARNING_FILTERS",
    "DeQuantStub",
    "DeQuantize",
    "FakeQuantize",
    "HistogramObserver",
    "MinMaxObserver",
    "MovingAverageMinMaxObserver",
    "MovingAveragePerChannelMinMaxObserver",
    "PerChannelMinMaxObserver",
    "PlaceholderObserver",
    "QConfig",
    "QConfigMapping",
    "QuantStub",
    "Quantize",
    "convert_fx",
    "eager_convert",
    "eager_prepare",
    "eager_prepare_qat",
    "eager_quantize_dynamic",
    "get_default_qat_qconfig_mapping",
    "get_default_qconfig_mapping",
    "prepare_fx",
    "prepare_qat_fx",
    "quiet",
    "set_backend",
]


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the known torch.ao warnings (each matched by its exact message)."""
    with warnings.catch_warnings():
        for message, category in WARNING_FILTERS:
            warnings.filterwarnings("ignore", message=message, category=category)
        warnings.filterwarnings("ignore", message=_UNCALIBRATED, category=UserWarning)
        warnings.filterwarnings("ignore", message=_TYPED_STORAGE, category=UserWarning)
        warnings.filterwarnings(
            "ignore", message=_COPY_CONSTRUCT, category=UserWarning, module=_COPY_CONSTRUCT_MODULE
        )
        yield


def set_backend(backend: Backend | str) -> None:
    """Select the int8 kernel library (``torch.backends.quantized.engine``): a
    :class:`~inc_flow.vocab.Backend` (``x86``, ``onednn``, ``fbgemm``).

    Raises:
        QuantizationError: this torch build has no such kernel library.
    """
    name = str(backend)
    if name not in torch.backends.quantized.supported_engines:
        raise QuantizationError(
            f"`quantization.backend` {name!r} is not supported by this torch build; "
            f"supported: {torch.backends.quantized.supported_engines}"
        )
    torch.backends.quantized.engine = name
