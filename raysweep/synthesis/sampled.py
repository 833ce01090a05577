"""Class-conditional pools (`ddpm`, `gan`, `vae`, `text2img`): images sampled from (label, seed).

Image i of pool `seed` has label i % num_classes (classes interleave, so every prefix is
class-balanced to within one image) and its own seed, so it depends only on the pool's key
fields and i: the first n images are the same whatever n.
"""

from __future__ import annotations

import numpy as np

from raysweep.store import content_key


def pool_key(generator: str, generator_key: str, weights_sha256: str, num_classes: int,
             seed: int) -> str:
    """The content key of the class-conditional pool a trained generator makes for `seed`."""
    return content_key({"kind": "class-conditional", "generator": generator,
                        "generator_key": generator_key, "weights": weights_sha256,
                        "num_classes": num_classes, "seed": seed,
                        "image_seeds": IMAGE_SEEDS})


def pool_meta(generator: str, generator_key: str, weights_sha256: str, num_classes: int,
              seed: int) -> dict:
    """What `raysweep cache ls` shows for a pool: the fields its key hashes."""
    return {"generator": generator, "generator_key": generator_key, "weights": weights_sha256,
            "num_classes": num_classes, "seed": seed, "order": "label = i % num_classes",
            "image_seeds": IMAGE_SEEDS}


def pool_order(num_classes: int, seed: int, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and per-image seeds of images [start, stop): classes interleave, so every prefix
    is class-balanced to within one image."""
    index = np.arange(start, stop, dtype=np.int64)
    return index % num_classes, image_seeds(seed, index)


# Generators seed torch's CPU generator with each image's seed, and it keeps only the low 32
# bits: per-image seeds `seed << 32 | i` made the pools of every seed the same images. Pool
# seed s now starts at s times Knuth's multiplicative constant (mod 2**32) and image i adds i,
# so images within a pool never share a seed and pools of different seeds only would if their
# starts lay closer than a pool's length (seeds 0-9 are at least 1.3e8 apart).
_SEED_STRIDE = 2654435761
IMAGE_SEEDS = "(seed * 2654435761 + i) mod 2**32"  # in pool keys: old pools are not reused


def image_seeds(seed: int, index: np.ndarray) -> np.ndarray:
    """The generator seeds (int64, below 2**32) of images `index` of pool `seed`."""
    return (np.int64(seed) * np.int64(_SEED_STRIDE) + np.asarray(index, np.int64)) % np.int64(2**32)
