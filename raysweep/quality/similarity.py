"""SSIM of each synthetic image to its nearest real image (torchmetrics' SSIM).

Seed 001 averaged SSIM over every real/synthetic pair, which rates a perfect copy of one real
image as dissimilar to all the others. The nearest real image answers the useful questions
instead: does the image look like some real one (high), or is it a near-copy (≈ 1)?
"""

from __future__ import annotations

import numpy as np
from torchmetrics.functional.image import structural_similarity_index_measure

from raysweep.data.tensors import to_nchw


def nearest_real_ssim(real: np.ndarray, synthetic: np.ndarray, batch: int = 4096) -> np.ndarray:
    """For each synthetic image, the highest SSIM to any real image (uint8 N×H×W×C, same size)."""
    real_t, synthetic_t = to_nchw(real), to_nchw(synthetic)
    kernel = min(11, real_t.shape[-1] - (1 - real_t.shape[-1] % 2))  # odd, at most the image
    best = np.empty(len(synthetic_t), np.float32)
    pairs_per_image = len(real_t)
    per_chunk = max(1, batch // pairs_per_image)
    for start in range(0, len(synthetic_t), per_chunk):
        chunk = synthetic_t[start:start + per_chunk]
        preds = chunk.repeat_interleave(pairs_per_image, dim=0)
        target = real_t.repeat(len(chunk), 1, 1, 1)
        scores = structural_similarity_index_measure(preds, target, data_range=1.0,
                                                     kernel_size=kernel, reduction="none")
        best[start:start + len(chunk)] = scores.view(len(chunk), pairs_per_image).amax(1).numpy()
    return best
