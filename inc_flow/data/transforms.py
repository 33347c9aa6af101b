"""Built-in transforms (INC 1.x names): ``ToTensor``, ``Normalize``, ``Resize``, ``CenterCrop``.

Each works on PIL images and on tensors, and transforms a sample's input only (torchvision's
convention). ``inc_flow.data.loaders.build_transform`` composes them from the config.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as tvf

from inc_flow.errors import DataError


class ToTensor:
    """PIL image or HWC ndarray -> float tensor CHW in [0, 1]; a tensor passes unchanged."""

    def __call__(self, image: Any) -> Tensor:
        if isinstance(image, Tensor):
            return image
        try:
            return tvf.to_tensor(image)
        except TypeError as e:
            raise DataError(f"ToTensor: cannot convert {type(image).__name__}: {e}") from e


class Normalize:
    """``(x - mean) / std`` per channel (dim -3), or with one value for every element."""

    def __init__(self, mean: float | Sequence[float], std: float | Sequence[float]) -> None:
        self.mean = [float(m) for m in (mean if isinstance(mean, Sequence) else [mean])]
        self.std = [float(s) for s in (std if isinstance(std, Sequence) else [std])]
        if not self.mean or not self.std or 0.0 in self.std:
            raise DataError(
                f"Normalize: needs mean and non-zero std, got mean={mean!r}, std={std!r}"
            )

    def __call__(self, image: Any) -> Tensor:
        if not isinstance(image, Tensor):
            image = ToTensor()(image)
        elif image.dtype == torch.uint8:
            image = image.to(torch.float32).div_(255.0)
        elif not image.is_floating_point():
            image = image.to(torch.float32)
        return (image - self._shaped(self.mean, image)) / self._shaped(self.std, image)

    def _shaped(self, values: list[float], image: Tensor) -> Tensor:
        t = torch.tensor(values, dtype=image.dtype)
        if len(values) == 1:
            return t
        if image.ndim < 3 or image.shape[-3] != len(values):
            raise DataError(
                f"Normalize: {len(values)} channel values do not fit an input of shape "
                f"{tuple(image.shape)} (channels are dim -3)"
            )
        return t.view(-1, 1, 1)


_INTERPOLATION = {
    "bilinear": InterpolationMode.BILINEAR,
    "nearest": InterpolationMode.NEAREST,
    "bicubic": InterpolationMode.BICUBIC,
}


def _size(size: Any, owner: str) -> int | list[int]:
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        return size
    if (
        isinstance(size, Sequence)
        and len(size) in (1, 2)
        and all(isinstance(s, int) for s in size)
    ):
        return list(size)
    raise DataError(f"{owner}: `size` must be an int or [height, width], got size={size!r}")


class Resize:
    """torchvision's Resize on PIL images or tensors: an int matches the shorter edge."""

    def __init__(self, size: int | Sequence[int], interpolation: str = "bilinear") -> None:
        self.size = _size(size, "Resize")
        if interpolation not in _INTERPOLATION:
            raise DataError(f"Resize: `interpolation` must be one of {list(_INTERPOLATION)}")
        self.interpolation = interpolation

    def __call__(self, image: Any) -> Any:
        mode = _INTERPOLATION[self.interpolation]
        return tvf.resize(image, self.size, interpolation=mode, antialias=True)


class CenterCrop:
    """torchvision's CenterCrop on PIL images or tensors."""

    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = _size(size, "CenterCrop")

    def __call__(self, image: Any) -> Any:
        return tvf.center_crop(image, self.size)
