"""Inpainted pools: real training images with a saliency mask repainted (seed 000's method).

Image i of an inpainted pool repaints a real training image (`sources.real_sources`: classes
interleaved, so a ratio r reads r variants of each real image, each with its own seed). Its
mask takes `mask_fraction` of the pixels of the source's saliency map (`mask_region`), its
noise comes from its per-image seed, so image i depends only on the pool's key fields and i,
like any pool.

The key hashes the saliency model, CAM method, target layer, smoothing, region, fraction, the
generator and its repainting settings, the training data and the seed; each image records its
source index, mask and saliency map (provenance, see `PoolImages`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from raysweep.data import ImageDataset
from raysweep.store import PoolImages, SyntheticStore, content_key
from raysweep.synthesis.identity import Mask
from raysweep.synthesis.sampled import IMAGE_SEEDS
from raysweep.synthesis.sources import real_sources
from raysweep.training.reference import ReferenceOptions, ensure_reference_classifier


@dataclass(frozen=True)
class Masking:
    """How masks are made: the reference classifier and the CAM settings (spec `saliency:`)."""

    reference: ReferenceOptions
    reference_key: str
    method: str
    target_layer: str | None
    smoothing: float

    def fields(self) -> dict:
        return {"reference_key": self.reference_key, "method": self.method,
                "target_layer": self.target_layer, "smoothing": self.smoothing}


def inpaint_order(labels: np.ndarray, seed: int, start: int, stop: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(source indices, labels, per-image seeds) of pool images [start, stop)."""
    sources, _, seeds = real_sources(labels, seed, start, stop)
    return sources, labels[sources], seeds


def inpaint_pool_fields(generator: str, generator_key: str, weights_sha256: str,
                        inpaint_config: dict, masking: Masking, train_fingerprint: str,
                        num_classes: int, seed: int, mask: Mask) -> dict:
    """Everything an inpainted pool's images depend on (its key hashes this; `cache ls` shows it)."""
    return {"kind": "inpaint", "generator": generator, "generator_key": generator_key,
            "weights": weights_sha256, "inpaint_config": inpaint_config, **masking.fields(),
            "train_fingerprint": train_fingerprint, "num_classes": num_classes,
            "seed": int(seed),
            "mask_fraction": mask.fraction, "mask_region": mask.region,
            "order": "source = classes interleaved; variant = i // n_train",
            "image_seeds": IMAGE_SEEDS}


def inpaint_pool_key(fields: dict) -> str:
    return content_key(fields)


class Repainter:
    """Saliency maps of the whole training split (computed once), masks and repainting."""

    def __init__(self, generator, train: ImageDataset, masking: Masking, store: SyntheticStore):
        self.generator = generator
        self.train = train
        self.masking = masking
        self.reference = ensure_reference_classifier(store, train, masking.reference,
                                                     log=lambda _m: None)
        self._maps: np.ndarray | None = None

    def maps(self) -> np.ndarray:
        from raysweep.saliency import saliency_maps

        if self._maps is None:
            self._maps = saliency_maps(self.reference, self.train.images, self.train.labels,
                                       self.masking.method, self.masking.target_layer)
        return self._maps

    def repaint(self, sources: np.ndarray, seeds: np.ndarray, mask: Mask) -> PoolImages:
        from raysweep.saliency import mask_from_cam

        maps = self.maps()[sources]
        masks = np.stack([mask_from_cam(cam, mask.fraction, mask.region,
                                        np.random.default_rng(int(s)),
                                        smooth=self.masking.smoothing)
                          for cam, s in zip(maps, seeds)])
        labels = self.train.labels[sources]
        images = self.generator.sample_inpaint(self.train.images[sources], masks, labels, seeds)
        return PoolImages(images, labels, seeds, sources=sources, masks=masks,
                          saliency=np.round(maps * 255).astype(np.uint8))
