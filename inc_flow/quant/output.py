"""A plan's fp32 output (``Plan.fp32_output``): the ops after the last quantizable ops stay
fp32 when a prepared FX graph is converted.

``tail`` walks a prepared ``GraphModule`` back from its output node, through observers and
every op that is not a quantizable module, and stops at the quantizable modules (``fc``). What
it passes (``log_softmax``, a ``Softmax`` module, the observer in front of them) is the tail.
``keep_fp32`` sets each tail op's qconfig to ``None`` in a convert mapping: ``convert_fx``
then drops their observers, so nothing requantizes the last op's output. A quantizable op
that is int8 still emits int8 (its own output observer is part of its pattern): with it in
fp32 as well, the model's outputs are fp32 values, off the int8 grid.

Calibration is not touched: a plan shares its calibration with the same plan with an int8
output (``Plan.calibration_key``). Only a model traced by FX as a whole has a tail to keep:
the sub-module and eager paths convert as usual (``supported``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from inc_flow.quant.mapping import quantizable_types
from inc_flow.vocab import Approach

SCOPE_ATTRS = "_observed_graph_module_attrs"  # torch.ao's prepared-model metadata key


def supported(model: Any) -> bool:
    """Whether ``model`` (a prepared model) is one FX graph, whose tail can be kept fp32."""
    return isinstance(model, torch.fx.GraphModule)


def _is_observer(module: nn.Module | None) -> bool:
    name = type(module).__name__
    return module is not None and ("Observer" in name or "FakeQuantize" in name)


def tail(model: torch.fx.GraphModule, approach: Approach | str) -> list[tuple[str, Any, Any]]:
    """The tail of a prepared graph as ``(kind, key, node)``: ``("module", name)`` for a
    module that is not quantizable, ``("function", target)`` for a function (``node`` for its
    order). Methods (``x.view``) are followed through but not listed."""
    modules = dict(model.named_modules())
    types = quantizable_types(approach)
    output = next(n for n in model.graph.nodes if n.op == "output")
    found: list[tuple[str, Any, Any]] = []
    todo, seen = list(output.all_input_nodes), set()
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        if node.op == "call_module":
            module = modules.get(str(node.target))
            if isinstance(module, types):
                continue  # a last quantizable op: the walk stops here
            if not _is_observer(module):
                found.append(("module", str(node.target), node))
        elif node.op == "call_function":
            found.append(("function", node.target, node))
        elif node.op != "call_method":
            continue  # placeholders, constants
        todo.extend(node.all_input_nodes)
    return found


def keep_fp32(mapping: Any, model: torch.fx.GraphModule, approach: Approach | str) -> Any:
    """``mapping`` (a convert ``QConfigMapping``) with every tail op of ``model`` fp32."""
    attrs = getattr(model, "meta", {}).get(SCOPE_ATTRS)
    scopes = getattr(attrs, "node_name_to_scope", {}) or {}
    order: dict[tuple[str, Any], int] = {}
    index: dict[Any, tuple[str, int]] = {}
    for node in model.graph.nodes:  # torch.ao counts a function's calls per module scope
        if node.op == "call_function":
            scope = scopes.get(node.name, ("", None))[0]
            index[node] = (scope, order.get((scope, node.target), 0))
            order[(scope, node.target)] = index[node][1] + 1
    for kind, key, node in tail(model, approach):
        if kind == "module":
            mapping.set_module_name(key, None)
        else:
            scope, i = index[node]
            mapping.set_module_name_object_type_order(scope, key, i, None)
    return mapping
