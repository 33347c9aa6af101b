"""Config names -> dataset and transform classes, and the builders of dataloaders from config.

``build_dataloader`` turns a ``DataloaderConfig`` (dataset, transforms, batch size,
``last_batch``, ``shuffle``) into an ``inc_flow.common.DataLoader``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torchvision.transforms import Compose

from inc_flow.common import DataLoader
from inc_flow.data.datasets import (
    DummyDataset,
    DummyDatasetV2,
    ImageFolder,
    custom_dataset,
    refuse_filter,
)
from inc_flow.data.idx import MNIST, FashionMNIST
from inc_flow.data.transforms import CenterCrop, Normalize, Resize, ToTensor
from inc_flow.errors import DataError

DATASET_CLASSES: Mapping[str, Callable[..., Any]] = {
    "dummy": DummyDataset,
    "dummy_v2": DummyDatasetV2,
    "FashionMNIST": FashionMNIST,
    "MNIST": MNIST,
    "ImageFolder": ImageFolder,
    "custom": custom_dataset,
}
TRANSFORM_CLASSES: Mapping[str, type] = {
    "ToTensor": ToTensor,
    "Normalize": Normalize,
    "Resize": Resize,
    "CenterCrop": CenterCrop,
}


def _name_params(spec: Any) -> tuple[str, dict[str, Any]]:
    if hasattr(spec, "name"):
        return spec.name, dict(spec.params or {})
    name, params = spec  # a (name, params) pair
    return name, dict(params or {})


def _build(table: Mapping[str, type], kind: str, spec: Any, **extra: Any) -> Any:
    name, params = _name_params(spec)
    if name not in table:
        raise DataError(f"unknown {kind} `{name}`; built-in {kind}s: {sorted(table)}")
    try:
        return table[name](**params, **extra)
    except TypeError as e:
        raise DataError(f"{kind} `{name}` with {params}: {e}") from e


def build_transform(specs: Sequence[Any] | None) -> Callable | None:
    """Compose ``TransformSpec`` (or ``(name, params)``) items in order; ``None`` if empty."""
    steps = [_build(TRANSFORM_CLASSES, "transform", spec) for spec in specs or ()]
    return Compose(steps) if steps else None


def build_dataset(spec: Any, transform: Callable | None = None) -> torch.utils.data.Dataset:
    """Build the dataset a ``DatasetSpec`` (``.name``, ``.params``) names."""
    return _build(DATASET_CLASSES, "dataset", spec, transform=transform)


def build_dataloader(cfg: Any) -> DataLoader:
    """Build a ``common.DataLoader`` from a ``DataloaderConfig``.

    ``cfg.last_batch``: ``"rollover"`` keeps the last partial batch, ``"no_rollover"``
    drops it (INC's meaning; see ``inc_flow.common.drop_last_for``).
    """
    refuse_filter(getattr(cfg, "filter", None), "dataloader")
    transform = build_transform(getattr(cfg, "transform", ()))
    dataset = build_dataset(cfg.dataset, transform=transform)
    return DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        last_batch=getattr(cfg, "last_batch", "rollover"),
        shuffle=bool(getattr(cfg, "shuffle", False)),
    )
