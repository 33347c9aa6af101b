"""Measure a built model: ``MetricEvaluator`` runs the metric batch by batch and stops as
soon as the accuracy target is out of reach; ``LatencyBenchmark`` times a model on a fixed
batch with a fixed thread count. Both serve the tuner's evaluator and benchmark ports.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from inc_flow import bars
from inc_flow.data.batches import call_model, split_batch
from inc_flow.errors import DataError, MetricError
from inc_flow.metrics.build import chance_level, tied_outputs, update_metric, wants_reference
from inc_flow.quant.latency import measure_latency, round_plan, time_side_by_side
from inc_flow.quant.samples import SampleProbe, counts_top1, ranks_classes
from inc_flow.search.probe import Probe
from inc_flow.search.records import EvalOutcome
from inc_flow.search.speed import Candidate


def batch_size_of(inputs: Any) -> int:
    """Samples in a batch of inputs (first tensor's leading dimension)."""
    if isinstance(inputs, torch.Tensor):
        return int(inputs.shape[0]) if inputs.dim() else 1
    if isinstance(inputs, dict):
        inputs = list(inputs.values())
    if isinstance(inputs, tuple | list) and inputs:
        return batch_size_of(inputs[0])
    return 1


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


def non_finite(inputs: Any) -> tuple[int, int, int]:
    """(NaN values, inf values, values) over the floating-point tensors of a batch's inputs."""
    if isinstance(inputs, torch.Tensor):
        if not inputs.is_floating_point() and not inputs.is_complex():
            return 0, 0, inputs.numel()
        return int(torch.isnan(inputs).sum()), int(torch.isinf(inputs).sum()), inputs.numel()
    if isinstance(inputs, dict):
        inputs = list(inputs.values())
    if not isinstance(inputs, tuple | list):
        return 0, 0, 0
    counts = [non_finite(x) for x in inputs]
    return sum(c[0] for c in counts), sum(c[1] for c in counts), sum(c[2] for c in counts)


# --- accuracy -----------------------------------------------------------------------------


class MetricEvaluator:
    """Accuracy of a model: ``eval_func(model)``, or ``metric`` over ``dataloader``.

    Exact early rejection: when the metric counts correct samples (``correct``/``count``,
    as TopK and Accuracy do), higher is better and the number of samples is known, the loop
    stops as soon as even all-correct remaining samples could not reach ``threshold``.

    Until one pass over the dataloader has completed (the fp32 baseline's), every batch's
    inputs are checked: a NaN or inf input is a ``DataError`` naming the batch. A ranking
    metric's tie count (``tied``) and chance level come back on the ``EvalOutcome``.

    Metrics with ``compare_label`` False (``MSE``, ``CosineSimilarity``, ...) are given the
    ``reference`` (fp32) model's outputs on the same batch as labels. They are computed on
    the first evaluation and kept, so the eval dataloader must yield the same batches in the
    same order every time (not shuffled).

    ``threads``: torch's intra-op threads while evaluating (restored afterwards); None keeps
    the current count (all cores by default).

    ``probe`` (``search.ports.HasProbe``) compares a model with fp32 sample by sample on the
    eval set, reusing the outputs recorded during ``evaluate``; with an ``eval_func``, on the
    calibration data (``probe_loader``), if given: at least its first ``probe_limit`` samples,
    more until the model disagrees with fp32 on ``probe_disagreements`` of them, at most
    ``probe_most`` (``quant.samples.SampleProbe``).
    """

    def __init__(
        self,
        eval_func: Callable[[nn.Module], float] | None = None,
        dataloader: Iterable[Any] | None = None,
        metric: Any = None,
        postprocess: Callable[[Any, Any], tuple[Any, Any]] | None = None,
        iteration: int = -1,
        higher_is_better: bool = True,
        threads: int | None = None,
        probe_loader: Iterable[Any] | None = None,
        probe_limit: int = 1024,
        probe_disagreements: int = 128,
        probe_most: int = 16384,
    ) -> None:
        if eval_func is None and (dataloader is None or metric is None):
            raise MetricError("evaluation needs eval_func, or an eval dataloader and a metric")
        self.eval_func = eval_func
        self.dataloader = dataloader
        self.metric = metric
        self.postprocess = postprocess
        self.iteration = iteration
        self.higher_is_better = higher_is_better
        self.threads = threads
        self.seconds = 0.0
        self.reference: nn.Module | None = None
        self._reference_outputs: list[Any] = []
        self.inputs_checked = False  # True after one full pass found only finite inputs
        self.samples: SampleProbe | None = None
        if eval_func is None:
            # labels as the metric sees them only without a postprocess (which may map them)
            labelled = postprocess is None and counts_top1(metric)
            self.samples = SampleProbe(
                dataloader, ranks_classes(metric), batches=iteration, labelled=labelled
            )
        elif probe_loader is not None:
            self.samples = SampleProbe(
                probe_loader, True, probe_limit, -1, probe_disagreements, probe_most
            )

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

    def _n_batches(self) -> int | None:
        """The batches one evaluation reads, when the loader knows its length (progress)."""
        try:
            n = len(self.dataloader)  # type: ignore[arg-type]
        except TypeError:
            return None
        return min(n, self.iteration) if self.iteration is not None and self.iteration > 0 else n

    def __call__(self, model: nn.Module, threshold: float | None = None) -> EvalOutcome:
        return self.evaluate(model, threshold)

    def evaluate(self, model: nn.Module, threshold: float | None = None) -> EvalOutcome:
        start, threads = time.perf_counter(), torch.get_num_threads()
        try:
            if self.threads is not None:
                torch.set_num_threads(self.threads)
            return self._evaluate(model, threshold)
        finally:
            torch.set_num_threads(threads)
            self.seconds += time.perf_counter() - start

    def probe(self, model: nn.Module, reference: nn.Module, indices: Any = None) -> Probe:
        """``model`` beside ``reference`` per sample (``search.ports.HasProbe``)."""
        if self.samples is None:
            raise MetricError("no probe data: an eval_func was given without calibration data")
        start, threads = time.perf_counter(), torch.get_num_threads()
        try:
            if self.threads is not None:
                torch.set_num_threads(self.threads)
            return self.samples.probe(model, reference, indices)
        finally:
            torch.set_num_threads(threads)
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
            data = bars.batches(self.dataloader, "evaluation", self._n_batches())
            for i, batch in enumerate(data):
                if self.iteration is not None and 0 < self.iteration <= i:
                    break
                inputs, label = split_batch(batch)
                if not self.inputs_checked:
                    _check_inputs(inputs, i)
                out = call_model(model, inputs)
                if self.samples is not None:
                    self.samples.record(model, i, out, batch_size_of(inputs))
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
                            tied=tied_outputs(metric),
                            chance=chance_level(metric),
                        )
        self.inputs_checked = True
        return EvalOutcome(
            value=float(metric.result()),
            samples=seen,
            total=total if total else seen,
            tied=tied_outputs(metric),
            chance=chance_level(metric),
        )

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


