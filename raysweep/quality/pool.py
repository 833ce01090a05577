"""All quality metrics of one synthetic pool against the real training split, per class and
over all classes, as one table (a row per class plus an `all` row)."""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd
import torch

from raysweep.quality.distribution import distribution_metrics
from raysweep.quality.similarity import nearest_real_ssim

# A feature network: uint8 images (N,H,W,C) -> features (N,D).
FeatureFn = Callable[[np.ndarray], torch.Tensor]


def pool_quality(real_images: np.ndarray, real_labels: np.ndarray, synthetic_images: np.ndarray,
                 synthetic_labels: np.ndarray, features: FeatureFn, class_names: list[str],
                 seed: int = 0) -> pd.DataFrame:
    """Fréchet distance, KID, precision, recall and nearest-real SSIM per class and overall.

    Features are extracted once per image set; classes with fewer than two images on either
    side get no distribution metrics (NaN) but still their SSIM.
    """
    real_features, synthetic_features = features(real_images), features(synthetic_images)
    ssim = np.full(len(synthetic_images), np.nan, np.float32)
    rows = []
    for index, name in enumerate(class_names):
        real_rows = np.flatnonzero(real_labels == index)
        synthetic_rows = np.flatnonzero(synthetic_labels == index)
        row = {"class": name, "real_images": len(real_rows), "synthetic_images": len(synthetic_rows)}
        if len(real_rows) >= 2 and len(synthetic_rows) >= 2:
            row.update(distribution_metrics(real_features[real_rows],
                                            synthetic_features[synthetic_rows], seed))
        if len(real_rows) and len(synthetic_rows):
            ssim[synthetic_rows] = nearest_real_ssim(real_images[real_rows],
                                                     synthetic_images[synthetic_rows])
            row["ssim_nearest_real"] = float(ssim[synthetic_rows].mean())
        rows.append(row)
    overall = {"class": "all", "real_images": len(real_images),
               "synthetic_images": len(synthetic_images),
               **distribution_metrics(real_features, synthetic_features, seed),
               "ssim_nearest_real": float(np.nanmean(ssim))}
    return pd.DataFrame(rows + [overall])
