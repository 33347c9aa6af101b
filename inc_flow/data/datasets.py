"""Built-in datasets, transforms and dataloaders, and the batch conventions of the tuner.

INC 1.x names and meanings for PyTorch: datasets ``dummy``, ``dummy_v2``, ``FashionMNIST``,
``MNIST``, ``ImageFolder``; transforms (defined in ``inc_flow.data.transforms``, importable from
here) ``ToTensor``, ``Normalize``, ``Resize``, ``CenterCrop``, applied to the input only.
Nothing here downloads: datasets read local files or generate data.
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from PIL import Image
from torch import Tensor
from torchvision.transforms import Compose
from torchvision.transforms import functional as tvf

from inc_flow.common import DataLoader
from inc_flow.data.transforms import CenterCrop, Normalize, Resize, ToTensor
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


def _no_filter(filter: Any, owner: str) -> None:
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
        _no_filter(filter, "DummyDataset")
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
        _no_filter(filter, "DummyDatasetV2")
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


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw) of unsigned bytes into a writable uint8 array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read IDX file {path}: {e}") from e
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file (header {data[:4]!r})")
    ndim = data[3]
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", data[4:header])
    if len(data) - header != int(np.prod(dims)):
        raise DataError(
            f"{path}: header says {dims}, but the file holds {len(data) - header} bytes"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


class _IdxImageDataset(torch.utils.data.Dataset):
    """MNIST-format images as float32 tensors [1, 28, 28] in [0, 1], with int labels."""

    NAME = ""
    DEFAULT_ROOT = ""

    def __init__(
        self,
        root: str | Path | None = None,
        train: bool = False,
        transform: Callable | None = None,
        filter: Any = None,
        download: bool = False,
    ) -> None:
        if download:
            raise DataError(
                f"{self.NAME}: downloads are not supported; point `root` at local IDX files "
                f"(e.g. {self.DEFAULT_ROOT})"
            )
        _no_filter(filter, self.NAME)
        self.root = Path(root if root is not None else self.DEFAULT_ROOT)
        self.train = bool(train)
        self.transform = transform
        split = "train" if self.train else "t10k"
        images = _find_idx(
            self.root, self.NAME, f"{split}-images-idx3-ubyte", f"{split}-labels-idx1-ubyte"
        )
        self._images = torch.from_numpy(read_idx(images[0]))
        self.targets = torch.from_numpy(read_idx(images[1])).long()
        if self._images.ndim != 3 or len(self._images) != len(self.targets):
            raise DataError(
                f"{self.NAME}: {images[0]} holds {tuple(self._images.shape)} images but "
                f"{images[1]} holds {len(self.targets)} labels"
            )

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = self._images[index].unsqueeze(0).to(torch.float32).div_(255.0)
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.targets[index])


def _find_idx(root: Path, name: str, *stems: str) -> list[Path]:
    if not root.is_dir():
        raise DataError(f"{name}: root directory {root} does not exist")
    for folder in (root, root / name / "raw"):  # the second is torchvision's layout
        found = [
            next((p for p in (folder / s, folder / f"{s}.gz") if p.is_file()), None) for s in stems
        ]
        if all(found):
            return found
    expected = " and ".join(f"{s}[.gz]" for s in stems)
    raise DataError(f"{name}: expected {expected} in {root} (or {root / name / 'raw'})")


class FashionMNIST(_IdxImageDataset):
    """Fashion-MNIST from local IDX files (Debian's ``dataset-fashion-mnist``)."""

    NAME = "FashionMNIST"
    DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
    CLASSES = (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    )  # fmt: skip


class MNIST(_IdxImageDataset):
    """MNIST from local IDX files."""

    NAME = "MNIST"
    DEFAULT_ROOT = "/usr/share/datasets/mnist"
    CLASSES = tuple(str(i) for i in range(10))


class ImageFolder(torch.utils.data.Dataset):
    """``root/<class>/<image>`` folders (torchvision's ImageFolder): (RGB image, class index).

    The transform receives a PIL image; if it returns one (or there is none), the image is
    converted to a float tensor [3, H, W] in [0, 1] so that batches can be stacked.
    """

    def __init__(self, root: str | Path, transform: Callable | None = None, filter: Any = None):
        _no_filter(filter, "ImageFolder")
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
    _no_filter(getattr(cfg, "filter", None), "dataloader")
    transform = build_transform(getattr(cfg, "transform", ()))
    dataset = build_dataset(cfg.dataset, transform=transform)
    return DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        last_batch=getattr(cfg, "last_batch", "rollover"),
        shuffle=bool(getattr(cfg, "shuffle", False)),
    )


