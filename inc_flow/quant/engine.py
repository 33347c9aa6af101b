"""What the tuner drives to build models: ``FxEngine`` turns a plan into an int8 model.

It wraps :mod:`inc_flow.quant.graph` with the calibration cache (one calibration per distinct
observer setting, then one cheap convert per plan), and answers the tuner's questions about
a built model (op statistics, size) and about the plan (per-op sensitivity).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from inc_flow import bars
from inc_flow.data.batches import call_model, split_batch
from inc_flow.errors import DataError, QuantizationError
from inc_flow.quant import stats
from inc_flow.quant.ao import quiet
from inc_flow.quant.evaluate import batch_size_of
from inc_flow.quant.graph import calibrate, convert, list_ops, prepare, trace_targets
from inc_flow.quant.samples import first_tensor
from inc_flow.search.plan import Plan
from inc_flow.vocab import Approach, Framework

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger("inc_flow")


class FxEngine:
    """Builds int8 models for plans; calibrates once per :meth:`Plan.calibration_key`.

    Args:
        model: the fp32 model (not modified).
        example_inputs: one batch of inputs, for tracing and saving shapes.
        approach: static, dynamic or quant_aware_training (:class:`inc_flow.vocab.Approach`).
        framework: ``pytorch_fx`` or ``pytorch`` (eager).
        calib_loader: batches for calibration (static PTQ); ignored for dynamic and QAT.
        sampling_size: calibration samples.
        q_func: QAT training function ``q_func(prepared_model)``; required for QAT.
        cache_size: prepared models kept in memory.
    """

    def __init__(
        self,
        model: nn.Module,
        example_inputs: Any,
        approach: Approach | str = Approach.STATIC,
        framework: Framework | str = Framework.FX,
        calib_loader: Iterable[Any] | None = None,
        sampling_size: int = 100,
        q_func: Callable[[nn.Module], Any] | None = None,
        cache_size: int = 4,
    ) -> None:
        self.fp32_model = model.eval()
        self.example_inputs = example_inputs
        self.approach = approach
        self.framework = framework
        self.calib_loader = calib_loader
        self.sampling_size = sampling_size
        self.q_func = q_func
        self.calibration_passes = 0
        self.calibration_seconds = 0.0
        self.convert_seconds = 0.0
        self._cache: OrderedDict[tuple, nn.Module] = OrderedDict()
        self._cache_size = cache_size
        self._ops: list[tuple[str, str]] | None = None
        self._whole: bool | None = None

    # --- ops ---------------------------------------------------------------------------
    def ops(self) -> list[tuple[str, str]]:
        """Quantizable ops (name, type) for this engine's approach and framework."""
        if self._ops is None:
            self._ops = list_ops(self.fp32_model, self.approach, self.framework)
        return list(self._ops)

    @property
    def supports_fp32_output(self) -> bool:
        """Whether plans may keep the output fp32 (``Plan.fp32_output``): static or QAT FX
        on a model FX traces as a whole."""
        if self._whole is None:
            fx = self.framework != Framework.EAGER and self.approach != Approach.DYNAMIC
            self._whole = fx and trace_targets(self.fp32_model) == [""]
        return self._whole

    # --- build ---------------------------------------------------------------------------
    def prepared(self, plan: Plan) -> nn.Module:
        """The calibrated (or trained, for QAT) model for ``plan``'s observer setting."""
        key = plan.calibration_key()
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        start = time.perf_counter()
        prepared = prepare(self.fp32_model, plan.calibration_plan(), self.example_inputs)
        if plan.approach == Approach.STATIC:
            if self.calib_loader is None:
                raise DataError("static quantization needs a calibration dataloader")
            logger.info(
                "calibration %d: observers of %s, up to %d samples",
                self.calibration_passes + 1, plan.summary(), self.sampling_size,
            )  # fmt: skip
            data = bars.batches(self.calib_loader, "calibration")
            seen = calibrate(prepared, data, self.sampling_size, _run_batch)
            if seen == 0:
                raise DataError("the calibration dataloader yielded no batch")
            self.calibration_passes += 1
        elif plan.approach == Approach.QAT:
            if self.q_func is None:
                raise QuantizationError("quant_aware_training needs a training function q_func")
            with quiet():
                result = self.q_func(prepared)
            if isinstance(result, nn.Module):
                prepared = result
            prepared.eval()
            self.calibration_passes += 1
        self.calibration_seconds += time.perf_counter() - start
        self._cache[key] = prepared
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return prepared

    def build(self, plan: Plan) -> nn.Module:
        """The int8 model of ``plan``."""
        prepared = self.prepared(plan)
        start = time.perf_counter()
        model = convert(prepared, plan)
        self.convert_seconds += time.perf_counter() - start
        return model

    # --- facts about a model -----------------------------------------------------------
    def statistics(self, model: nn.Module) -> pd.DataFrame:
        """INC's Mixed Precision Statistics of a built model."""
        return stats.statistics_frame(stats.op_statistics(model, self.approach))

    def op_counts(self, model: nn.Module, plan: Plan | None = None) -> tuple[int, int]:
        """(int8 ops, fp32 ops) of a built model (``plan`` accepted for symmetry, unused)."""
        del plan
        return stats.op_counts(self.statistics(model))

    @staticmethod
    def model_size(model: nn.Module) -> int:
        """Serialized state-dict size of a built model, in bytes."""
        return stats.model_size(model)

    # --- sensitivity ---------------------------------------------------------------------
    def sensitivity(self, plan: Plan, batches: int = 1) -> dict[str, float]:
        """How much each int8 op hurts: output error of ``plan`` minus the error with only
        that op back in fp32 (leave-one-out), on the first calibration batch(es).

        Higher means falling that op back helps more. Costs one convert per int8 op and no
        extra calibration.
        """
        inputs = self._sample_inputs(batches)
        with torch.no_grad():
            ref = [call_model(self.fp32_model, x) for x in inputs]

            def error(model: nn.Module) -> float:
                total = 0.0
                for x, r in zip(inputs, ref, strict=True):
                    out = call_model(model, x)
                    total += _output_error(out, r)
                return total

            base = error(self.build(plan))
            scores = {}
            for name in plan.int8_ops:
                scores[name] = base - error(self.build(plan.with_fallback({name})))
        return scores

    def _sample_inputs(self, batches: int) -> list[Any]:
        out = []
        source = self.calib_loader if self.calib_loader is not None else [self.example_inputs]
        for batch in source:
            inputs, _ = split_batch(batch)
            out.append(inputs)
            if len(out) >= batches:
                break
        return out


def _run_batch(model: nn.Module, batch: Any) -> int:
    inputs, _ = split_batch(batch)
    call_model(model, inputs)
    return batch_size_of(inputs)


def _output_error(out: Any, ref: Any) -> float:
    a = first_tensor(out).float()
    b = first_tensor(ref).float()
    if a.is_quantized:
        a = a.dequantize()
    return float(torch.mean((a - b) ** 2) / (torch.mean(b**2) + 1e-12))
