"""FX graph mode (``framework: pytorch_fx``, the default): list a model's quantizable ops,
prepare (observers or fake-quant), calibrate, convert per plan.

A model FX cannot trace as a whole has its traceable sub-modules traced and quantized one by
one (INC 1.11+ behaviour); its untraceable quantizable leaves go through the eager wrappers
of :mod:`inc_flow.quant.eager`. :func:`prepare` and :func:`convert` are also the entry
points of eager mode (``framework: pytorch``), which they hand to that module. Another
quantization flow (PT2E, IPEX) would be a sibling of this module.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from inc_flow.errors import QuantizationError
from inc_flow.quant import eager
from inc_flow.quant.ao import (
    convert_fx,
    eager_prepare,
    eager_prepare_qat,
    prepare_fx,
    prepare_qat_fx,
    quiet,
    set_backend,
)
from inc_flow.quant.eager import replace_module
from inc_flow.quant.mapping import plan_to_mapping, quantizable_types
from inc_flow.quant.output import keep_fp32, supported
from inc_flow.search.plan import Plan
from inc_flow.vocab import Approach, Framework

# --- tracing and op listing ---------------------------------------------------------------


def _try_trace(module: nn.Module) -> str | None:
    """None if FX can trace ``module``, else the reason."""
    try:
        torch.fx.symbolic_trace(module)
    except Exception as e:  # noqa: BLE001 - any tracing failure means "not traceable"
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return None


def trace_targets(model: nn.Module) -> list[str]:
    """Module paths to quantize with FX: ``[""]`` when the whole model traces, else the
    largest traceable sub-modules (INC 1.11+ sub-module fallback).

    Raises:
        QuantizationError: nothing traceable holds a quantizable op; names the module and why.
    """
    reason = _try_trace(model)
    if reason is None:
        return [""]
    targets: list[str] = []
    failures: list[str] = [f"<root> ({type(model).__name__}): {reason}"]

    def visit(module: nn.Module, path: str) -> None:
        for name, child in module.named_children():
            child_path = f"{path}{name}"
            why = _try_trace(child)
            if why is None:
                targets.append(child_path)
            else:
                failures.append(f"{child_path} ({type(child).__name__}): {why}")
                visit(child, child_path + ".")

    visit(model, "")
    if not targets:
        raise QuantizationError(
            "FX cannot trace the model nor any of its sub-modules:\n  " + "\n  ".join(failures)
        )
    return targets


def list_ops(
    model: nn.Module,
    approach: Approach | str = Approach.STATIC,
    framework: Framework | str = Framework.FX,
) -> list[tuple[str, str]]:
    """The quantizable ops of ``model`` as (name, type) pairs, in execution order for FX.

    Raises:
        QuantizationError: the model has no quantizable op, or cannot be traced at all.
    """
    types = quantizable_types(approach)
    ops: list[tuple[str, str]] = []
    if framework == Framework.EAGER:
        ops = eager.list_ops(model, approach)
    else:
        for target in trace_targets(model):
            sub = model.get_submodule(target) if target else model
            prefix = f"{target}." if target else ""
            if target and isinstance(sub, types):
                ops.append((target, type(sub).__name__))
                continue
            graph = torch.fx.symbolic_trace(sub).graph
            seen: set[str] = set()
            for node in graph.nodes:
                if node.op == "call_module" and node.target not in seen:
                    mod = sub.get_submodule(node.target)
                    if isinstance(mod, types):
                        seen.add(node.target)
                        ops.append((prefix + node.target, type(mod).__name__))
    if not ops:
        kinds = ", ".join(t.__name__ for t in types)
        raise QuantizationError(
            f"model {type(model).__name__} has no quantizable op for {approach} "
            f"(looked for {kinds})"
        )
    return ops


# --- prepare / calibrate / convert ------------------------------------------------------


def example_args(example_inputs: Any) -> tuple:
    """``example_inputs`` as the positional arguments of one forward call."""
    return example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)


def prepare(model: nn.Module, plan: Plan, example_inputs: Any) -> nn.Module:
    """A copy of ``model`` with observers (or fake-quant for QAT) placed as ``plan`` says."""
    set_backend(plan.backend)
    model = copy.deepcopy(model)
    training = plan.approach == Approach.QAT
    model.train(training)
    if not training:
        _drop_dropout(model)
    with quiet():
        if plan.framework == Framework.EAGER:
            return eager.prepare(model, plan)
        targets = trace_targets(model)
        if targets == [""]:
            fn = prepare_qat_fx if training else prepare_fx
            return fn(model, plan_to_mapping(plan), example_args(example_inputs))
        for target in targets:
            sub = model.get_submodule(target)
            if not any(op.name.startswith(target + ".") or op.name == target for op in plan.ops):
                continue
            if isinstance(sub, quantizable_types(plan.approach)):
                wrapped = eager.wrap_one(sub, plan.op(target), plan)
                replace_module(model, target, wrapped)
                continue
            fn = prepare_qat_fx if training else prepare_fx
            replace_module(model, target, fn(sub, plan_to_mapping(plan, target + "."), ()))
        if plan.approach != Approach.DYNAMIC:
            fn = eager_prepare_qat if training else eager_prepare
            model = fn(model, inplace=True)
        return model


_DROPOUT_TYPES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


def _drop_dropout(model: nn.Module) -> None:
    """Replace dropout modules by identities: a no-op in eval mode, but int8 kernels have no
    Dropout2d, so leaving it would cost a dequantize/quantize pair around it."""
    for name, mod in list(model.named_modules()):
        if name and isinstance(mod, _DROPOUT_TYPES):
            replace_module(model, name, nn.Identity())


def convert(prepared: nn.Module, plan: Plan) -> nn.Module:
    """Convert a copy of a prepared (calibrated) model to int8 under ``plan``'s fallbacks
    (and its fp32 output, :mod:`inc_flow.quant.output`)."""
    if plan.fp32_output and (plan.framework == Framework.EAGER or not supported(prepared)):
        raise QuantizationError(
            "plan output fp32 needs a model that FX traces as a whole (framework "
            f"pytorch_fx), got framework {plan.framework!r} on {type(prepared).__name__}"
        )
    set_backend(plan.backend)
    model = copy.deepcopy(prepared)
    with quiet():
        if plan.framework == Framework.EAGER:
            return _inference(eager.convert(model, plan))
        if isinstance(model, torch.fx.GraphModule):
            mapping = plan_to_mapping(plan)
            if plan.fp32_output:
                mapping = keep_fp32(mapping, model, plan.approach)
            out = convert_fx(model, qconfig_mapping=mapping)
        else:
            for name, sub in list(model.named_modules()):
                if isinstance(sub, torch.fx.GraphModule) and _is_prepared(sub):
                    replace_module(
                        model,
                        name,
                        convert_fx(sub, qconfig_mapping=plan_to_mapping(plan, name + ".")),
                    )
            eager.convert_wrapped(model, plan)
            out = model
    return _inference(out)


def _inference(model: nn.Module) -> nn.Module:
    """The converted model is for inference: eval mode, and its fp32 parts (fallbacks, an fp32
    output) hold no grad-tracking parameters, so outputs never require grad (``.numpy()``
    works on them as on int8 outputs)."""
    for param in model.parameters():
        param.requires_grad_(False)
    return model.eval()


def _is_prepared(module: torch.fx.GraphModule) -> bool:
    return any(
        "activation_post_process" in n or "_observer" in n for n, _ in module.named_modules()
    )


def calibrate(
    prepared: nn.Module,
    batches: Iterable[Any],
    sampling_size: int,
    run: Callable[[nn.Module, Any], Any],
) -> int:
    """Feed up to ``sampling_size`` samples through ``prepared``; returns samples seen."""
    seen = 0
    with torch.no_grad(), quiet():
        for batch in batches:
            seen += run(prepared, batch)
            if seen >= sampling_size:
                break
    return seen
