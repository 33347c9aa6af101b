"""The one module that talks to ``torch.ao.quantization``.

Everything inc_flow does to a model goes through here: list its quantizable ops, turn a
:class:`~inc_flow.search.plan.Plan` into a ``QConfigMapping``, calibrate once per observer setting,
convert per plan, rebuild a saved int8 model, count ops. Another engine (PT2E, IPEX) would
be a sibling of this module.

FX graph mode (``framework: pytorch_fx``) is the default. A model FX cannot trace as a whole
has its traceable sub-modules traced and quantized one by one (INC 1.11+ behaviour). Eager
mode (``framework: pytorch``) wraps each quantizable leaf in ``QuantStub``/``DeQuantStub``
itself, so the user edits nothing.
"""

from __future__ import annotations

import contextlib
import copy
import io
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from inc_flow.errors import QuantizationError
from inc_flow.search.plan import OpPlan, Plan

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
WARNING_FILTERS: tuple[tuple[str, type[Warning]], ...] = (
    (_TORCH_AO_DEPRECATION, DeprecationWarning),
    (_REDUCE_RANGE, UserWarning),
    (_QTENSOR_DEPRECATION, UserWarning),
)

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=_TORCH_AO_DEPRECATION, category=DeprecationWarning)
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

STATIC = "post_training_static_quant"
DYNAMIC = "post_training_dynamic_quant"
QAT = "quant_aware_training"

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
_EAGER_UNSUPPORTED = (nn.ConvTranspose1d, nn.ConvTranspose3d)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the known torch.ao warnings (each matched by its exact message)."""
    with warnings.catch_warnings():
        for message, category in WARNING_FILTERS:
            warnings.filterwarnings("ignore", message=message, category=category)
        warnings.filterwarnings("ignore", message=_UNCALIBRATED, category=UserWarning)
        warnings.filterwarnings("ignore", message=_TYPED_STORAGE, category=UserWarning)
        yield


def set_engine(backend: str) -> None:
    """Select the int8 kernel library (``x86``, ``onednn``, ``fbgemm``)."""
    if backend not in torch.backends.quantized.supported_engines:
        raise QuantizationError(
            f"`quantization.backend` {backend!r} is not supported by this torch build; "
            f"supported: {torch.backends.quantized.supported_engines}"
        )
    torch.backends.quantized.engine = backend


# --- plan -> QConfigMapping (pure translation) ------------------------------------------


def _act_range(backend: str) -> tuple[int, int]:
    # x86 and fbgemm reduce activations to 7 bits to avoid VPMADDUBSW saturation; onednn
    # uses all 8 (torch's defaults, made explicit).
    return (0, 127) if backend in ("x86", "fbgemm") else (0, 255)


def qconfig_for(op: OpPlan, backend: str, approach: str) -> QConfig | None:
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

    if approach == DYNAMIC:
        w_obs = PerChannelMinMaxObserver if per_channel else MinMaxObserver
        act = PlaceholderObserver.with_args(
            dtype=torch.quint8, quant_min=0, quant_max=255, is_dynamic=True
        )
        return QConfig(activation=act, weight=w_obs.with_args(**w_args))

    qmin, qmax = _act_range(backend)
    a_qscheme = torch.per_tensor_affine if op.act_scheme == "asym" else torch.per_tensor_symmetric
    a_args = dict(dtype=torch.quint8, qscheme=a_qscheme, quant_min=qmin, quant_max=qmax)
    if approach == QAT:
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
    int8 op's setting, so fallbacks of single modules do not also drop the ops around them.
    Fixed-qparams ops (sigmoid, tanh, softmax) keep torch's backend defaults.

    Args:
        plan: the plan.
        prefix: only ops under this module path (``"encoder."``), names made relative to it.
    """
    with quiet():
        if plan.approach == DYNAMIC:
            mapping = QConfigMapping()
        elif plan.approach == QAT:
            mapping = get_default_qat_qconfig_mapping(plan.backend)
        else:
            mapping = get_default_qconfig_mapping(plan.backend)
    ops = [op for op in plan.ops if op.name.startswith(prefix)]
    # convert_fx requires the same global qconfig as prepare_fx, so it comes from the
    # calibration plan (every op int8), not from this plan's fallbacks.
    first = next((op for op in plan.ops if op.quantized), plan.ops[0] if plan.ops else None)
    if plan.approach == DYNAMIC or first is None:
        mapping.set_global(None)
    else:
        mapping.set_global(qconfig_for(replace(first, dtype="int8"), plan.backend, plan.approach))
    for op in ops:
        mapping.set_module_name(
            op.name[len(prefix) :], qconfig_for(op, plan.backend, plan.approach)
        )
    return mapping


