"""The in-memory dataset every registry entry returns, and the one resize all entries share."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class ImageDataset:
    """A labelled image set held in memory.

    Args:
        images: uint8 array of shape (N, H, W, C), C = 1 or 3.
        labels: int64 array of shape (N,), values in [0, len(class_names)).
        class_names: human-readable class names, used in prompts and reports.
        flips_change_label: True where a mirrored image means another class (digits).
        name: the registry name the data came from ("mnist5k", "folder", ...).
        extra: free-form metadata; `extra["prompt_names"]`, where present, holds one phrase per
            class for prompt templates (same order as `class_names`).
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    flips_change_label: bool = False
    name: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        images = np.asarray(self.images)
        labels = np.asarray(self.labels).astype(np.int64, copy=False).reshape(-1)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise ValueError(f"ImageDataset images must be uint8 (N, H, W, 1|3), "
                             f"got {images.dtype} {images.shape}")
        if labels.shape[0] != images.shape[0]:
            raise ValueError(f"ImageDataset has {images.shape[0]} images but {labels.shape[0]} labels")
        class_names = tuple(str(c) for c in self.class_names)
        if labels.size and (labels.min() < 0 or labels.max() >= len(class_names)):
            raise ValueError(f"ImageDataset labels must lie in [0, {len(class_names)})")
        object.__setattr__(self, "images", images)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "class_names", class_names)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def channels(self) -> int:
        return int(self.images.shape[-1])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[1])

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def class_counts(self) -> np.ndarray:
        """Images per class, shape (num_classes,)."""
        return np.bincount(self.labels, minlength=self.num_classes)

    def subset(self, index: np.ndarray) -> "ImageDataset":
        index = np.asarray(index, dtype=np.int64)
        return ImageDataset(self.images[index], self.labels[index], self.class_names,
                            self.flips_change_label, self.name, self.extra)

    def resized(self, size: int) -> "ImageDataset":
        """The same dataset with every image resized to size x size (bilinear)."""
        return ImageDataset(resize_images(self.images, size), self.labels, self.class_names,
                            self.flips_change_label, self.name, self.extra)

    def fingerprint(self) -> str:
        """sha256 over pixels, labels and class names: names exactly this data."""
        digest = hashlib.sha256()
        digest.update(str(self.images.shape).encode())
        digest.update(np.ascontiguousarray(self.images).tobytes())
        digest.update(np.ascontiguousarray(self.labels.astype(np.int64)).tobytes())
        digest.update("\x00".join(self.class_names).encode())
        return digest.hexdigest()


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """Resize uint8 (N, H, W, C) images to (N, size, size, C) with PIL's bilinear filter.

    Non-square images are stretched; loaders that read arbitrary files crop first.
    """
    n, height, width, channels = images.shape
    if (height, width) == (size, size):
        return images.copy()
    out = np.empty((n, size, size, channels), dtype=np.uint8)
    for i in range(n):
        pixels = images[i, :, :, 0] if channels == 1 else images[i]
        resized = Image.fromarray(pixels).resize((size, size), Image.Resampling.BILINEAR)
        out[i] = np.asarray(resized).reshape(size, size, channels)
    return out