def describe(obj: Any, depth: int = 0) -> str:
    """A short structural description of a batch, e.g. ``list[str, int, Tensor[2x3]]``."""
    if isinstance(obj, (Tensor, np.ndarray)):
        kind = "Tensor" if isinstance(obj, Tensor) else "ndarray"
        return f"{kind}[{'x'.join(str(d) for d in obj.shape)}]"
    if depth > 3:
        return "..."
    if isinstance(obj, Mapping):
        items = [f"{k!r}: {describe(v, depth + 1)}" for k, v in list(obj.items())[:8]]
        return (
            type(obj).__name__ + "{" + ", ".join(items) + (", ..." if len(obj) > 8 else "") + "}"
        )
    if isinstance(obj, (list, tuple)):
        items = [describe(v, depth + 1) for v in obj[:8]]
        more = f", ... ({len(obj)} items)" if len(obj) > 8 else ""
        return f"{type(obj).__name__}[{', '.join(items)}{more}]"
    return type(obj).__name__


def _valid_inputs(inputs: Any) -> bool:
    if isinstance(inputs, Tensor):
        return True
    if isinstance(inputs, (list, tuple)):
        return len(inputs) > 0 and all(isinstance(x, Tensor) for x in inputs)
    if isinstance(inputs, Mapping):
        return len(inputs) > 0 and all(isinstance(k, str) for k in inputs)
    return False


def split_batch(batch: Any) -> tuple[Any, Any]:
    """Split a batch into ``(inputs, label)``.

    Rules, first match wins:

    * a Tensor -> ``(tensor, None)``;
    * a dict with a ``"label"`` or ``"labels"`` key -> that value is the label and the other
      items are keyword inputs; any other dict -> keyword inputs, label ``None``;
    * a tuple/list of two -> ``(inputs, label)`` (INC's convention), where inputs is a
      tensor, a tuple/list of tensors (positional inputs) or a dict (keyword inputs);
    * a tuple/list of one -> ``(element, None)`` (e.g. a ``TensorDataset`` without labels).

    Note a label-less two-input batch ``[x1, x2]`` reads as ``(x1, label=x2)``, as in INC.

    Raises:
        DataError: anything else; the message shows the batch structure.
    """
    inputs, label = batch, None
    if isinstance(batch, Mapping):
        key = next((k for k in ("label", "labels") if k in batch), None)
        if key is not None:
            inputs = {k: v for k, v in batch.items() if k != key}
            label = batch[key]
    elif isinstance(batch, (list, tuple)) and len(batch) in (1, 2):
        inputs, label = (batch[0], batch[1]) if len(batch) == 2 else (batch[0], None)
    if not _valid_inputs(inputs):
        raise DataError(
            "cannot split the batch into (inputs, label); expected a Tensor, (inputs, label) "
            f"or a dict of tensors; batch structure: {describe(batch)}"
        )
    return inputs, label


def call_model(model: Callable[..., Any], inputs: Any) -> Any:
    """Run ``model`` on inputs from ``split_batch``: tensor, ``*tuple`` or ``**dict``."""
    if isinstance(inputs, Tensor):
        return model(inputs)
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (list, tuple)):
        return model(*inputs)
    raise DataError(f"model inputs must be a Tensor, tuple or dict, got {describe(inputs)}")


def first_input(loader: Any) -> tuple[Any, ...]:
    """Positional example inputs for tracing, from the loader's first batch.

    A tensor -> ``(tensor,)``; a tuple/list -> a tuple; a dict -> its values in order.
    """
    try:
        batch = next(iter(loader))
    except StopIteration:
        raise DataError(f"the dataloader yields no batches: {loader!r}") from None
    inputs, _ = split_batch(batch)
    if isinstance(inputs, Tensor):
        return (inputs,)
    if isinstance(inputs, Mapping):
        return tuple(inputs.values())
    return tuple(inputs)
