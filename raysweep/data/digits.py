"""`digits`: scikit-learn's 1,797 handwritten digits (8x8, offline, about 180 per digit)."""

from __future__ import annotations

import numpy as np

from raysweep.data import register_dataset
from raysweep.data.base import ImageDataset
from raysweep.data.mnist5k import DIGIT_WORDS


@register_dataset("digits")
def digits() -> ImageDataset:
    """sklearn `load_digits`, 8x8x1 uint8 (0..16 scaled to 0..255), classes "0".."9"."""
    from sklearn.datasets import load_digits  # imported here: sklearn is slow to import

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[..., None]
    return ImageDataset(
        images, bunch.target.astype(np.int64), tuple(str(d) for d in range(10)),
        flips_change_label=True, name="digits",
        extra={"prompt_names": tuple(f"handwritten digit {w}" for w in DIGIT_WORDS)},
    )
