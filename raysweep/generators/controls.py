"""`blur` and `erase`: non-generative controls for inpainting, on the same masks.

A repainted pool is only interesting next to what the same mask does without a generative
model: `blur` replaces the masked pixels by a Gaussian blur of the image, `erase` by a flat
fill. Both take the same `sample_inpaint(images, masks, labels, seeds)` call as `ddpm` and
`sd-inpaint`, so a sweep compares them on the augmentation axis. Nothing is trained; `fit`
records the data shape so the store can key and reload them like any generator.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from scipy.ndimage import gaussian_filter

from raysweep.generators.base import BaseGenerator, register_generator, register_to_config


class _MaskControl(BaseGenerator):
    """What both controls share: no training, a tiny saved state, the input checks."""

    state_file = "raysweep_control.json"
    needs_sources = ("a control needs source images and masks; call "
                     "sample_inpaint(images, masks, labels, seeds)")
    families = ("inpaint",)  # it repaints masks only (see synthesis.kinds)

    def fit(self, images: np.ndarray, labels: np.ndarray, num_classes: int, *, seed: int,
            progress: Callable[[str], None] | None = None) -> None:
        self.data_shape = tuple(int(s) for s in np.asarray(images).shape[1:])

    def _save_state(self, directory: str) -> dict[str, Any]:
        return {"data_shape": list(self.data_shape)}

    def _load_state(self, directory: str, state: dict[str, Any]) -> None:
        self.data_shape = tuple(state["data_shape"])

    def inpaint_config(self) -> dict[str, Any]:
        return self.config()

    def sample_inpaint(self, images: np.ndarray, masks: np.ndarray, labels: np.ndarray,
                       seeds: np.ndarray) -> np.ndarray:
        """The sources with their masked pixels (mask 1) replaced by `_fill`."""
        images = np.asarray(images)
        masks = np.asarray(masks).astype(np.float32)
        if images.ndim != 4 or images.dtype != np.uint8 or masks.shape != images.shape[:3]:
            raise ValueError(f"{self.name}.sample_inpaint: need uint8 images (N, H, W, C) and "
                             f"masks (N, H, W), got {images.dtype} {images.shape} and "
                             f"{masks.shape}")
        source = images.astype(np.float32)
        alpha = masks[..., None]
        return np.clip(np.round(alpha * self._fill(source) + (1 - alpha) * source),
                       0, 255).astype(np.uint8)


@register_generator("blur")
class BlurControl(_MaskControl):
    """Masked pixels become a Gaussian blur of the image.

    Args:
        sigma: blur standard deviation in pixels.
    """

    @register_to_config
    def __init__(self, *, sigma: float = 3.0) -> None:
        if float(sigma) <= 0:
            raise ValueError(f"blur: sigma must be > 0, got {sigma!r}")

    def _fill(self, source: np.ndarray) -> np.ndarray:
        return gaussian_filter(source, sigma=(0, self.sigma, self.sigma, 0), mode="nearest")


@register_generator("erase")
class EraseControl(_MaskControl):
    """Masked pixels become one flat value.

    Args:
        fill: "mean" (each image's mean colour) or a grey level in [0, 1].
    """

    @register_to_config
    def __init__(self, *, fill: float | str = "mean") -> None:
        if fill != "mean" and not (isinstance(fill, (int, float)) and 0 <= fill <= 1):
            raise ValueError(f"erase: fill must be 'mean' or a number in [0, 1], got {fill!r}")

    def _fill(self, source: np.ndarray) -> np.ndarray:
        if self.fill == "mean":
            return np.broadcast_to(source.mean(axis=(1, 2), keepdims=True), source.shape)
        return np.full_like(source, 255.0 * float(self.fill))
