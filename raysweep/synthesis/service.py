"""Generate once, sweep many: fit a generator once per (config, data), and what a pool is.

Each generator actor asks this module for its trained generator: it is loaded from the
`SyntheticStore` when stored, else trained and stored, and then every actor holds the stored
bytes (whoever saved first). A pool's key and the order of its images are defined here; the
one place that extends pools is `SynthesisService.ensure` in `actors.py`.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from raysweep.data import ImageDataset
from raysweep.generators import Generator, create_generator
from raysweep.store.store import SyntheticStore, content_key

Log = Callable[[str], None]


@dataclass(frozen=True)
class TrainedGenerator:
    generator: Generator
    key: str
    weights_sha256: str
    fit_seconds: float
    reused: bool


def ensure_generator(store: SyntheticStore, name: str, options: dict, train: ImageDataset,
                     seed: int, log: Log = print) -> TrainedGenerator:
    """Load the generator trained on exactly this data and config, or train and store it."""
    generator = create_generator(name, **options)
    key = content_key({"generator": name, "config": generator.config(), "seed": seed,
                       "train_fingerprint": train.fingerprint()})
    if store.has_generator(key):
        directory = store.generator_dir(key)  # local, checksums verified; S3 downloads it here
        generator.load(str(directory))
        log(f"generator {name}: reusing trained weights {key} (skipping training)")
        return TrainedGenerator(generator, key, store.generator_weights(key), 0.0, True)
    log(f"generator {name}: training on {len(train)} images of the training split")
    start = time.perf_counter()
    extra = {}
    if "class_names" in inspect.signature(generator.fit).parameters:  # prompt-driven generators
        extra["class_names"] = list(train.extra.get("prompt_names") or train.class_names)
    generator.fit(train.images, train.labels, train.num_classes, seed=seed,
                  progress=lambda message: log(f"generator {name}: {message}"), **extra)
    seconds = time.perf_counter() - start
    meta = {"generator": name, "config": generator.config(), "seed": seed,
            "dataset": train.name, "train_images": len(train), "fit_seconds": seconds}
    directory, stored = store.save_generator(key, meta, generator.save)
    if not stored:  # another sweep stored this generator first: hold its weights, not ours
        generator.load(str(directory))
        log(f"generator {name}: trained in {seconds:.0f}s, but {key} was stored meanwhile; "
            f"loaded the stored weights")
    else:
        log(f"generator {name}: trained in {seconds:.0f}s, stored as {key}")
    return TrainedGenerator(generator, key, store.generator_weights(key), seconds, False)


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
