"""Eager mode (``framework: pytorch``) and the dynamic path: each quantizable leaf is wrapped
in ``QuantStub``/``DeQuantStub`` by inc_flow itself, so the user edits nothing; dynamic int8
swaps modules with ``quantize_dynamic``.

FX graph mode (:mod:`inc_flow.quant.graph`) also uses these wrappers for the leaves of a
model it cannot trace whole. Functions here work in place on a copy the caller made.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from inc_flow.quant.ao import (
    DeQuantStub,
    QuantStub,
    eager_convert,
    eager_prepare,
    eager_prepare_qat,
    eager_quantize_dynamic,
)
from inc_flow.quant.mapping import EAGER_UNSUPPORTED, qconfig_for, quantizable_types
from inc_flow.search.plan import OpPlan, Plan
from inc_flow.vocab import Approach


def replace_module(model: nn.Module, path: str, new: nn.Module) -> None:
    """Put ``new`` at module path ``path`` of ``model`` (in place)."""
    parent_path, _, attr = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, attr, new)


def list_ops(model: nn.Module, approach: Approach | str) -> list[tuple[str, str]]:
    """The ops eager mode can quantize, as (name, type) pairs in module order."""
    types = quantizable_types(approach)
    return [
        (name, type(mod).__name__)
        for name, mod in model.named_modules()
        if isinstance(mod, types) and not isinstance(mod, EAGER_UNSUPPORTED)
    ]


# A quantizable leaf becomes QuantStub -> op -> DeQuantStub.
class _Wrapped(nn.Module):
    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.quant = QuantStub()
        self.module = module
        self.dequant = DeQuantStub()

    def forward(self, *args: Any) -> Any:
        return self.dequant(self.module(self.quant(*args)))


def wrap_one(module: nn.Module, op: OpPlan, plan: Plan) -> nn.Module:
    """``module`` with ``op``'s qconfig, wrapped in stubs (static, QAT) or bare (dynamic)."""
    if plan.approach == Approach.DYNAMIC:
        module.qconfig = qconfig_for(op, plan.backend, plan.approach)
        return module
    wrapped = _Wrapped(module)
    wrapped.qconfig = qconfig_for(op, plan.backend, plan.approach)
    return wrapped


def prepare(model: nn.Module, plan: Plan) -> nn.Module:
    """Wrap every op of ``plan`` and place observers (fake-quant for QAT), in place."""
    model.qconfig = None
    for op in plan.ops:
        replace_module(model, op.name, wrap_one(model.get_submodule(op.name), op, plan))
    if plan.approach == Approach.DYNAMIC:
        return model
    fn = eager_prepare_qat if plan.approach == Approach.QAT else eager_prepare
    return fn(model, inplace=True)


def convert_wrapped(model: nn.Module, plan: Plan) -> None:
    """Convert the ops that sit in eager wrappers (eager mode, or untraceable-parent leaves)."""
    for op in plan.ops:
        try:
            holder = model.get_submodule(op.name)
        except AttributeError:
            continue
        if not isinstance(holder, _Wrapped) and plan.approach != Approach.DYNAMIC:
            continue
        if op.quantized:
            continue
        # Fallback: drop the observers so convert leaves this op fp32.
        for sub in holder.modules():
            sub.qconfig = None
            if hasattr(sub, "activation_post_process"):
                del sub.activation_post_process
        if isinstance(holder, _Wrapped):
            inner = holder.module
            if hasattr(inner, "to_float"):  # QAT modules fold back to float
                inner = inner.to_float()
            replace_module(model, op.name, inner)
    if plan.approach == Approach.DYNAMIC:
        spec = {
            op.name: qconfig_for(op, plan.backend, plan.approach)
            for op in plan.ops
            if op.quantized
        }
        eager_quantize_dynamic(model, qconfig_spec=spec, inplace=True)
    else:
        eager_convert(model, inplace=True)


def convert(model: nn.Module, plan: Plan) -> nn.Module:
    """The int8 model of a prepared eager-mode ``model`` under ``plan``'s fallbacks, in place."""
    convert_wrapped(model, plan)
    return model