# --- tracing and op listing ---------------------------------------------------------------


def _quantizable_types(approach: str) -> tuple[type[nn.Module], ...]:
    return DYNAMIC_TYPES if approach == DYNAMIC else STATIC_TYPES


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
    model: nn.Module, approach: str = STATIC, framework: str = "pytorch_fx"
) -> list[tuple[str, str]]:
    """The quantizable ops of ``model`` as (name, type) pairs, in execution order for FX.

    Raises:
        QuantizationError: the model has no quantizable op, or cannot be traced at all.
    """
    types = _quantizable_types(approach)
    ops: list[tuple[str, str]] = []
    if framework == "pytorch":
        for name, mod in model.named_modules():
            if isinstance(mod, types) and not isinstance(mod, _EAGER_UNSUPPORTED):
                ops.append((name, type(mod).__name__))
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


def _example(example_inputs: Any) -> tuple:
    return example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)


def _replace(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, attr = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, attr, new)


def prepare(model: nn.Module, plan: Plan, example_inputs: Any) -> nn.Module:
    """A copy of ``model`` with observers (or fake-quant for QAT) placed as ``plan`` says."""
    set_engine(plan.backend)
    model = copy.deepcopy(model)
    training = plan.approach == QAT
    model.train(training)
    if not training:
        _drop_dropout(model)
    with quiet():
        if plan.framework == "pytorch":
            return _eager_prepare(model, plan)
        targets = trace_targets(model)
        if targets == [""]:
            fn = prepare_qat_fx if training else prepare_fx
            return fn(model, plan_to_mapping(plan), _example(example_inputs))
        for target in targets:
            sub = model.get_submodule(target)
            if not any(op.name.startswith(target + ".") or op.name == target for op in plan.ops):
                continue
            if isinstance(sub, _quantizable_types(plan.approach)):
                wrapped = _eager_wrap_one(sub, plan.op(target), plan)
                _replace(model, target, wrapped)
                continue
            fn = prepare_qat_fx if training else prepare_fx
            _replace(model, target, fn(sub, plan_to_mapping(plan, target + "."), ()))
        if plan.approach != DYNAMIC:
            fn = eager_prepare_qat if training else eager_prepare
            model = fn(model, inplace=True)
        return model


_DROPOUT_TYPES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


def _drop_dropout(model: nn.Module) -> None:
    """Replace dropout modules by identities: a no-op in eval mode, but int8 kernels have no
    Dropout2d, so leaving it would cost a dequantize/quantize pair around it."""
    for name, mod in list(model.named_modules()):
        if name and isinstance(mod, _DROPOUT_TYPES):
            _replace(model, name, nn.Identity())


def convert(prepared: nn.Module, plan: Plan) -> nn.Module:
    """Convert a copy of a prepared (calibrated) model to int8 under ``plan``'s fallbacks."""
    set_engine(plan.backend)
    model = copy.deepcopy(prepared)
    with quiet():
        if plan.framework == "pytorch":
            return _eager_convert(model, plan)
        if isinstance(model, torch.fx.GraphModule):
            out = convert_fx(model, qconfig_mapping=plan_to_mapping(plan))
        else:
            for name, sub in list(model.named_modules()):
                if isinstance(sub, torch.fx.GraphModule) and _is_prepared(sub):
                    _replace(
                        model,
                        name,
                        convert_fx(sub, qconfig_mapping=plan_to_mapping(plan, name + ".")),
                    )
            _convert_wrapped(model, plan)
            out = model
    return out.eval()


def _is_prepared(module: torch.fx.GraphModule) -> bool:
    return any(
        "activation_post_process" in n or "_observer" in n for n, _ in module.named_modules()
    )


