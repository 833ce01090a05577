"""img2img pools: real training images noised part of the way and denoised with a class condition.

SDEdit (Meng et al. 2022) as a synthesis kind, the field's most used generative augmentation
(DA-Fusion varies each real image at an img2img strength; Diff-Mix translates it toward another
class). Image i of an img2img pool varies a real training image (`sources.real_sources`:
classes interleaved, so a ratio r reads r variants of each real image, each with its own seed):
it is noised to `strength` of the diffusion schedule and denoised toward a target class.

* `translation: same`: the target is the source's own class; the label is that class.
* `translation: other`: the target is another class, a seeded and class-balanced choice: the
  k-th source of class c (in the pool's order) at variant v goes to class
  `(c + 1 + (k + v + seed) mod (K - 1)) mod K`, so each class's sources spread evenly over
  the other K - 1 classes and each variant moves on by one. The soft label puts
  `strength ** soft_label_gamma` on the target class (Diff-Mix's weighting) and the rest on
  the source's class: a light touch keeps most of the source's label.

Every image records its source index, source class, target class (its `labels`) and the
target's share of its label (`PoolImages.weights`). The key hashes the generator and its
img2img settings, the training data, the seed, strength and translation (and gamma for
`other`), so each (seed, strength, translation) is one pool of nested prefixes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from raysweep.data import ImageDataset
from raysweep.store import PoolImages, content_key
from raysweep.synthesis.identity import Variation
from raysweep.synthesis.sampled import IMAGE_SEEDS
from raysweep.synthesis.sources import real_sources, source_order


def img2img_order(labels: np.ndarray, num_classes: int, seed: int, variation: Variation,
                  start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(source indices, target classes, per-image seeds) of pool images [start, stop)."""
    sources, variants, seeds = real_sources(labels, seed, start, stop)
    source_labels = labels[sources]
    if variation.translation == "same":
        return sources, source_labels, seeds
    # The rank of each source among its class's members, in the pool's (seeded) order.
    order = source_order(labels, seed)
    rank = np.empty(len(labels), np.int64)
    for c in np.unique(labels):
        members = order[labels[order] == c]
        rank[members] = np.arange(len(members))
    step = (rank[sources] + variants + int(seed)) % (num_classes - 1)
    return sources, (source_labels + 1 + step) % num_classes, seeds


def label_weight(variation: Variation, gamma: float) -> float:
    """The target class's share of a variant's soft label: 1 toward its own class, else
    strength ** gamma (the rest stays on the source's class)."""
    if variation.translation == "same":
        return 1.0
    return float(variation.strength ** gamma)


def img2img_pool_fields(generator: str, generator_key: str, weights_sha256: str,
                        img2img_config: dict, train_fingerprint: str, num_classes: int,
                        seed: int, variation: Variation, gamma: float) -> dict:
    """Everything an img2img pool's images and labels depend on (its key hashes this; `cache
    ls` shows it)."""
    fields = {"kind": "img2img", "generator": generator, "generator_key": generator_key,
              "weights": weights_sha256, "img2img_config": img2img_config,
              "train_fingerprint": train_fingerprint, "num_classes": num_classes,
              "seed": int(seed),
              "strength": variation.strength, "translation": variation.translation,
              "order": "source = classes interleaved; variant = i // n_train; other: target = "
                       "(c + 1 + (k + v + seed) mod (K - 1)) mod K",
              "image_seeds": IMAGE_SEEDS}
    if variation.translation == "other":
        fields["soft_label_gamma"] = float(gamma)
    return fields


def img2img_pool_key(fields: dict) -> str:
    return content_key(fields)


@dataclass
class Varier:
    """Varies training images with a generator that can (`sample_img2img`)."""

    generator: object
    train: ImageDataset

    def vary(self, sources: np.ndarray, targets: np.ndarray, seeds: np.ndarray,
             variation: Variation, gamma: float) -> PoolImages:
        images = self.generator.sample_img2img(self.train.images[sources], targets, seeds,
                                               variation.strength)
        weights = np.full(len(sources), label_weight(variation, gamma), np.float32)
        return PoolImages(images, targets.astype(np.int64), seeds, sources=sources,
                          source_labels=self.train.labels[sources], weights=weights)
