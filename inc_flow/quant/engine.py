"""What the tuner drives: build an int8 model per plan, evaluate it, time it.

``FxEngine`` wraps :mod:`inc_flow.quant.graph` with the calibration cache (one calibration per
distinct observer setting, then one cheap convert per plan). ``Evaluator`` runs the metric
batch by batch and stops as soon as the accuracy target is out of reach. ``Benchmark``
times a model on a fixed batch with a fixed thread count.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from inc_flow.data.batches import call_model, split_batch
from inc_flow.errors import DataError, MetricError, QuantizationError
from inc_flow.metrics.build import update_metric, wants_reference
from inc_flow.quant import graph as fx
from inc_flow.quant.latency import measure_latency
from inc_flow.quant.stats import op_counts, statistics_frame
from inc_flow.search.plan import Plan
from inc_flow.search.records import EvalOutcome

logger = logging.getLogger("inc_flow")


def batch_size_of(inputs: Any) -> int:
    """Samples in a batch of inputs (first tensor's leading dimension)."""
    if isinstance(inputs, torch.Tensor):
        return int(inputs.shape[0]) if inputs.dim() else 1
    if isinstance(inputs, dict):
        inputs = list(inputs.values())
    if isinstance(inputs, tuple | list) and inputs:
        return batch_size_of(inputs[0])
    return 1


class FxEngine:
    """Builds int8 models for plans; calibrates once per :meth:`Plan.calibration_key`.

    Args:
        model: the fp32 model (not modified).
        example_inputs: one batch of inputs, for tracing and saving shapes.
        approach: static, dynamic or quant_aware_training (``inc_flow.search.plan.APPROACHES``).
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
        approach: str = fx.STATIC,
        framework: str = "pytorch_fx",
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

    # --- ops ---------------------------------------------------------------------------
    def ops(self) -> list[tuple[str, str]]:
        """Quantizable ops (name, type) for this engine's approach and framework."""
        if self._ops is None:
            self._ops = fx.list_ops(self.fp32_model, self.approach, self.framework)
        return list(self._ops)

    # --- build ---------------------------------------------------------------------------
    def prepared(self, plan: Plan) -> nn.Module:
        """The calibrated (or trained, for QAT) model for ``plan``'s observer setting."""
        key = plan.calibration_key()
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        start = time.perf_counter()
        prepared = fx.prepare(self.fp32_model, plan.calibration_plan(), self.example_inputs)
        if plan.approach == fx.STATIC:
            if self.calib_loader is None:
                raise DataError("static quantization needs a calibration dataloader")
            seen = fx.calibrate(prepared, self.calib_loader, self.sampling_size, _run_batch)
            if seen == 0:
                raise DataError("the calibration dataloader yielded no batch")
            self.calibration_passes += 1
        elif plan.approach == fx.QAT:
            if self.q_func is None:
                raise QuantizationError("quant_aware_training needs a training function q_func")
            with fx.quiet():
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
        model = fx.convert(prepared, plan)
        self.convert_seconds += time.perf_counter() - start
        return model

    # --- facts about a model -----------------------------------------------------------
    def statistics(self, model: nn.Module):  # -> pandas.DataFrame
        return statistics_frame(fx.op_statistics(model, self.approach))

    def op_counts(self, model: nn.Module, plan: Plan | None = None) -> tuple[int, int]:
        """(int8 ops, fp32 ops) of a built model (``plan`` accepted for symmetry, unused)."""
        del plan
        return op_counts(self.statistics(model))

    @staticmethod
    def model_size(model: nn.Module) -> int:
        return fx.model_size(model)

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


def _first_tensor(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, tuple | list) and out:
        return _first_tensor(out[0])
    raise DataError(f"model output has no tensor: {type(out).__name__}")


def _output_error(out: Any, ref: Any) -> float:
    a = _first_tensor(out).float()
    b = _first_tensor(ref).float()
    if a.is_quantized:
        a = a.dequantize()
    return float(torch.mean((a - b) ** 2) / (torch.mean(b**2) + 1e-12))


# --- evaluation ---------------------------------------------------------------------------


class Evaluator:
    """Accuracy of a model: ``eval_func(model)``, or ``metric`` over ``dataloader``.

    Exact early rejection: when the metric counts correct samples (``correct``/``count``,
    as TopK and Accuracy do), higher is better and the number of samples is known, the loop
    stops as soon as even all-correct remaining samples could not reach ``threshold``.

    Metrics with ``compare_label`` False (``MSE``, ``CosineSimilarity``, ...) are given the
    ``reference`` (fp32) model's outputs on the same batch as labels. They are computed on
    the first evaluation and kept, so the eval dataloader must yield the same batches in the
    same order every time (not shuffled).
    """

    def __init__(
        self,
        eval_func: Callable[[nn.Module], float] | None = None,
        dataloader: Iterable[Any] | None = None,
        metric: Any = None,
        postprocess: Callable[[Any, Any], tuple[Any, Any]] | None = None,
        iteration: int = -1,
        higher_is_better: bool = True,
    ) -> None:
        if eval_func is None and (dataloader is None or metric is None):
            raise MetricError("evaluation needs eval_func, or an eval dataloader and a metric")
        self.eval_func = eval_func
        self.dataloader = dataloader
        self.metric = metric
        self.postprocess = postprocess
        self.iteration = iteration
        self.higher_is_better = higher_is_better
        self.seconds = 0.0
        self.reference: nn.Module | None = None
        self._reference_outputs: list[Any] = []

    def total_samples(self) -> int | None:
        if self.dataloader is None:
            return None
        try:
            n = len(self.dataloader.dataset)  # type: ignore[attr-defined]
        except (AttributeError, TypeError):
            return None
        if self.iteration is not None and self.iteration > 0:
            bs = getattr(self.dataloader, "batch_size", None) or 1
            n = min(n, self.iteration * bs)
        return n

    def __call__(self, model: nn.Module, threshold: float | None = None) -> EvalOutcome:
        return self.evaluate(model, threshold)

    def evaluate(self, model: nn.Module, threshold: float | None = None) -> EvalOutcome:
        start = time.perf_counter()
        try:
            return self._evaluate(model, threshold)
        finally:
            self.seconds += time.perf_counter() - start

    def _evaluate(self, model: nn.Module, threshold: float | None) -> EvalOutcome:
        if self.eval_func is not None:
            value = float(self.eval_func(model))
            return EvalOutcome(value=value, samples=0, total=0)
        metric = self.metric
        metric.reset()
        total = self.total_samples()
        can_stop = (
            threshold is not None
            and self.higher_is_better
            and total is not None
            and hasattr(metric, "correct")
            and hasattr(metric, "count")
        )
        seen = 0
        use_reference = wants_reference(metric)
        with torch.no_grad():
            for i, batch in enumerate(self.dataloader):  # type: ignore[union-attr]
                if self.iteration is not None and 0 < self.iteration <= i:
                    break
                inputs, label = split_batch(batch)
                out = call_model(model, inputs)
                reference = self._reference_for(i, inputs, label) if use_reference else None
                if self.postprocess is not None:
                    out, label = self.postprocess(out, label)
                update_metric(metric, out, label, reference)
                seen += batch_size_of(inputs)
                # The bound assumes the metric counts samples (TopK, Accuracy on logits);
                # element-wise Accuracy counts elements, so it never stops early.
                if can_stop and seen < total and metric.count == seen:
                    best = (metric.correct + (total - metric.count)) / total
                    if best < threshold:
                        return EvalOutcome(
                            value=metric.correct / max(metric.count, 1),
                            samples=seen,
                            total=total,
                            stopped_early=True,
                        )
        value = float(metric.result())
        return EvalOutcome(value=value, samples=seen, total=total if total else seen)

    def _reference_for(self, index: int, inputs: Any, label: Any) -> Any:
        """The fp32 model's (postprocessed) outputs on batch ``index``, computed once."""
        if index < len(self._reference_outputs):
            return self._reference_outputs[index]
        if self.reference is None:
            raise MetricError(
                "the metric has compare_label false (it compares with the fp32 model's "
                "outputs), but the evaluator has no fp32 reference model"
            )
        out = call_model(self.reference, inputs)
        if self.postprocess is not None:
            out, _ = self.postprocess(out, label)
        if index == len(self._reference_outputs):
            self._reference_outputs.append(out)
        return out


# --- latency ------------------------------------------------------------------------------


def repeat_batch(inputs: Any, batch: int) -> Any:
    """``inputs`` resized to ``batch`` samples along dim 0 (repeating or cutting)."""
    if isinstance(inputs, torch.Tensor):
        reps = math.ceil(batch / max(1, inputs.shape[0]))
        return inputs.repeat(reps, *([1] * (inputs.dim() - 1)))[:batch].contiguous()
    if isinstance(inputs, tuple | list):
        return type(inputs)(repeat_batch(x, batch) for x in inputs)
    if isinstance(inputs, dict):
        return {k: repeat_batch(v, batch) for k, v in inputs.items()}
    return copy.deepcopy(inputs)


class Benchmark:
    """Latency of a model on fixed inputs: batch 1 and ``batch_size``; the objective is the
    latency at ``batch_size``."""

    def __init__(
        self,
        example_inputs: Any,
        batch_size: int,
        warmup: int = 5,
        iterations: int = 30,
        threads: int = 1,
    ) -> None:
        self.inputs_1 = repeat_batch(example_inputs, 1)
        self.inputs_n = repeat_batch(example_inputs, batch_size)
        self.batch_size = batch_size
        self.warmup = warmup
        self.iterations = iterations
        self.threads = threads
        self.seconds = 0.0

    def measure(self, model: nn.Module) -> dict[str, float]:
        start = time.perf_counter()
        try:
            b1 = self._median(model, self.inputs_1)
            bn = b1 if self.batch_size == 1 else self._median(model, self.inputs_n)
        finally:
            self.seconds += time.perf_counter() - start
        return {
            "latency_ms_b1": b1,
            f"latency_ms_b{self.batch_size}": bn,
            "latency_ms": bn,
            "throughput": self.batch_size / (bn / 1000.0) if bn > 0 else float("inf"),
        }

    def _median(self, model: nn.Module, inputs: Any) -> float:
        result = measure_latency(
            lambda x: call_model(model, x), (inputs,), self.warmup, self.iterations, self.threads
        )
        return result.median_ms

    def latency(self, model: nn.Module) -> float:
        return self.measure(model)["latency_ms"]
