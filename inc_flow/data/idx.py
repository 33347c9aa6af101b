"""IDX files (the MNIST format) and the datasets read from them: ``FashionMNIST``, ``MNIST``.

Nothing here downloads: ``root`` points at local ``*-idx?-ubyte[.gz]`` files.
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inc_flow.data.datasets import refuse_filter
from inc_flow.errors import DataError


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
        refuse_filter(filter, self.NAME)
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
