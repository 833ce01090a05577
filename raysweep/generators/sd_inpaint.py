"""`sd-inpaint`: pretrained Stable Diffusion repaints masked regions of real images (diffusers).

The loading rules, options and prompts are those of every Stable Diffusion generator
(`sd_common.py`); this one loads a `StableDiffusionInpaintPipeline`.
`sample_inpaint(images, masks, labels, seeds)` repaints the masked pixels of real training
images (mask 1 = repaint; the masks come from a saliency map) with their class's prompt and
returns images of the sources' own shape. The pipeline's output is pasted back into the source
through the mask, so pixels outside the mask are the source's exactly: the pipeline itself
re-encodes the whole image through the VAE, which would otherwise blur the pixels it was asked
to keep, and `mask_fraction` would not mean what it says.

Determinism: image i's initial latents and its VAE posterior sample come from
`torch.Generator().manual_seed(seeds[i])` on the CPU, so image i depends only on the weights,
the options, `images[i]`, `masks[i]`, `labels[i]` and `seeds[i]`.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from raysweep.generators.base import register_generator, register_to_config
from raysweep.generators.sd_common import StableDiffusionGenerator, _rgb_sources, _to_data_shape


def _rgb_to_gray(rgb: torch.Tensor) -> torch.Tensor:
    """uint8 (..., 3) -> uint8 (..., 1) with Pillow's integer formula for convert("L"), so the
    device path gives the same pixels as the PIL path."""
    r, g, b = rgb.to(torch.int32).unbind(-1)
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).to(torch.uint8)[..., None]


def _paste_back(painted: torch.Tensor, sources: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Pipeline output (N, 3, h, w) in [0, 1] -> the sources with their masked pixels replaced.

    Where the pipeline ran at the sources' size, everything stays on the pipeline's device and
    only the uint8 result crosses to the host; otherwise the output is resized with Lanczos on
    the host, as before.
    """
    height, width, channels = sources.shape[1:]
    if tuple(painted.shape[-2:]) == (height, width):
        # The same float32 rounding as the host path (np.round and torch.round: half to even).
        pixels = painted.float().permute(0, 2, 3, 1).mul(255.0).round().clamp(0, 255)
        pixels = pixels.to(torch.uint8)
        if channels == 1:
            pixels = _rgb_to_gray(pixels)
    else:
        host = painted.float().permute(0, 2, 3, 1).cpu().numpy()
        pixels = torch.from_numpy(_to_data_shape(host, height, width, channels))
    device = pixels.device
    alpha = torch.from_numpy(masks).to(device, non_blocking=True)[..., None]
    source = torch.from_numpy(sources).to(device, non_blocking=True).float()
    blended = alpha * pixels.float() + (1.0 - alpha) * source
    return blended.round().clamp(0, 255).to(torch.uint8).cpu().numpy()


@register_generator("sd-inpaint")
class StableDiffusionInpaintGenerator(StableDiffusionGenerator):
    """Pretrained Stable Diffusion inpainting (diffusers `StableDiffusionInpaintPipeline`).

    Options: those of `StableDiffusionGenerator` (`model`: an inpainting UNet with 9 input
    channels, or a plain text-to-image one, which diffusers also inpaints with; `steps`:
    diffusers runs about `strength * steps` of them; `height`/`width`: sources and masks are
    resized to them, and the results back to the sources' size), and:

    Args:
        strength: how far the masked region is noised before denoising: 1.0 ignores what was
            there; lower values keep more of the source's structure under the mask.
    """

    pipeline_class = "StableDiffusionInpaintPipeline"
    default_model = "stable-diffusion-v1-5/stable-diffusion-inpainting"
    state_file = "raysweep_sd_inpaint.json"
    needs_sources = ("inpainting needs source images and masks; call "
                     "sample_inpaint(images, masks, labels, seeds) instead of sample(labels, seeds)")
    families = ("inpaint",)  # it repaints masks only (see synthesis.kinds)

    @register_to_config
    def __init__(self, *, strength: float = 1.0, **options) -> None:
        if not 0.0 < float(strength) <= 1.0:
            raise ValueError(f"{self.name}: strength must be in (0, 1], got {strength!r}")
        super().__init__(**options)

    @torch.no_grad()
    def sample_inpaint(self, images: np.ndarray, masks: np.ndarray, labels: np.ndarray,
                       seeds: np.ndarray) -> np.ndarray:
        """Repaint the masked pixels of each source image with its class's prompt.

        Args:
            images: the sources, uint8 (N, H, W, C), C = 1 or 3.
            masks: float in [0, 1] or bool, (N, H, W); 1 = repaint. The pipeline repaints where
                mask >= 0.5; the result is blended back into the source with the mask itself.
            labels: class per image (fills the prompt template).
            seeds: seed per image.

        Returns:
            uint8 (N, H, W, C): the sources with their masked pixels repainted.
        """
        # 1. Check inputs.
        images = np.asarray(images)
        masks = np.asarray(masks)
        labels, seeds = self._check_request("sample_inpaint", labels, seeds, images)
        if masks.shape != images.shape[:3]:
            raise ValueError(f"{self.name}.sample_inpaint: masks must have shape (N, H, W) = "
                             f"{images.shape[:3]}, got {masks.shape}")
        masks = masks.astype(np.float32)
        if masks.size and (masks.min() < 0.0 or masks.max() > 1.0):
            raise ValueError(f"{self.name}.sample_inpaint: masks must lie in [0, 1], got "
                             f"[{masks.min()}, {masks.max()}]")
        if labels.size == 0:
            return images.copy()
        out = []
        for chunk in self._batches(labels.size):
            # 2. Sources as RGB and masks as "L" images; the pipeline resizes both.
            mask_images = [Image.fromarray(np.round(mask * 255.0).astype(np.uint8))
                           for mask in masks[chunk]]
            # 3. Inpaint.
            painted = self._run_pipeline(
                labels[chunk], seeds[chunk], output_type="pt", image=_rgb_sources(images[chunk]),
                mask_image=mask_images, height=self.height, width=self.width,
                strength=self.strength)
            # 4. Back to the sources' shape, pasted into the sources through the masks (on the
            #    pipeline's device when no resize is needed).
            out.append(_paste_back(painted, images[chunk], masks[chunk]))
        return np.concatenate(out)
