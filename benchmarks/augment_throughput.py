"""Images per second through each online augmentation pipeline, on CPU (or --device).

    python benchmarks/augment_throughput.py                 # batch 256, 28x28x1 and 32x32x3
    python benchmarks/augment_throughput.py --smoke-test    # one tiny pass, for CI

Prints one line per (pipeline, image shape). Each pipeline gets one warm-up call (kornia builds
its samplers lazily), then the best of `--repeats` timed calls, which shrugs off noise from
other processes on a shared machine.
"""

from __future__ import annotations

import argparse
import time

import torch

from raysweep.augment import create_augmentation, list_augmentations

PIPELINES = list_augmentations() + ["classic+cutmix", "classic+weather+cutout+mixup+label_smoothing"]
SHAPES = ((1, 28), (3, 32))


def images_per_second(name: str, channels: int, size: int, batch_size: int, repeats: int,
                      device: torch.device) -> float:
    aug = create_augmentation(name, num_classes=10, flips=True).to(device)
    x = torch.rand(batch_size, channels, size, size, device=device)
    y = torch.randint(0, 10, (batch_size,), device=device)
    aug(x, y)
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        aug(x, y)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return batch_size / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--smoke-test", action="store_true", help="batch 8, one repeat")
    args = parser.parse_args()
    batch_size, repeats = (8, 1) if args.smoke_test else (args.batch_size, args.repeats)
    device = torch.device(args.device)
    print(f"device={device} batch={batch_size} threads={torch.get_num_threads()} "
          f"torch={torch.__version__}")
    for name in PIPELINES:
        for channels, size in SHAPES:
            rate = images_per_second(name, channels, size, batch_size, repeats, device)
            print(f"{name:48s} {size}x{size}x{channels}  {rate:12,.0f} images/s")


if __name__ == "__main__":
    main()
