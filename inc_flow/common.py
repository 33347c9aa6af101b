"""INC 1.x ``common`` objects with their INC signatures: ``DataLoader`` and ``Metric``.

Scripts written for ``neural_compressor.experimental.common`` construct these directly, so
the argument names, order and defaults are INC's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch.utils.data

from inc_flow.errors import DataError, MetricError

KEEP_LAST_BATCH = "rollover"
DROP_LAST_BATCH = ("no_rollover", "discard")


def drop_last_for(last_batch: str) -> bool:
    """Translate INC's ``last_batch`` into torch's ``drop_last``.

    INC's naming is odd but its meaning is fixed by its source
    (``experimental/data/dataloaders/base_dataloader.py``: ``drop_last = False if
    last_batch == 'rollover' else True``): ``"rollover"`` keeps the last, partial batch;
    ``"no_rollover"`` (inc_flow's yaml spelling) or ``"discard"`` (INC's docstring) drops it.

    Raises:
        DataError: for any other value.
    """
    if last_batch == KEEP_LAST_BATCH:
        return False
    if last_batch in DROP_LAST_BATCH:
        return True
    allowed = [KEEP_LAST_BATCH, *DROP_LAST_BATCH]
    raise DataError(f"`last_batch` must be one of {allowed}, got last_batch={last_batch!r}")


class DataLoader:
    """INC's framework dataloader for PyTorch: a torch ``DataLoader`` with INC's arguments.

    Iterating yields collated batches (torch ``default_collate`` unless ``collate_fn`` is
    given: tensors, numbers, tuples and dicts are stacked along a new batch dimension).

    Args:
        dataset: a map-style dataset (``__getitem__`` + ``__len__``) or an iterable dataset.
        batch_size: samples per batch, >= 1.
        last_batch: ``"rollover"`` keeps the last partial batch, ``"no_rollover"`` /
            ``"discard"`` drops it (see ``drop_last_for``).
        collate_fn: merges a list of samples into a batch.
        sampler: torch sampler (mutually exclusive with ``shuffle``).
        batch_sampler: torch batch sampler (then ``batch_size``/``shuffle``/``sampler``/
            ``last_batch`` are not used for batching).
        num_workers: torch worker processes.
        pin_memory: torch ``pin_memory``.
        shuffle: reshuffle every epoch (torch's global RNG seeds it).
        distributed: INC's Horovod sharding; not supported here (``DataError``).

    Raises:
        DataError: bad arguments or an empty dataset.
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int = 1,
        last_batch: str = "rollover",
        collate_fn: Callable | None = None,
        sampler: Any = None,
        batch_sampler: Any = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        shuffle: bool = False,
        distributed: bool = False,
    ) -> None:
        if distributed:
            raise DataError(
                "`distributed=True` is not supported: inc_flow evaluates on one process "
                "(several machines share one Optuna study instead)"
            )
        if hasattr(dataset, "__len__") and len(dataset) == 0:
            raise DataError(f"the dataset is empty: {dataset!r}")
        self.dataset = dataset
        self.collate_fn = collate_fn
        self.sampler = sampler
        self.batch_sampler = batch_sampler
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.shuffle = shuffle
        self.distributed = distributed
        self._batch_size = _check_batch_size(batch_size)
        self.last_batch = last_batch
        self.drop_last = drop_last_for(last_batch)
        self.dataloader = self._generate()

    def _generate(self) -> torch.utils.data.DataLoader:
        common = {
            "collate_fn": self.collate_fn,
            "num_workers": self.num_workers,
            "pin_memory": self.pin_memory,
        }
        try:
            if self.batch_sampler is not None:
                return torch.utils.data.DataLoader(
                    self.dataset, batch_sampler=self.batch_sampler, **common
                )
            return torch.utils.data.DataLoader(
                self.dataset,
                batch_size=self._batch_size,
                shuffle=self.shuffle,
                sampler=self.sampler,
                drop_last=self.drop_last,
                **common,
            )
        except (ValueError, TypeError) as e:
            raise DataError(f"cannot build a dataloader over {self.dataset!r}: {e}") from e

    @property
    def batch_size(self) -> int:
        """Samples per batch (the batch sampler's when one was given)."""
        if self.batch_sampler is not None:
            return getattr(self.batch_sampler, "batch_size", self._batch_size)
        return self._batch_size

    def batch(self, batch_size: int, last_batch: str | None = None) -> None:
        """Re-batch in place (INC's dynamic batching), e.g. batch 1 for latency runs."""
        self._batch_size = _check_batch_size(batch_size)
        if last_batch is not None:
            self.drop_last = drop_last_for(last_batch)
            self.last_batch = last_batch
        self.dataloader = self._generate()

    def __iter__(self) -> Iterator[Any]:
        return iter(self.dataloader)

    def __len__(self) -> int:
        return len(self.dataloader)

    def __repr__(self) -> str:
        return (
            f"DataLoader(dataset={type(self.dataset).__name__}, batch_size={self.batch_size}, "
            f"last_batch={self.last_batch!r}, shuffle={self.shuffle})"
        )


def _check_batch_size(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise DataError(f"`batch_size` must be an integer >= 1, got batch_size={batch_size!r}")
    return batch_size


class Metric:
    """INC's ``common.Metric``: a user metric class and the arguments to build it.

    The class must build objects with ``update(preds, labels)``, ``reset()`` and
    ``result()`` (a scalar). ``create()`` builds and checks one.

    Args:
        metric_cls: the user metric class (or any factory).
        name: the name the metric is reported under.
        **kwargs: arguments for ``metric_cls``.
    """

    def __init__(self, metric_cls: Callable[..., Any], name: str = "user_metric", **kwargs: Any):
        if not callable(metric_cls):
            raise MetricError(
                f"`metric_cls` must be a class with update/reset/result, got {metric_cls!r}"
            )
        if not isinstance(name, str) or not name:
            raise MetricError(f"`name` must be a non-empty string, got name={name!r}")
        self.metric_cls = metric_cls
        self.name = name
        self.kwargs = kwargs

    def create(self) -> Any:
        """Build the user metric.

        Raises:
            MetricError: the class rejects the arguments or lacks update/reset/result.
        """
        try:
            metric = self.metric_cls(**self.kwargs)
        except TypeError as e:
            raise MetricError(
                f"metric `{self.name}`: cannot build {self.metric_cls!r}: {e}"
            ) from e
        missing = [
            m for m in ("update", "reset", "result") if not callable(getattr(metric, m, None))
        ]
        if missing:
            raise MetricError(f"metric `{self.name}`: {metric!r} has no method(s) {missing}")
        return metric

    def __repr__(self) -> str:
        cls_name = getattr(self.metric_cls, "__name__", repr(self.metric_cls))
        return f"Metric({cls_name}, name={self.name!r}, **{self.kwargs!r})"


class Model:
    """INC's ``common.Model(model)`` wrapper; inc_flow only needs the ``nn.Module`` inside."""

    def __init__(self, root: Any, **kwargs: Any) -> None:
        del kwargs  # INC's framework-specific options; nothing to choose for PyTorch here
        self.model = root
