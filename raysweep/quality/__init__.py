"""How good are the synthetic images themselves, per pool and per class.

- `distribution.py`: Fréchet distance and KID (torchmetrics) and precision/recall (k-NN
  manifolds) between real and synthetic features of any offline feature network.
- `similarity.py`: SSIM of each synthetic image to its nearest real image of the same class.
- `cas.py`: Classification Accuracy Score, a classifier trained on synthetic images only and
  tested on the real test split.
- `pool.py`: all of them for one pool, per class and overall, as one table.
"""

from raysweep.quality.cas import classification_accuracy_score
from raysweep.quality.distribution import distribution_metrics
from raysweep.quality.pool import pool_quality
from raysweep.quality.similarity import nearest_real_ssim

__all__ = ["classification_accuracy_score", "distribution_metrics", "nearest_real_ssim",
           "pool_quality"]