def _check_inputs(inputs: Any, index: int) -> None:
    nan, inf, size = non_finite(inputs)
    if nan or inf:
        raise DataError(
            f"the eval dataloader's batch {index} has non-finite inputs: {nan} NaN and {inf} "
            f"inf of {size} values; an accuracy measured on them means nothing, so clean or "
            "filter the eval set (evaluation.accuracy.dataloader / eval_dataloader)"
        )


# --- latency ------------------------------------------------------------------------------


class LatencyBenchmark:
    """Latency of a model on fixed inputs: batch 1 and ``batch_size``; the objective is the
    latency at ``batch_size``. ``threads``: intra-op threads while timing.

    :meth:`side_by_side` is the round after the search: the same ``iterations`` timed calls
    per model and batch, split over up to ``ROUNDS`` interleaved rounds, ``warmup`` calls at
    the start of each.
    """

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

    def side_by_side(self, candidates: Sequence[Candidate]) -> dict[str, dict[int, list[float]]]:
        """The candidates timed side by side (``search.ports.HasSideBySide``)."""
        rounds, per_round = round_plan(self.iterations)
        inputs = {1: self.inputs_1, self.batch_size: self.inputs_n}
        start = time.perf_counter()
        try:
            return time_side_by_side(
                candidates, inputs, call_model, rounds, self.warmup, per_round, self.threads
            )
        finally:
            self.seconds += time.perf_counter() - start
