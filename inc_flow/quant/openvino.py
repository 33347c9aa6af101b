"""The OpenVINO runtime: a plan built as an OpenVINO int8 model with NNCF, run by OpenVINO.

``ov.convert_model`` turns the fp32 torch model into an OpenVINO model once (its example input
from the calibration data); each plan is then ``nncf.quantize`` on that model with the
calibration data. The plan's fp32 ops become NNCF's ``IgnoredScope``: the converter names
every node of a module ``__module.<module path>/...``, so an fp32 op that is a module
(``layer1.0.conv1``) maps to the pattern of its nodes. The plan's global observer settings
map to NNCF's quantization parameters (see :func:`nncf_parameters`); what NNCF cannot honour
is refused with a ``QuantizationError`` naming it, never ignored.

:class:`OpenVinoModel` is what the search evaluates, times and ships: an ``nn.Module`` whose
``forward`` runs the compiled model on CPU with torch's current intra-op thread count (one
compilation per count, kept), taking and returning torch tensors. ``save_ir``/``load_ir``
write and read the IR (``model.xml`` + ``model.bin``: data, no pickle).

``openvino`` and ``nncf`` (the ``[openvino]`` extra) are imported here only, on first use.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import tempfile
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from inc_flow.data.batches import split_batch
from inc_flow.errors import DataError, QuantizationError
from inc_flow.search.plan import Plan
from inc_flow.vocab import Approach, Runtime

IR_XML, IR_BIN = "model.xml", "model.bin"
IR_FILES = (IR_XML, IR_BIN)
EXTRA = "pip install 'inc_flow[openvino]'"
_MODULE_NODE = "__module.{}/"  # how ov.convert_model names the nodes of a module
# fp32 parts run in fp32 (CPUs with bf16 units would otherwise run them in bf16)
_EXACT = {"INFERENCE_PRECISION_HINT": "f32"}


def modules() -> tuple[Any, Any]:
    """``(openvino, nncf)``, or a QuantizationError naming the extra to install."""
    try:
        import nncf
        import openvino  # first: without it, importing nncf is seconds spent for nothing
    except ImportError as e:
        raise QuantizationError(
            f"runtime {Runtime.OPENVINO.value!r} needs OpenVINO and NNCF: {EXTRA} ({e})"
        ) from e
    return openvino, nncf


def _numpy(inputs: Any) -> list[np.ndarray]:
    items = inputs if isinstance(inputs, tuple | list) else (inputs,)
    if not all(isinstance(t, torch.Tensor) for t in items):
        kinds = [type(t).__name__ for t in items]
        raise DataError(f"the openvino runtime takes tensor inputs, got {kinds}")
    return [t.detach().cpu().numpy() for t in items]


def pip_pin() -> str:
    """``openvino==<installed version>``: what a logged OpenVINO model needs to load."""
    import importlib.metadata

    return f"openvino=={importlib.metadata.version('openvino')}"


class OpenVinoModel(nn.Module):
    """An OpenVINO model run on CPU behind ``nn.Module``'s call: torch tensors in and out.

    Args:
        ov_model: the ``openvino.Model`` (int8 or fp32).
        plan: the plan it was built from (None: loaded without one).
    """

    def __init__(self, ov_model: Any, plan: Plan | None = None) -> None:
        super().__init__()
        self.ov_model = ov_model
        self.plan = plan
        self._compiled: dict[int, Any] = {}

    def compiled(self, threads: int) -> Any:
        """The model compiled for CPU with ``threads`` inference threads (kept per count)."""
        if threads not in self._compiled:
            ov, _ = modules()
            self._compiled[threads] = ov.Core().compile_model(
                self.ov_model, "CPU", {"INFERENCE_NUM_THREADS": int(threads), **_EXACT}
            )
        return self._compiled[threads]

    def forward(self, *inputs: torch.Tensor) -> Any:
        result = self.compiled(torch.get_num_threads())(_numpy(inputs))
        outs = [torch.from_numpy(np.array(result[i])) for i in range(len(result))]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def save_ir(self, directory: Path) -> None:
        """``model.xml`` + ``model.bin`` in ``directory`` (weights kept as they are)."""
        ov, _ = modules()
        ov.save_model(self.ov_model, str(directory / IR_XML), compress_to_fp16=False)

    def size(self) -> int:
        """Bytes of the IR (xml + bin)."""
        with tempfile.TemporaryDirectory(prefix="inc_flow_ov_") as tmp:
            self.save_ir(Path(tmp))
            return sum((Path(tmp) / f).stat().st_size for f in IR_FILES)


def load_ir(directory: str | Path, plan: Plan | None = None) -> OpenVinoModel:
    """The IR saved in ``directory`` as an :class:`OpenVinoModel`."""
    ov, _ = modules()
    return OpenVinoModel(ov.Core().read_model(str(Path(directory) / IR_XML)), plan)


def nncf_parameters(plan: Plan) -> dict[str, Any]:
    """``nncf.quantize`` keyword arguments honouring ``plan``'s observer settings.

    Mapped: activation and weight scheme (sym/asym), weight granularity (per_channel is
    NNCF's default, per_tensor is asked for), the minmax activation observer (NNCF's MINMAX
    range estimator), the plan's ``bias_correction`` (``fast``: NNCF's default
    FastBiasCorrection; ``full``: ``fast_bias_correction=False``, BiasCorrection; ``off``:
    ``disable_bias_correction``). Refused: ``kl`` (NNCF has no histogram observer), int8 ops
    holding settings of their own (NNCF applies one setting to the whole model), approaches
    other than static post-training quantization.
    """
    _, nncf = modules()
    from nncf.common.quantization.structs import QuantizationScheme
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        QuantizationParameters,
    )
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    if plan.approach != Approach.STATIC:
        raise QuantizationError(
            f"runtime 'openvino' builds static post-training plans only, got "
            f"approach={plan.approach!r}"
        )
    if plan.fp32_output:
        raise QuantizationError(
            "runtime 'openvino' does not map `output: fp32` (NNCF places its own quantizers; "
            "OpenVINO's outputs are already fp32): drop it from the plan"
        )
    int8 = [op for op in plan.ops if op.quantized]
    keys = {op.observer_key for op in int8}
    if len(keys) > 1:
        raise QuantizationError(
            "runtime 'openvino' applies one observer setting to every int8 op (NNCF has no "
            f"per-op settings), got {len(keys)}: {sorted(keys)}"
        )
    ref = int8[0]
    if ref.act_algorithm != "minmax":
        raise QuantizationError(
            "runtime 'openvino' takes act_algorithm 'minmax' only (NNCF has no KL observer), "
            f"got act_algorithm={ref.act_algorithm!r}"
        )
    scheme = {"sym": QuantizationScheme.SYMMETRIC, "asym": QuantizationScheme.ASYMMETRIC}
    advanced = AdvancedQuantizationParameters(
        activations_quantization_params=QuantizationParameters(mode=scheme[ref.act_scheme]),
        weights_quantization_params=QuantizationParameters(
            mode=scheme[ref.weight_scheme], per_channel=ref.weight_granularity == "per_channel"
        ),
        activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX,
        disable_bias_correction=plan.bias_correction == "off",
    )
    preset = nncf.QuantizationPreset.PERFORMANCE
    if ref.act_scheme == "asym":
        preset = nncf.QuantizationPreset.MIXED
    return {
        "preset": preset,
        "advanced_parameters": advanced,
        "fast_bias_correction": plan.bias_correction != "full",
    }


_WEIGHTED = {"Convolution", "GroupConvolution", "MatMul"}  # what an fp32 op's weights feed


def _norms_after(fp32_model: nn.Module) -> dict[str, str]:
    """Module name -> the BatchNorm module that alone consumes its output (torch.fx trace;
    empty when the model does not trace): ``ov.convert_model`` folds such a BatchNorm into
    the conv before it and gives the conv a generated name (``Multiply_123``), the
    BatchNorm's ``Add`` keeping its module's."""
    try:
        graph = torch.fx.symbolic_trace(fp32_model).graph
    except Exception:  # noqa: BLE001 -- untraceable: module names are all there is
        return {}
    mods = dict(fp32_model.named_modules())
    norms = {}
    for node in graph.nodes:
        if node.op == "call_module" and len(node.users) == 1:
            (user,) = node.users
            norm = mods.get(str(user.target)) if user.op == "call_module" else None
            if isinstance(norm, nn.modules.batchnorm._BatchNorm):
                norms[str(node.target)] = str(user.target)
    return norms


def ignored_scope(fp32_model: nn.Module, ov_ops: Iterable[Any], plan: Plan) -> dict[str, list]:
    """NNCF ``IgnoredScope`` arguments (``patterns``, ``names``) keeping ``plan``'s fp32 ops
    in fp32, given the converted model's ordered ops: an op the converter named after its
    module (``__module.<name>/...``) by a pattern; a conv whose BatchNorm the converter folded
    into it (renamed) by the exact name of the node feeding that BatchNorm's nodes; a
    QuantizationError for an op with neither (e.g. a functional ``add``: its converted nodes
    carry no FX name)."""
    modules_ = dict(fp32_model.named_modules())
    ops = list(ov_ops)
    names = [op.get_friendly_name() for op in ops]
    scope: dict[str, list] = {"patterns": [], "names": []}
    norms: dict[str, str] | None = None  # traced on the first op that needs it
    for name in plan.fp32_ops:
        prefix = _MODULE_NODE.format(name)
        if name in modules_ and any(n.startswith(prefix) for n in names):
            scope["patterns"].append("^" + re.escape(prefix) + ".*")
            continue
        if norms is None:
            norms = _norms_after(fp32_model)
        norm = norms.get(name) if name in modules_ else None
        fed = _fed_node(ops, norm) if norm else None
        if fed is None:
            raise QuantizationError(
                f"runtime 'openvino' cannot keep op {name!r} in fp32: only module ops map to "
                "OpenVINO nodes (a functional op's converted nodes carry no FX name)"
            )
        scope["names"].append(fed)
    return scope


def _fed_node(ops: list[Any], norm: str) -> str | None:
    """The name of the weighted node feeding the first node of BatchNorm module ``norm``."""
    prefix = _MODULE_NODE.format(norm)
    for op in ops:
        if op.get_friendly_name().startswith(prefix):
            for value in op.input_values():
                source = value.get_node()
                if source.get_type_name() in _WEIGHTED:
                    return source.get_friendly_name()
            return None
    return None


class OpenVinoEngine:
    """Builds :class:`OpenVinoModel` s of plans whose runtime is ``openvino``.

    Args:
        model: the fp32 model (not modified).
        example_inputs: a batch of inputs: the converter's example (dynamic shapes).
        calib_loader: calibration batches.
        sampling_size: calibration samples (NNCF's ``subset_size``).
    """

    def __init__(
        self,
        model: nn.Module,
        example_inputs: Any,
        calib_loader: Iterable[Any] | None,
        sampling_size: int,
    ) -> None:
        self.fp32_model = model
        self.example_inputs = example_inputs
        self.calib_loader = calib_loader
        self.sampling_size = sampling_size
        self.calibration_passes = 0
        self.calibration_seconds = 0.0
        self._fp32: Any = None

    def fp32_ov(self) -> Any:
        """The fp32 model converted to OpenVINO (once)."""
        if self._fp32 is None:
            ov, _ = modules()
            example = self.example_inputs
            with torch.no_grad(), warnings.catch_warnings():
                # the converter traces with torch.jit, which torch marks deprecated
                warnings.filterwarnings("ignore", "`torch.jit", FutureWarning)
                self._fp32 = ov.convert_model(
                    self.fp32_model,
                    example_input=tuple(example) if isinstance(example, list) else example,
                )
        return self._fp32

    def _calibration_batches(self) -> list[list[np.ndarray]]:
        """Whole batches up to ``sampling_size`` samples, as FX calibration reads them."""
        batches, seen = [], 0
        for batch in self.calib_loader or ():
            arrays = _numpy(split_batch(batch)[0])
            batches.append(arrays)
            seen += len(arrays[0])
            if seen >= self.sampling_size:
                break
        return batches

    def build(self, plan: Plan) -> OpenVinoModel:
        """The OpenVINO model of ``plan``; with no int8 op, fp32 compiled by OpenVINO."""
        if plan.runtime != Runtime.OPENVINO:
            raise QuantizationError(f"OpenVinoEngine builds openvino plans, got {plan.runtime!r}")
        base = self.fp32_ov()
        if not plan.int8_ops:
            return OpenVinoModel(base, plan)
        _, nncf = modules()
        params = nncf_parameters(plan)
        scope = ignored_scope(self.fp32_model, base.get_ordered_ops(), plan)
        ignored = nncf.IgnoredScope(**scope, validate=True)
        if self.calib_loader is None:
            raise DataError("runtime 'openvino' needs a calibration dataloader")
        batches = self._calibration_batches()
        if not batches:
            raise DataError("the calibration dataloader yielded no batch")
        start = time.perf_counter()
        nncf.set_log_level(logging.ERROR)
        # NNCF draws progress bars (rich) on stdout: kept out of the tuner's log
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            quantized = nncf.quantize(
                base,
                nncf.Dataset(batches),
                subset_size=len(batches),
                ignored_scope=ignored,
                **params,
            )
        self.calibration_passes += 1
        self.calibration_seconds += time.perf_counter() - start
        return OpenVinoModel(quantized, plan)


def plan_statistics(plan: Plan) -> list[dict[str, Any]]:
    """Mixed Precision Statistics rows of an OpenVINO model, by the plan's ops (NNCF may
    quantize ops torch's plan does not list, e.g. pooling: those are not counted)."""
    counts: dict[str, list[int]] = {}
    for op in plan.ops:
        counts.setdefault(op.op_type, [0, 0])[0 if op.quantized else 1] += 1
    return [{"Op Type": t, "Total": a + b, "INT8": a, "FP32": b} for t, (a, b) in counts.items()]