# Eager-mode wrapping: a quantizable leaf becomes QuantStub -> op -> DeQuantStub.
class _Wrapped(nn.Module):
    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.quant = QuantStub()
        self.module = module
        self.dequant = DeQuantStub()

    def forward(self, *args: Any) -> Any:
        return self.dequant(self.module(self.quant(*args)))


def _eager_wrap_one(module: nn.Module, op: OpPlan, plan: Plan) -> nn.Module:
    if plan.approach == DYNAMIC:
        module.qconfig = qconfig_for(op, plan.backend, plan.approach)
        return module
    wrapped = _Wrapped(module)
    wrapped.qconfig = qconfig_for(op, plan.backend, plan.approach)
    return wrapped


def _eager_prepare(model: nn.Module, plan: Plan) -> nn.Module:
    model.qconfig = None
    for op in plan.ops:
        _replace(model, op.name, _eager_wrap_one(model.get_submodule(op.name), op, plan))
    if plan.approach == DYNAMIC:
        return model
    fn = eager_prepare_qat if plan.approach == QAT else eager_prepare
    return fn(model, inplace=True)


def _wrapped_path(name: str, plan: Plan) -> str:
    return name if plan.approach == DYNAMIC else f"{name}.module"


def _convert_wrapped(model: nn.Module, plan: Plan) -> None:
    """Convert the ops that sit in eager wrappers (eager mode, or untraceable-parent leaves)."""
    for op in plan.ops:
        try:
            holder = model.get_submodule(op.name)
        except AttributeError:
            continue
        if not isinstance(holder, _Wrapped) and plan.approach != DYNAMIC:
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
            _replace(model, op.name, inner)
    if plan.approach == DYNAMIC:
        spec = {
            op.name: qconfig_for(op, plan.backend, plan.approach)
            for op in plan.ops
            if op.quantized
        }
        eager_quantize_dynamic(model, qconfig_spec=spec, inplace=True)
    else:
        eager_convert(model, inplace=True)


def _eager_convert(model: nn.Module, plan: Plan) -> nn.Module:
    _convert_wrapped(model, plan)
    return model


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


def rebuild(
    fp32_model: nn.Module, plan: Plan, state_dict: dict[str, Any], example_inputs: Any
) -> nn.Module:
    """The int8 model of ``plan`` from its saved state dict, with no calibration data.

    Takes the same path as tuning did: prepare with the plan's calibration mapping, convert
    with the plan's own mapping, then load the int8 state dict.
    """
    prepared = prepare(fp32_model, plan.calibration_plan(), example_inputs)
    if plan.approach != DYNAMIC:
        # Observers that never ran produce degenerate qparams; one pass of zeros gives them
        # finite values so convert succeeds. load_state_dict overwrites them all.
        with torch.no_grad(), quiet():
            try:
                prepared(*_example(example_inputs))
            except Exception:  # noqa: BLE001 - shape-less models still convert below
                pass
    model = convert(prepared.eval() if plan.approach == QAT else prepared, plan)
    state_dict = packed_state_dict(state_dict)
    with quiet():
        expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        raise QuantizationError(
            "the weights do not match the plan's int8 model: "
            f"missing keys {missing[:8]}, unexpected keys {unexpected[:8]}"
        )
    wrong = [
        f"{k}: saved {_shape(state_dict[k])}, model {_shape(v)}"
        for k, v in expected.items()
        if _shape(state_dict[k]) != _shape(v)
    ]
    if wrong:
        raise QuantizationError(
            "the weights do not match the plan's int8 model: " + "; ".join(wrong[:8])
        )
    with quiet():
        model.load_state_dict(state_dict)
    return model.eval()


# Dynamic int8 RNNs (nn.LSTM / nn.GRU) keep each layer's weights in a TorchScript
# CellParamsBase object, which torch.load(weights_only=True) refuses. On disk each one becomes
# plain entries under its key: ``<key>.w_ih`` / ``.w_hh`` (int8 tensors), ``.b_ih`` /
# ``.b_hh`` and ``.reduce_range``; loading packs them back with torch's own operators.
_CELL_PARTS = ("w_ih", "w_hh", "b_ih", "b_hh", "reduce_range")


def _like(state: dict[str, Any]) -> dict[str, Any]:
    """An empty state dict carrying ``state``'s ``_metadata`` (the modules' format versions,
    which quantized modules need to read their entries)."""
    out: dict[str, Any] = OrderedDict()
    metadata = getattr(state, "_metadata", None)
    if metadata is not None:
        out._metadata = metadata  # type: ignore[attr-defined]
    return out


