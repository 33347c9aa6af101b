"""Generated and folder datasets (INC 1.x names ``dummy``, ``dummy_v2``, ``ImageFolder``) and
the ``custom`` dataset built by your factory.

Nothing here downloads: datasets read local files or generate data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torchvision
from PIL import Image
from torch import Tensor
from torchvision.transforms import functional as tvf

from inc_flow.errors import ConfigError, DataError
from inc_flow.model.factory import import_factory

DUMMY_SEED = 9527  # INC's dummy datasets seed numpy with 9527
_DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
    "uint8": torch.uint8,
    "int8": torch.int8,
    "int32": torch.int32,
    "int64": torch.int64,
    "bool": torch.bool,
}


def refuse_filter(filter: Any, owner: str) -> None:
    """Raise ``DataError`` if INC's ``filter`` argument is given: it is not supported."""
    if filter is not None:
        raise DataError(
            f"{owner}: `filter` is not supported (got {filter!r}); filter the data first"
        )


def _shapes(shape: Any, what: str) -> tuple[list[tuple[int, ...]], bool]:
    """A list of int lists -> several inputs (True); a list of ints -> one input (False)."""
    if not isinstance(shape, Sequence) or isinstance(shape, str) or len(shape) == 0:
        raise DataError(
            f"`{what}` must be a non-empty list of ints or of int lists, got {shape!r}"
        )
    multi = all(isinstance(s, Sequence) and not isinstance(s, str) for s in shape)
    shapes = [tuple(s) for s in shape] if multi else [tuple(shape)]
    for s in shapes:
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in s):
            raise DataError(f"`{what}` dimensions must be integers >= 1, got {shape!r}")
    return shapes, multi


def _per_tensor(value: Any, n: int, what: str) -> list[Any]:
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise DataError(f"`{what}` must have {n} entries (one per tensor), got {value!r}")
        return list(value)
    return [value] * n


def _random_tensor(shape: tuple[int, ...], low: float, high: float, dtype: str, seed: int):
    if dtype not in _DTYPES:
        raise DataError(f"`dtype` must be one of {sorted(_DTYPES)}, got dtype={dtype!r}")
    gen = torch.Generator().manual_seed(seed)
    values = torch.rand(shape, generator=gen, dtype=torch.float64) * (high - low) + low
    return values.to(_DTYPES[dtype])


def _seed(index: int, tensor: int) -> int:
    """Seed of one tensor of one sample: the same data on every run and every access."""
    return DUMMY_SEED + index + 1_000_003 * tensor


def _transformed(inputs: list[Tensor], multi: bool, transform: Callable | None) -> Any:
    """One input, or a tuple of inputs; the transform applies to each input."""
    if transform is not None:
        inputs = [transform(x) for x in inputs]
    return tuple(inputs) if multi else inputs[0]


class DummyDataset(torch.utils.data.Dataset):
    """INC's ``dummy`` dataset: uniform random samples in ``[low, high)``.

    ``shape[0]`` is the number of samples and each sample has shape ``shape[1:]``. A list of
    shapes (same ``shape[0]``) makes multi-input samples (tuples). With ``label=True`` a
    sample is ``(input, 0)``. Each sample is generated from its own seed (``DUMMY_SEED``
    plus its index), so the data is the same on every run and every access. Unlike INC
    (which ignores it), ``transform`` is applied, to each input of a multi-input sample.
    """

    def __init__(
        self,
        shape: Sequence[Any],
        low: float | Sequence[float] = -1.0,
        high: float | Sequence[float] = 1.0,
        dtype: str | Sequence[str] = "float32",
        label: bool = True,
        transform: Callable | None = None,
        filter: Any = None,
    ) -> None:
        refuse_filter(filter, "DummyDataset")
        shapes, self._multi = _shapes(shape, "shape")
        if len({s[0] for s in shapes}) != 1:
            raise DataError(f"every shape in `shape` must have the same shape[0], got {shape!r}")
        self._length = shapes[0][0]
        self._sample_shapes = [s[1:] for s in shapes]
        n = len(shapes)
        self._low, self._high = _per_tensor(low, n, "low"), _per_tensor(high, n, "high")
        self._dtype = _per_tensor(dtype, n, "dtype")
        self.label = label
        self.transform = transform
        self[0]  # fail here, not in the dataloader, on a bad dtype or range

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> Any:
        if not 0 <= index < self._length:
            raise IndexError(f"index {index} out of range for {self._length} samples")
        columns = zip(self._sample_shapes, self._low, self._high, self._dtype, strict=True)
        tensors = [
            _random_tensor(s, lo, hi, dt, _seed(index, k))
            for k, (s, lo, hi, dt) in enumerate(columns)
        ]
        sample = _transformed(tensors, self._multi, self.transform)
        return (sample, 0) if self.label else sample


