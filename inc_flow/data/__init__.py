"""Datasets, transforms and dataloaders (INC 1.x names), and the batch conventions.

The public names are importable from here, as in INC-style scripts:
``from inc_flow.data import DummyDataset, FashionMNIST, Normalize, build_dataloader``.
"""

from inc_flow.data.batches import call_model, describe, first_input, split_batch
from inc_flow.data.datasets import (
    DUMMY_SEED,
    DummyDataset,
    DummyDatasetV2,
    ImageFolder,
    custom_dataset,
)
from inc_flow.data.idx import MNIST, FashionMNIST, read_idx
from inc_flow.data.loaders import (
    DATASET_CLASSES,
    TRANSFORM_CLASSES,
    build_dataloader,
    build_dataset,
    build_transform,
)
from inc_flow.data.transforms import CenterCrop, Normalize, Resize, ToTensor

__all__ = [
    "DATASET_CLASSES",
    "DUMMY_SEED",
    "MNIST",
    "TRANSFORM_CLASSES",
    "CenterCrop",
    "DummyDataset",
    "DummyDatasetV2",
    "FashionMNIST",
    "ImageFolder",
    "Normalize",
    "Resize",
    "ToTensor",
    "build_dataloader",
    "build_dataset",
    "build_transform",
    "call_model",
    "custom_dataset",
    "describe",
    "first_input",
    "read_idx",
    "split_batch",
]