def plain_state_dict(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` with every dynamic-RNN cell-params object unpacked into plain tensors."""
    out = _like(state)
    for key, value in state.items():
        if not isinstance(value, torch.ScriptObject) or not key.endswith(".param"):
            out[key] = value
            continue
        (kind, tensors, _doubles, longs, packed), _cls = value.__getstate__()
        if kind != "quantized_dynamic" or len(packed) != 2 or len(tensors) != 2:
            raise QuantizationError(f"cannot save {key}: unsupported RNN cell params {kind!r}")
        # torch packs each weight with its bias (b_ih, b_hh), as in ao.nn.quantized.dynamic.LSTM
        w_ih, _ = torch.ops.quantized.linear_unpack(packed[0])
        w_hh, _ = torch.ops.quantized.linear_unpack(packed[1])
        parts = (w_ih, w_hh, tensors[0], tensors[1], torch.tensor(bool(longs[0])))
        out.update({f"{key}.{name}": v for name, v in zip(_CELL_PARTS, parts, strict=True)})
    return out


def packed_state_dict(state: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`plain_state_dict`: cell-params objects rebuilt from tensors."""
    out = _like(state)
    cells: dict[str, dict[str, Any]] = {}
    for key, value in state.items():
        base, _, name = key.rpartition(".")
        if name in _CELL_PARTS and base.endswith(".param"):
            cells.setdefault(base, {})[name] = value
        else:
            out[key] = value
    for base, parts in cells.items():
        if set(parts) != set(_CELL_PARTS):
            out.update({f"{base}.{n}": v for n, v in parts.items()})  # reported as unexpected
            continue
        out[base] = torch.ops.quantized.make_quantized_cell_params_dynamic(
            torch.ops.quantized.linear_prepack(parts["w_ih"], parts["b_ih"]),
            torch.ops.quantized.linear_prepack(parts["w_hh"], parts["b_hh"]),
            parts["b_ih"],
            parts["b_hh"],
            bool(parts["reduce_range"]),
        )
    return out


def _shape(value: Any) -> Any:
    """Shape of a state-dict entry; packed params are (weight, bias) tuples."""
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    if isinstance(value, tuple | list):
        return tuple(_shape(v) for v in value)
    return None


# --- statistics ---------------------------------------------------------------------------


def _is_int8_module(module: nn.Module) -> bool:
    return type(module).__module__.startswith(
        ("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized")
    )


def op_statistics(model: nn.Module, approach: str = STATIC) -> list[dict[str, Any]]:
    """INC's Mixed Precision Statistics rows: op type, Total, INT8, FP32."""
    counts: dict[str, list[int]] = {}

    def add(op_type: str, int8: bool) -> None:
        row = counts.setdefault(op_type, [0, 0])
        row[0 if int8 else 1] += 1

    fp32_types = _quantizable_types(approach)
    for _name, mod in model.named_modules():
        if isinstance(mod, torch.fx.GraphModule):
            for node in mod.graph.nodes:
                if node.op == "call_function":
                    target = str(node.target)
                    fname = getattr(node.target, "__name__", target)
                    if fname in ("quantize_per_tensor", "quantize_per_channel"):
                        add(fname, True)
                    elif target.startswith("quantized."):
                        add(target.split(".")[1], True)
                elif node.op == "call_method" and node.target == "dequantize":
                    add("dequantize", True)
        elif isinstance(mod, Quantize):
            add("quantize_per_tensor", True)
        elif isinstance(mod, DeQuantize):
            add("dequantize", True)
        elif _is_int8_module(mod) and not type(mod).__name__.endswith("PackedParams"):
            add(type(mod).__name__, True)
        elif isinstance(mod, fp32_types):
            add(type(mod).__name__, False)
    return [
        {"Op Type": k, "Total": v[0] + v[1], "INT8": v[0], "FP32": v[1]} for k, v in counts.items()
    ]


def model_size(model: nn.Module) -> int:
    """Serialized state-dict size in bytes."""
    buf = io.BytesIO()
    with quiet():
        torch.save(model.state_dict(), buf)
    return buf.tell()