class DummyDatasetV2(torch.utils.data.Dataset):
    """INC's ``dummy_v2`` dataset, made finite: ``length`` samples of shape ``input_shape``.

    ``input_shape`` excludes the batch dimension; a list of shapes makes multi-input
    samples. With a non-empty ``label_shape`` a sample is ``(input, label)`` with a random
    label tensor; with ``None`` or ``[]`` it is the input alone (INC's meaning). ``low``,
    ``high`` and ``dtype`` may be lists with one entry per input then per label tensor.
    ``transform`` applies to each input (not to the label).
    """

    def __init__(
        self,
        input_shape: Sequence[Any],
        label_shape: Sequence[int] | None = None,
        low: float | Sequence[float] = -1.0,
        high: float | Sequence[float] = 1.0,
        dtype: str | Sequence[str] = "float32",
        length: int = 1000,
        transform: Callable | None = None,
        filter: Any = None,
    ) -> None:
        refuse_filter(filter, "DummyDatasetV2")
        self._shapes, self._multi = _shapes(input_shape, "input_shape")
        self._label_shape = None
        if label_shape:
            self._label_shape = _shapes(label_shape, "label_shape")[0][0]
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise DataError(f"`length` must be an integer >= 1, got length={length!r}")
        self._length = length
        n = len(self._shapes) + (self._label_shape is not None)
        self._low, self._high = _per_tensor(low, n, "low"), _per_tensor(high, n, "high")
        self._dtype = _per_tensor(dtype, n, "dtype")
        self.transform = transform
        self[0]

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> Any:
        if not 0 <= index < self._length:
            raise IndexError(f"index {index} out of range for {self._length} samples")
        shapes = self._shapes + ([self._label_shape] if self._label_shape is not None else [])
        columns = zip(shapes, self._low, self._high, self._dtype, strict=True)
        tensors = [
            _random_tensor(s, lo, hi, dt, _seed(index, k))
            for k, (s, lo, hi, dt) in enumerate(columns)
        ]
        sample = _transformed(tensors[: len(self._shapes)], self._multi, self.transform)
        return (sample, tensors[-1]) if self._label_shape is not None else sample


class ImageFolder(torch.utils.data.Dataset):
    """``root/<class>/<image>`` folders (torchvision's ImageFolder): (RGB image, class index).

    The transform receives a PIL image; if it returns one (or there is none), the image is
    converted to a float tensor [3, H, W] in [0, 1] so that batches can be stacked.
    """

    def __init__(
        self, root: str | Path, transform: Callable | None = None, filter: Any = None
    ) -> None:
        refuse_filter(filter, "ImageFolder")
        if not Path(root).is_dir():
            raise DataError(f"ImageFolder: root directory {root} does not exist")
        try:
            self._folder = torchvision.datasets.ImageFolder(str(root))
        except (FileNotFoundError, OSError) as e:
            raise DataError(f"ImageFolder: no images under {root}: {e}") from e
        self.root = Path(root)
        self.classes = self._folder.classes
        self.class_to_idx = self._folder.class_to_idx
        self.transform = transform

    def __len__(self) -> int:
        return len(self._folder)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, label = self._folder[index]
        if self.transform is not None:
            image = self.transform(image)
        if isinstance(image, Image.Image):
            image = tvf.to_tensor(image)
        return image, label


def custom_dataset(
    factory: str, kwargs: Mapping[str, Any] | None = None, transform: Callable | None = None
) -> torch.utils.data.Dataset:
    """The ``custom`` dataset: ``factory(**kwargs)`` from your code (``"pkg.module:callable"``),
    given ``transform=`` too when the dataloader has transforms. Anything with ``__len__`` and
    ``__getitem__`` (a map-style dataset) is accepted."""
    try:
        build = import_factory(factory, "custom.factory")
    except ConfigError as e:
        raise DataError(f"custom dataset: {e}") from e
    extra = {"transform": transform} if transform is not None else {}
    try:
        dataset = build(**dict(kwargs or {}), **extra)
    except (Exception, SystemExit) as e:  # noqa: BLE001 - user code: say which factory failed
        raise DataError(
            f"custom dataset {factory!r} with {dict(kwargs or {})}: {type(e).__name__}: {e}"
        ) from e
    if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
        raise DataError(
            f"custom dataset {factory!r} must return a map-style dataset (__len__ and "
            f"__getitem__), got {type(dataset).__name__}"
        )
    return dataset
