"""Which real training image each image of a pool made from real images starts from.

Inpainted and img2img pools vary the training images themselves. Image i of such a pool starts
from source `order[i % n]` of the n training images, where `order` interleaves the classes (a
seeded shuffle within each class), so every prefix is class-balanced and a ratio r reads r
variants of each real image: variant i // n, with its own seed.
"""

from __future__ import annotations

import numpy as np

from raysweep.synthesis.sampled import image_seeds


def source_order(labels: np.ndarray, seed: int) -> np.ndarray:
    """Training-set indices, classes interleaved, seeded shuffle within each class."""
    rng = np.random.default_rng(int(seed))
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    rounds = max(len(members) for members in per_class)
    return np.array([members[r] for r in range(rounds) for members in per_class
                     if r < len(members)], dtype=np.int64)


def real_sources(labels: np.ndarray, seed: int, start: int, stop: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(source indices, variant numbers, per-image seeds) of pool images [start, stop)."""
    order = source_order(labels, seed)
    index = np.arange(start, stop, dtype=np.int64)
    return order[index % len(order)], index // len(order), image_seeds(seed, index)
