"""What the quality metrics add per 1,000-image pool on the CPU: the reference classifier's
features, Fréchet distance/KID/precision/recall and nearest-real SSIM per class and overall,
and CAS (a classifier trained on the pool alone), on mnist5k with 50 real images per class (the
ratio.yaml setting). Real test images stand in for the pool: the cost does not depend on what
the images show."""

from __future__ import annotations

import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from raysweep.data import create_dataset, split_dataset  # noqa: E402
from raysweep.quality import classification_accuracy_score, pool_quality  # noqa: E402
from raysweep.quality.reference import sweep_reference  # noqa: E402
from raysweep.synthesis.store import SyntheticStore  # noqa: E402


def run() -> None:
    splits = split_dataset(create_dataset("mnist5k"), val_fraction=0.1, test_fraction=0.2,
                           per_class=50, seed=0)
    pool_images, pool_labels = splits.test.images[:1000], splits.test.labels[:1000]
    # The store the README's sweeps use: a second run reuses the trained reference classifier.
    start = time.perf_counter()
    reference = sweep_reference(SyntheticStore(".raysweep/cache"), splits, log=lambda _: None)
    fit = time.perf_counter() - start
    print(f"reference classifier: {fit:.1f} s ({'loaded' if reference.reused else 'trained'}; "
          f"trained once per dataset, then cached)", flush=True)
    start = time.perf_counter()
    pool_quality(splits.train.images, splits.train.labels, pool_images, pool_labels,
                 reference.features, list(splits.train.class_names))
    metrics = time.perf_counter() - start
    print(f"per 1,000-image pool: distribution metrics + SSIM per class {metrics:.1f} s", flush=True)
    start = time.perf_counter()
    classification_accuracy_score(pool_images, pool_labels, splits.val.images, splits.val.labels,
                                  10, epochs=5)
    cas = time.perf_counter() - start
    print(f"per 1,000-image pool: CAS (5 epochs) {cas:.1f} s; metrics + CAS {metrics + cas:.1f} s")


if __name__ == "__main__":
    run()
