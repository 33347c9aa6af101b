"""The study fingerprint: what determines a study's answer, as a plain dict of strings.

:func:`inputs` fingerprints what every approach shares (fp32 weights, calibration and eval
data, metric, criterion, objective, latency settings, versions) and, on the way, checks the
calibration batches and counts the samples calibration will really use; :func:`for_stage`
adds one approach's part (approach, search space). The dict is stored with the Optuna study
(``search.storage``) and a study resumed with another one is refused (``search.identity``).

What is hashed (sha256):

- ``fp32 weights``: every state-dict entry in key order: its key, dtype, shape and bytes.
- ``calibration data``: the batches one calibration reads (from the start until
  ``sampling_size`` samples, as calibration stops). ``not used`` for dynamic and QAT.
- ``eval data``: every batch the evaluation reads (all, or ``iteration`` batches). With an
  ``eval_func`` (a black box) only its qualified name, plus the eval dataloader's digest if
  one was given: a change inside the function that leaves its name alone is not seen.
- a data digest is per sample and order-free: one sha256 per sample over each tensor of it
  (place in the batch, dtype, shape, bytes), and the sha256 of the sorted sample digests; a
  value that is not a tensor is hashed by its ``repr`` with its batch.
- ``metric``: the metric's class and the ``evaluation.accuracy`` metric / postprocess config
  (a metric object's arguments are not seen); ``q_func`` (QAT) its qualified name; the
  rest are the values themselves.

Each part reads ``<what people read>; sha256 <hex>`` where it has a digest, so a refusal can
say what changed (``eval data changed (10000 samples in 40 batches -> 2000 samples ...)``).
Costs one pass over the eval data without the model (less than one trial).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from inc_flow import bars
from inc_flow.data.batches import split_batch
from inc_flow.errors import DataError
from inc_flow.quant.evaluate import batch_size_of, non_finite
from inc_flow.vocab import Approach

logger = logging.getLogger("inc_flow")

WEIGHTS, CALIB, EVAL = "fp32 weights", "calibration data", "eval data"
METRIC, CRITERION, OBJECTIVE = "metric", "accuracy criterion", "objective"
LATENCY, APPROACH, SPACE = "latency measurement", "approach", "search space"
TORCH, INC_FLOW, Q_FUNC = "torch", "inc_flow", "q_func"
NOT_USED = "not used"


@dataclasses.dataclass(frozen=True)
class DataPrint:
    """One pass over a loader: samples, batches and the order-free contents digest."""

    samples: int
    batches: int
    digest: str

    def text(self) -> str:
        return f"{self.samples} samples in {self.batches} batches; sha256 {self.digest}"


def _sha(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def _bytes(t: torch.Tensor) -> np.ndarray:
    """The bytes of ``t`` as a flat uint8 array (any dtype, bfloat16 included)."""
    t = t.detach().cpu().contiguous()
    if t.is_quantized:
        t = t.int_repr()
    return t.reshape(-1).view(torch.uint8).numpy()


def weights_part(model: nn.Module) -> str:
    """``<values> values in <n> tensors; sha256 <hex>`` over the state dict in key order."""
    h, values, tensors = hashlib.sha256(), 0, 0
    for key, value in model.state_dict().items():
        h.update(key.encode() + b"\0")
        if isinstance(value, torch.Tensor):
            h.update(f"{value.dtype}{tuple(value.shape)}".encode())
            h.update(_bytes(value))
            values, tensors = values + value.numel(), tensors + 1
        else:
            h.update(repr(value).encode())
    return f"{values} values in {tensors} tensors; sha256 {h.hexdigest()}"


def _leaves(obj: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(obj, torch.Tensor | np.ndarray):
        yield path, obj
    elif isinstance(obj, Mapping):
        for key in sorted(obj, key=str):
            yield from _leaves(obj[key], f"{path}/{key}")
    elif isinstance(obj, list | tuple):
        for i, value in enumerate(obj):
            yield from _leaves(value, f"{path}/{i}")
    else:
        yield path, obj


def _sample_digests(batch: Any, n: int) -> list[bytes]:
    """One digest per sample of ``batch`` (``n`` samples), plus one for its non-tensors."""
    samples = [hashlib.sha256() for _ in range(n)]
    shared = hashlib.sha256()
    for path, leaf in _leaves(batch):
        if isinstance(leaf, np.ndarray):
            is_text = leaf.dtype.kind in "OUSV"  # strings, objects: no tensor of them
            leaf = leaf.tolist() if is_text else torch.from_numpy(np.ascontiguousarray(leaf))
        if not isinstance(leaf, torch.Tensor):
            shared.update(f"{path}={leaf!r}".encode())
            continue
        head = f"{path}|{leaf.dtype}|{tuple(leaf.shape[1:])}".encode()
        if leaf.dim() >= 1 and leaf.shape[0] == n and n > 0:
            rows = _bytes(leaf).reshape(n, -1)
            for h, row in zip(samples, rows, strict=True):
                h.update(head)
                h.update(row)
        else:
            shared.update(head + f"{tuple(leaf.shape)}".encode())
            shared.update(_bytes(leaf))
    out = [h.digest() for h in samples]
    return out + [shared.digest()] if shared.digest() != hashlib.sha256().digest() else out


def data_print(
    loader: Iterable[Any],
    limit_samples: int | None = None,
    limit_batches: int | None = None,
    name: str = "the data",
    check: bool = False,
) -> DataPrint:
    """Fingerprint the batches of ``loader`` read from the start until ``limit_samples``
    samples or ``limit_batches`` batches (None: all).

    Raises:
        DataError: naming ``name`` and the batch index: a batch that is not ``(inputs,
            label)``, and with ``check`` a batch with NaN or inf inputs.
    """
    digests: list[bytes] = []
    samples = batches = 0
    logger.info("fingerprint of the %s (the study's identity)", name)
    for index, batch in enumerate(bars.batches(loader, f"fingerprint of the {name}")):
        try:
            inputs, _ = split_batch(batch)
        except DataError as e:
            raise DataError(f"{name}: batch {index}: {e}") from e
        if check:
            nan, inf, size = non_finite(inputs)
            if nan or inf:
                raise DataError(
                    f"{name}: batch {index} has non-finite inputs: {nan} NaN and {inf} inf "
                    f"of {size} values; observers calibrated on them give meaningless ranges, "
                    "so clean or filter the calibration data"
                )
        n = batch_size_of(inputs)
        digests += _sample_digests(batch, n)
        samples, batches = samples + n, batches + 1
        if limit_samples is not None and samples >= limit_samples:
            break
        if limit_batches is not None and batches >= limit_batches:
            break
    return DataPrint(samples, batches, hashlib.sha256(b"".join(sorted(digests))).hexdigest())


def qualname(func: Any) -> str:
    """``module.qualname`` of a function (a partial's function, a callable object's class)."""
    if isinstance(func, functools.partial):
        return f"partial({qualname(func.func)})"
    target = func if hasattr(func, "__qualname__") else type(func)
    return f"{getattr(target, '__module__', '?')}.{target.__qualname__}"


def _version() -> str:
    try:
        return importlib.metadata.version("inc-flow")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def inputs(
    cfg: Any,
    model: nn.Module,
    calib_loader: Iterable[Any] | None,
    sampling_size: int,
    static: bool,
    evaluator: Any,
    eval_func: Callable[..., Any] | None,
    eval_loader: Iterable[Any] | None,
    benchmark: Any,
    q_func: Callable[..., Any] | None = None,
) -> tuple[dict[str, str], int]:
    """The fingerprint parts every approach shares, and the calibration samples used.

    Raises:
        DataError: NaN or inf in the calibration batches (with ``static``), named by index.
    """
    used = sampling_size
    calib = NOT_USED
    if static and calib_loader is not None:
        seen = data_print(calib_loader, sampling_size, name="calibration data", check=True)
        used = seen.samples
        calib = f"{used} samples in {seen.batches} batches, sampling_size {sampling_size}"
        calib += f"; sha256 {seen.digest}"
    if evaluator is None:
        data, metric = "not evaluated (performance_only)", NOT_USED
    else:
        acc = cfg.evaluation.accuracy if cfg.evaluation is not None else None
        iteration = getattr(evaluator, "iteration", -1)
        batches = iteration if iteration is not None and iteration > 0 else None
        loader = evaluator.dataloader if eval_func is None else eval_loader
        data = ""
        if loader is not None:
            data = data_print(loader, None, batches, "eval data").text()
        if eval_func is not None:
            data = f"eval_func {qualname(eval_func)}" + (f"; loader {data}" if data else "")
            metric = f"inside eval_func {qualname(eval_func)}"
        else:
            spec = {
                "metric": acc.metric or acc.multi_metrics if acc is not None else None,
                "postprocess": acc.postprocess if acc is not None else None,
                "postprocess_func": qualname(evaluator.postprocess)
                if evaluator.postprocess is not None and (acc is None or not acc.postprocess)
                else None,
            }
            text = json.dumps(spec, sort_keys=True, default=str)
            metric = f"{qualname(type(evaluator.metric))}; sha256 {_sha(text)}"
    crit = cfg.tuning.accuracy_criterion
    parts = {
        WEIGHTS: weights_part(model),
        CALIB: calib,
        EVAL: data,
        METRIC: metric,
        CRITERION: f"relative {crit.relative}, absolute {crit.absolute}, "
        f"higher_is_better {crit.higher_is_better}",
        OBJECTIVE: str(cfg.tuning.objective),
        LATENCY: f"batch {benchmark.batch_size}, threads {benchmark.threads}",
        TORCH: torch.__version__,
        INC_FLOW: _version(),
    }
    if q_func is not None:  # QAT's training function: known by its name only, as eval_func
        parts[Q_FUNC] = qualname(q_func)
    return parts, used


def for_stage(shared: Mapping[str, str], approach: str, space: Any) -> tuple[tuple[str, str], ...]:
    """The whole fingerprint of one approach's study, as ``TuneSettings.fingerprint`` takes it
    (calibration data ``not used`` unless static)."""
    text = json.dumps(dataclasses.asdict(space), sort_keys=True, default=str)
    parts = dict(shared)
    if approach != Approach.STATIC:
        parts[CALIB] = NOT_USED
    parts[APPROACH] = approach
    n_ops = len(space.ops)
    parts[SPACE] = f"backends {list(space.backends)}, {n_ops} ops; sha256 {_sha(text)}"
    return tuple(parts.items())
