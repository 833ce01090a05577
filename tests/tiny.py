"""Tiny settings and data shared by the store and synthesis tests."""

from __future__ import annotations

import numpy as np

from raysweep.synthesis.store import PoolImages

# A DDPM that trains in seconds: enough to exercise the real fit/save/load/sample path.
TINY_DDPM = {"steps": 3, "block_out_channels": [8, 16], "image_size": 8, "sample_steps": 2,
             "batch_size": 16}


def images(start: int, stop: int) -> PoolImages:
    """Pool images [start, stop) whose pixels, labels and seeds encode their index."""
    index = np.arange(start, stop)
    pixels = (index % 255).astype(np.uint8)[:, None, None, None] * np.ones((1, 4, 4, 1), np.uint8)
    return PoolImages(pixels, index % 10, index)
