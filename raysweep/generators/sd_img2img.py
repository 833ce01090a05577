"""`sd-img2img`: pretrained Stable Diffusion varies real images toward a class (diffusers).

The loading rules, options and prompts are those of every Stable Diffusion generator
(`sd_common.py`); this one loads a `StableDiffusionImg2ImgPipeline` (plain text-to-image
weights, Stable Diffusion 1.5 by default). `sample_img2img(images, labels, seeds, strength)`
encodes each real source, noises its latents to `strength` of the schedule and denoises them
with the target class's prompt (SDEdit, Meng et al. 2022, as DA-Fusion and Diff-Mix use it);
the pipeline runs int(strength * steps) of the scheduler's steps, at least one. Sources are
resized to the generation size (`height` x `width`, else the pipeline's default) and the
variants back to the sources' shape.

Determinism: image i's VAE posterior sample and its noise come from
`torch.Generator().manual_seed(seeds[i])` on the CPU, so variant i depends only on the weights,
the options, `images[i]`, `labels[i]`, `seeds[i]` and the strength.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from raysweep.generators.base import denoising_steps, register_generator
from raysweep.generators.sd_common import (STABLE_DIFFUSION_1_5, StableDiffusionGenerator,
                                           _rgb_sources, _to_data_shape)


@register_generator("sd-img2img")
class StableDiffusionImg2ImgGenerator(StableDiffusionGenerator):
    """Pretrained Stable Diffusion image-to-image (diffusers `StableDiffusionImg2ImgPipeline`).

    Options: those of `StableDiffusionGenerator`; `model` defaults to Stable Diffusion 1.5.
    """

    pipeline_class = "StableDiffusionImg2ImgPipeline"
    default_model = STABLE_DIFFUSION_1_5
    state_file = "raysweep_sd_img2img.json"
    needs_sources = ("image-to-image needs source images; call "
                     "sample_img2img(images, labels, seeds, strength) instead of "
                     "sample(labels, seeds)")
    families = ("img2img",)  # it varies real images only (see synthesis.kinds)

    def img2img_config(self) -> dict[str, Any]:
        """What changes `sample_img2img`'s output with the strength (hashed into img2img pool
        keys): the scheduler and its steps, and the guidance; every other option is in
        `config()`."""
        return {"scheduler": self.scheduler, "steps": self.steps,
                "guidance_scale": self.guidance_scale}

    @torch.no_grad()
    def sample_img2img(self, images: np.ndarray, labels: np.ndarray, seeds: np.ndarray,
                       strength: float) -> np.ndarray:
        """Vary each source image toward a class's prompt.

        Args:
            images: the sources, uint8 (N, H, W, C), C = 1 or 3.
            labels: the class each variant is denoised toward (fills the prompt template).
            seeds: seed per image.
            strength: in (0, 1]: how far the source's latents are noised; the pipeline runs
                int(strength * steps) of its steps (at least one).

        Returns:
            uint8 (N, H, W, C): one variant per source, at the sources' shape.
        """
        # 1. Check inputs.
        images = np.asarray(images)
        labels, seeds = self._check_request("sample_img2img", labels, seeds, images)
        run = denoising_steps(self.steps, strength)
        # diffusers runs int(strength * steps) steps; asking for run + 0.5 of them makes that
        # exactly `run` whatever the float rounding, and at least one at tiny strengths.
        pipeline_strength = 1.0 if run == self.steps else (run + 0.5) / self.steps
        height, width, channels = images.shape[1:]
        generation_height, generation_width = self._generation_size()
        out = [np.zeros((0, height, width, channels), np.uint8)]
        for chunk in self._batches(labels.size):
            # 2. Sources as RGB at the generation size; the pipeline encodes them.
            sources = _rgb_sources(images[chunk], (generation_width, generation_height))
            # 3. Noise to the strength and denoise toward the target classes.
            variants = self._run_pipeline(labels[chunk], seeds[chunk], image=sources,
                                          strength=pipeline_strength)
            # 4. Back to the sources' shape.
            out.append(_to_data_shape(variants, height, width, channels))
        return np.concatenate(out)
