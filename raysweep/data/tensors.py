"""uint8 images (N, H, W, C), as datasets and pools hold them, to and from float NCHW tensors.

One pair of conversions for every model that reads or writes images: generators, classifiers,
quality metrics. Pixel values map linearly between [0, 255] and `value_range`; a resize is
bilinear with antialiasing when it shrinks, so a downscaled image averages its pixels rather
than skipping them.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

ValueRange = tuple[float, float]


def to_nchw(images: np.ndarray, size: int | tuple[int, int] | None = None,
            value_range: ValueRange = (0.0, 1.0)) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float32 (N, C, H, W) on the CPU, values in `value_range`.

    Args:
        images: uint8 images, channels last.
        size: resize to this (height, width), or to a square of this side; None keeps the
            images' own size.
        value_range: what 0 and 255 become; e.g. (-1, 1) for diffusion models.
    """
    low, high = value_range
    array = np.ascontiguousarray(images)
    if not array.flags.writeable:  # e.g. from Ray's object store: torch would warn, not copy
        array = array.copy()
    x = torch.from_numpy(array).permute(0, 3, 1, 2).float()
    # Dividing by 255 / (high - low) (127.5 or 255, both exact) rather than multiplying by its
    # reciprocal gives the same float32 values as the `x / 127.5 - 1` written before.
    x = x / (255.0 / (high - low)) + low
    if size is None:
        return x
    shape = (size, size) if isinstance(size, int) else tuple(size)
    if x.shape[-2:] != shape:
        x = F.interpolate(x, size=shape, mode="bilinear", align_corners=False, antialias=True)
    return x.clamp(low, high)


def to_uint8_nhwc(x: torch.Tensor, height: int, width: int,
                  value_range: ValueRange = (-1.0, 1.0)) -> np.ndarray:
    """float (N, C, h, w) with values in about `value_range` -> uint8 (N, height, width, C).

    Values are clipped to `value_range` before and after the resize (a bilinear resize cannot
    leave it, but its rounding can), then rounded to the nearest level.
    """
    low, high = value_range
    x = x.float().clamp(low, high)
    if x.shape[-2:] != (height, width):
        x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False,
                          antialias=x.shape[-1] > width)
    x = ((x.clamp(low, high) - low) * (255.0 / (high - low))).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()
