"""Generate once, sweep many: a generator is fitted once per (config, data) and then stored.

Each generator actor asks this module for its trained generator: it is loaded from the
`SyntheticStore` when stored, else trained and stored, and then every actor holds the stored
bytes (whoever saved first).
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from typing import Callable

from raysweep.data import ImageDataset
from raysweep.generators import Generator, create_generator
from raysweep.store import SyntheticStore, content_key

Log = Callable[[str], None]


@dataclass(frozen=True)
class TrainedGenerator:
    generator: Generator
    key: str
    weights_sha256: str
    fit_seconds: float
    reused: bool


def generator_key(name: str, options: dict, train: ImageDataset, seed: int
                  ) -> tuple[str, Generator]:
    """The content key of the generator these options train on this data with this seed, and
    the (untrained) generator: building one loads no weights."""
    generator = create_generator(name, **options)
    key = content_key({"generator": name, "config": generator.config(), "seed": seed,
                       "train_fingerprint": train.fingerprint()})
    return key, generator


def ensure_generator(store: SyntheticStore, name: str, options: dict, train: ImageDataset,
                     seed: int, log: Log = print) -> TrainedGenerator:
    """Load the generator trained on exactly this data and config, or train and store it."""
    key, generator = generator_key(name, options, train, seed)
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
