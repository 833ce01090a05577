"""From a saliency map to a mask of exactly `fraction` of the pixels.

`background` takes the least salient pixels, `foreground` the most salient, `random` the same
share anywhere (the control). A mask holds round(fraction x H x W) pixels: within half a pixel
of the share asked. Ranking pixels, not thresholding the map, is what makes the share exact
whatever the map's histogram; ties (flat regions of a CAM) are broken at random by `rng`.

`smooth` > 0 blurs the ranking score with a Gaussian of that sigma (pixels) before ranking, so
scattered pixels become blobs; the share stays exact because the mask still takes a fixed
number of the best-ranked pixels.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

MASK_REGIONS = ("background", "foreground", "random")


def mask_from_cam(cam: np.ndarray, fraction: float, region: str, rng: np.random.Generator,
                  smooth: float = 0.0) -> np.ndarray:
    """A bool (H, W) mask, True = repaint, covering round(fraction x H x W) pixels.

    Args:
        cam: a saliency map (H, W), higher = more important to the classifier.
        fraction: the share of pixels to mask, in [0, 1).
        region: "background", "foreground" or "random".
        rng: breaks ties and draws the random control.
        smooth: Gaussian sigma in pixels applied to the ranking score; 0 = none.
    """
    if region not in MASK_REGIONS:
        raise ValueError(f"unknown mask region {region!r}; known: {', '.join(MASK_REGIONS)}")
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"mask fraction must be in [0, 1), got {fraction!r}")
    cam = np.asarray(cam, np.float64)
    count = int(round(fraction * cam.size))
    jitter = rng.random(cam.shape)
    if region == "random":
        score = jitter
    else:
        scale = max(float(cam.max() - cam.min()), 1e-12)
        # The jitter is far below any real difference in the map: it only orders equal pixels.
        score = (cam if region == "foreground" else -cam) / scale + 1e-6 * jitter
    if smooth > 0:
        score = gaussian_filter(score, sigma=smooth, mode="nearest")
    order = np.argsort(-score, axis=None, kind="stable")
    mask = np.zeros(cam.size, bool)
    mask[order[:count]] = True
    return mask.reshape(cam.shape)
