"""`sd-text2img`: pretrained Stable Diffusion text-to-image, one prompt per class (diffusers).

The loading rules, options and prompts are those of every Stable Diffusion generator
(`sd_common.py`); this one loads a `StableDiffusionPipeline` and samples an image per
(label, seed) from its class's prompt, resized to the data's shape.

Determinism: image i's initial latents come from `torch.Generator().manual_seed(seeds[i])` on
the CPU, so image i depends only on the weights, the options, `labels[i]` and `seeds[i]`.
"""

from __future__ import annotations

import numpy as np
import torch

from raysweep.generators.base import register_generator
from raysweep.generators.sd_common import (STABLE_DIFFUSION_1_5, StableDiffusionGenerator,
                                           _to_data_shape)


@register_generator("sd-text2img")
class StableDiffusionText2ImgGenerator(StableDiffusionGenerator):
    """Pretrained Stable Diffusion (diffusers `StableDiffusionPipeline`) prompted per class.

    Options: those of `StableDiffusionGenerator`; `model` defaults to Stable Diffusion 1.5.
    """

    pipeline_class = "StableDiffusionPipeline"
    default_model = STABLE_DIFFUSION_1_5
    state_file = "raysweep_sd_text2img.json"

    @torch.no_grad()
    def sample(self, labels: np.ndarray, seeds: np.ndarray) -> np.ndarray:
        """One uint8 (H, W, C) image per (label, seed), at the size of the data `fit` saw."""
        labels, seeds = self._check_request("sample", labels, seeds)
        height, width, channels = self.data_shape
        out = [np.zeros((0, height, width, channels), np.uint8)]
        for chunk in self._batches(labels.size):
            images = self._run_pipeline(labels[chunk], seeds[chunk], height=self.height,
                                        width=self.width)
            out.append(_to_data_shape(images, height, width, channels))
        return np.concatenate(out)
