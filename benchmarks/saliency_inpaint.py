"""Saliency maps/s and repainted images/s on this machine's CPU (mnist5k, 50 images per class).

Trains (or reuses, from --store) the default reference classifier and a DDPM, then times:
saliency maps for each CAM method, masks, and repainting with `ddpm` (RePaint, default and
mask.yaml settings), `blur` and `erase`.

    python benchmarks/saliency_inpaint.py [--store DIR] [--images 200] [--threads 1]
        [--ddpm-steps N] [--smoke-test]

Speed depends on the architectures, not on how long they trained: `--ddpm-steps 5` times the
default UNet without waiting for its training (the images are then noise, the figures hold).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from raysweep.data import create_dataset, split_dataset
from raysweep.training.reference import ensure_reference_classifier
from raysweep.saliency import list_cam_methods, mask_from_cam, saliency_maps
from raysweep.synthesis.fitting import ensure_generator
from raysweep.store.store import SyntheticStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=None, help="reuse trained models from this store")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ddpm-steps", type=int, default=None,
                        help="DDPM training steps (default: the generator's own)")
    parser.add_argument("--smoke-test", action="store_true", help="tiny models, a few images")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    store = SyntheticStore(args.store or tempfile.mkdtemp(prefix="raysweep-saliency-"))
    splits = split_dataset(create_dataset("mnist5k"), val_fraction=0.1, test_fraction=0.2,
                           per_class=50, seed=0)
    train = splits.train
    reference_options = {"epochs": 1} if args.smoke_test else {}
    ddpm_options = {"steps": 5} if args.smoke_test else \
        ({"steps": args.ddpm_steps} if args.ddpm_steps else {})
    n = 20 if args.smoke_test else args.images
    reference = ensure_reference_classifier(store, train, reference_options, val=splits.val)
    print(f"reference classifier: {reference.options.backbone}, fit {reference.fit_seconds:.0f}s "
          f"(reused={reference.reused}), val accuracy {reference.val_accuracy:.3f}")
    images, labels = train.images[:n], train.labels[:n]
    maps = None
    for method in list_cam_methods():
        start = time.perf_counter()
        result = saliency_maps(reference, images, labels, method)
        seconds = time.perf_counter() - start
        maps = result if method == "gradcam" else maps
        print(f"saliency {method:10s}: {n / seconds:7.1f} maps/s ({n} images, {args.threads} "
              f"thread(s))")
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    masks = np.stack([mask_from_cam(cam, 0.35, "background", rng) for cam in maps])
    print(f"masks (background 0.35): {n / (time.perf_counter() - start):.0f} masks/s")
    seeds = np.arange(n)
    ddpm = ensure_generator(store, "ddpm", ddpm_options, train, 0).generator
    for label, settings in (("ddpm RePaint defaults (20 steps, j=5, r=2)", {}),
                            ("ddpm RePaint mask.yaml (12 steps, j=4, r=2)",
                             {"repaint_steps": 12, "repaint_jump_length": 4})):
        ddpm.__dict__.update(settings)
        start = time.perf_counter()
        ddpm.sample_inpaint(images, masks, labels, seeds)
        print(f"repaint {label}: {n / (time.perf_counter() - start):.1f} images/s")
    for name in ("blur", "erase"):
        control = ensure_generator(store, name, {}, train, 0).generator
        start = time.perf_counter()
        control.sample_inpaint(images, masks, labels, seeds)
        print(f"repaint {name}: {n / (time.perf_counter() - start):.0f} images/s")
    print(f"store: {store.root}")


if __name__ == "__main__":
    main()
