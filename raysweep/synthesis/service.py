"""Generate once, sweep many: fit a generator once per (config, data) and fill pools.

The sweep asks this module for a trained generator and for "at least n images of the pool
for seed s" before trials start. Trained weights and pools live in the `SyntheticStore`, keyed
by content, so a second sweep with the same generator and data reuses both.
"""

from __future__ import annotations

import hashlib
import inspect
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from raysweep.data import ImageDataset
from raysweep.generators import Generator, create_generator
from raysweep.synthesis.store import PoolImages, SyntheticStore, content_key

Log = Callable[[str], None]


@dataclass(frozen=True)
class TrainedGenerator:
    generator: Generator
    key: str
    weights_sha256: str
    fit_seconds: float
    reused: bool


@dataclass(frozen=True)
class PoolStatus:
    key: str
    seed: int
    count: int
    generated: int
    seconds: float


def ensure_generator(store: SyntheticStore, name: str, options: dict, train: ImageDataset,
                     seed: int, log: Log = print) -> TrainedGenerator:
    """Load the generator trained on exactly this data and config, or train and store it."""
    generator = create_generator(name, **options)
    key = content_key({"generator": name, "config": generator.config(), "seed": seed,
                       "train_fingerprint": train.fingerprint()})
    if store.has_generator(key):
        directory = store.generator_dir(key)  # local; an S3 store downloads it once here
        generator.load(str(directory))
        log(f"generator {name}: reusing trained weights {key} (skipping training)")
        return TrainedGenerator(generator, key, _weights_sha256(directory), 0.0, True)
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
    directory = store.save_generator(key, meta, generator.save)
    log(f"generator {name}: trained in {seconds:.0f}s, stored as {key}")
    return TrainedGenerator(generator, key, _weights_sha256(directory), seconds, False)


def pool_key(generator: str, generator_key: str, weights_sha256: str, num_classes: int,
             seed: int) -> str:
    """The content key of the class-conditional pool a trained generator makes for `seed`."""
    return content_key({"kind": "class-conditional", "generator": generator,
                        "generator_key": generator_key, "weights": weights_sha256,
                        "num_classes": num_classes, "seed": seed})


def pool_meta(generator: str, generator_key: str, weights_sha256: str, num_classes: int,
              seed: int) -> dict:
    """What `raysweep cache ls` shows for a pool: the fields its key hashes."""
    return {"generator": generator, "generator_key": generator_key, "weights": weights_sha256,
            "num_classes": num_classes, "seed": seed, "order": "label = i % num_classes"}


def open_pool(store: SyntheticStore, key: str, meta: dict, log: Log = print) -> int:
    """Create the pool if new, repair it if damaged; return how many good images it holds."""
    store.create_pool(key, meta)
    if store.verify(key):
        kept = store.repair(key)
        log(f"pool {key}: damaged shards found; kept the first {kept} images, regenerating the rest")
    return store.count(key)


def pool_order(num_classes: int, seed: int, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and per-image seeds of images [start, stop): classes interleave, so every prefix
    is class-balanced to within one image."""
    index = np.arange(start, stop, dtype=np.int64)
    return index % num_classes, (np.int64(seed) << np.int64(32)) + index


def ensure_pool(store: SyntheticStore, trained: TrainedGenerator, num_classes: int, seed: int,
                count: int, batch_size: int = 250, log: Log = print) -> PoolStatus:
    """Make the pool for `seed` hold at least `count` images, extending it if shorter."""
    fields = (trained.generator.name, trained.key, trained.weights_sha256, num_classes, seed)
    key = pool_key(*fields)
    have = open_pool(store, key, pool_meta(*fields), log)
    start_time = time.perf_counter()
    for start in range(have, count, batch_size):
        stop = min(start + batch_size, count)
        labels, seeds = pool_order(num_classes, seed, start, stop)
        images = trained.generator.sample(labels, seeds)
        store.append(key, PoolImages(images, labels, seeds))
        log(f"pool {key} (seed {seed}): {stop}/{count} images")
    seconds = time.perf_counter() - start_time
    if have >= count:
        log(f"pool {key} (seed {seed}): reusing {have} stored images ({count} needed)")
    return PoolStatus(key, seed, max(have, count), max(0, count - have), seconds)


def _weights_sha256(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(Path(directory).rglob("*")):
        if path.is_file() and path.name != "meta.json":
            digest.update(path.relative_to(directory).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()
