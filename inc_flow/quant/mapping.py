"""Plan -> torch qconfigs, as pure functions: one op's ``QConfig``, a whole plan's
``QConfigMapping``, and which module types an approach quantizes."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from inc_flow.quant.ao import (
    FakeQuantize,
    HistogramObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    PerChannelMinMaxObserver,
    PlaceholderObserver,
    QConfig,
    QConfigMapping,
    get_default_qat_qconfig_mapping,
    get_default_qconfig_mapping,
    quiet,
)
from inc_flow.search.plan import OpPlan, Plan
from inc_flow.vocab import Approach, Backend

STATIC_TYPES: tuple[type[nn.Module], ...] = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Linear,
)
DYNAMIC_TYPES: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.LSTM,
    nn.GRU,
    nn.LSTMCell,
    nn.GRUCell,
    nn.RNNCell,
)
# Eager mode has no int8 kernels for these (FX mode does).
EAGER_UNSUPPORTED: tuple[type[nn.Module], ...] = (nn.ConvTranspose1d, nn.ConvTranspose3d)


def quantizable_types(approach: Approach | str) -> tuple[type[nn.Module], ...]:
    """The module types ``approach`` turns into int8 (Linear and RNNs for dynamic)."""
    return DYNAMIC_TYPES if approach == Approach.DYNAMIC else STATIC_TYPES


def _act_range(backend: Backend | str) -> tuple[int, int]:
    # x86 and fbgemm reduce activations to 7 bits to avoid VPMADDUBSW saturation; onednn
    # uses all 8 (torch's defaults, made explicit).
    return (0, 127) if backend in (Backend.X86, Backend.FBGEMM) else (0, 255)


def qconfig_for(op: OpPlan, backend: Backend | str, approach: Approach | str) -> QConfig | None:
    """The torch QConfig of one op under a plan; ``None`` keeps it fp32."""
    if not op.quantized:
        return None
    per_channel = op.weight_granularity == "per_channel"
    w_sym = op.weight_scheme == "sym"
    if per_channel:
        w_qscheme = torch.per_channel_symmetric if w_sym else torch.per_channel_affine
    else:
        w_qscheme = torch.per_tensor_symmetric if w_sym else torch.per_tensor_affine
    w_args = dict(dtype=torch.qint8, qscheme=w_qscheme, quant_min=-128, quant_max=127)

    if approach == Approach.DYNAMIC:
        w_obs = PerChannelMinMaxObserver if per_channel else MinMaxObserver
        act = PlaceholderObserver.with_args(
            dtype=torch.quint8, quant_min=0, quant_max=255, is_dynamic=True
        )
        return QConfig(activation=act, weight=w_obs.with_args(**w_args))

    qmin, qmax = _act_range(backend)
    a_qscheme = torch.per_tensor_affine if op.act_scheme == "asym" else torch.per_tensor_symmetric
    a_args = dict(dtype=torch.quint8, qscheme=a_qscheme, quant_min=qmin, quant_max=qmax)
    if approach == Approach.QAT:
        a_obs = HistogramObserver if op.act_algorithm == "kl" else MovingAverageMinMaxObserver
        w_obs = (
            MovingAveragePerChannelMinMaxObserver if per_channel else MovingAverageMinMaxObserver
        )
        return QConfig(
            activation=FakeQuantize.with_args(observer=a_obs, **a_args),
            weight=FakeQuantize.with_args(observer=w_obs, **w_args),
        )
    a_obs = HistogramObserver if op.act_algorithm == "kl" else MinMaxObserver
    w_obs = PerChannelMinMaxObserver if per_channel else MinMaxObserver
    return QConfig(activation=a_obs.with_args(**a_args), weight=w_obs.with_args(**w_args))


def plan_to_mapping(plan: Plan, prefix: str = "") -> QConfigMapping:
    """Translate a plan into a ``QConfigMapping``.

    The global qconfig (for functional ops such as ``add`` that have no module) is the first
    op's setting (as int8), so fallbacks of single modules do not also drop the ops around them.
    Fixed-qparams ops (sigmoid, tanh, softmax) keep torch's backend defaults.

    Args:
        plan: the plan.
        prefix: only ops under this module path (``"encoder."``), names made relative to it.
    """
    with quiet():
        if plan.approach == Approach.DYNAMIC:
            mapping = QConfigMapping()
        elif plan.approach == Approach.QAT:
            mapping = get_default_qat_qconfig_mapping(plan.backend)
        else:
            mapping = get_default_qconfig_mapping(plan.backend)
    ops = [op for op in plan.ops if op.name.startswith(prefix)]
    # convert_fx requires the same global qconfig as prepare_fx, so it comes from the
    # calibration plan (every op int8), not from this plan's fallbacks: the first op's
    # settings, which canonical plans keep whatever its dtype (an fp32 op that follows the
    # globals carries the plan's global ones; ops may have their own).
    first = plan.ops[0] if plan.ops else None
    if plan.approach == Approach.DYNAMIC or first is None:
        mapping.set_global(None)
    else:
        mapping.set_global(qconfig_for(replace(first, dtype="int8"), plan.backend, plan.approach))
    for op in ops:
        mapping.set_module_name(
            op.name[len(prefix) :], qconfig_for(op, plan.backend, plan.approach)
        )
    return mapping
