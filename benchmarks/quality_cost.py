"""What the quality metrics add per 1,000-image pool on the CPU: the reference classifier's
features, Fréchet distance/KID/precision/recall and nearest-real SSIM per class and overall,
and CAS (a classifier trained on the pool alone), on mnist5k with 50 real images per class (the
ratio.yaml setting). Real test images stand in for the pool: the cost does not depend on what
the images show.

    python benchmarks/quality_cost.py [--inception]

`--inception` also times Inception v3 (FID) features, as `synthesis.inception_weights` gives
them, on randomly initialised weights in torch-fidelity's layout: the cost does not depend on
the weights' values either, and nothing is downloaded."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from raysweep.data import create_dataset, split_dataset  # noqa: E402
from raysweep.quality import classification_accuracy_score, pool_quality  # noqa: E402
from raysweep.training.reference import ensure_reference_classifier  # noqa: E402
from raysweep.store.store import SyntheticStore  # noqa: E402


def random_inception_weights(directory: Path) -> Path:
    """torchvision's Inception v3 layers with torch-fidelity's 1008-way head, random values."""
    import torch
    import torchvision

    state = torchvision.models.inception_v3(weights=None, aux_logits=False,
                                            init_weights=True).state_dict()
    state["fc.weight"], state["fc.bias"] = torch.randn(1008, 2048) * 0.01, torch.zeros(1008)
    path = directory / "inception-random.pth"
    torch.save(state, path)
    return path


def run(inception: bool) -> None:
    splits = split_dataset(create_dataset("mnist5k"), val_fraction=0.1, test_fraction=0.2,
                           per_class=50, seed=0)
    pool_images, pool_labels = splits.test.images[:1000], splits.test.labels[:1000]
    # The store the README's sweeps use: a second run reuses the trained reference classifier.
    start = time.perf_counter()
    reference = ensure_reference_classifier(SyntheticStore(".raysweep/cache"), splits.train,
                                            val=splits.val, log=lambda _: None)
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
    print(f"per 1,000-image pool: CAS (5 epochs) {cas:.1f} s; metrics + CAS {metrics + cas:.1f} s",
          flush=True)
    if inception:
        from raysweep.quality.inception import inception_features

        with tempfile.TemporaryDirectory() as directory:
            features = inception_features(random_inception_weights(Path(directory)))
        start = time.perf_counter()
        pool_quality(splits.train.images, splits.train.labels, pool_images, pool_labels,
                     features, list(splits.train.class_names))
        print(f"per 1,000-image pool: the same metrics on Inception v3 features "
              f"{time.perf_counter() - start:.1f} s (500 real + 1,000 pool images at 299x299)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inception", action="store_true",
                        help="also time Inception v3 (FID) features")
    run(parser.parse_args().inception)
