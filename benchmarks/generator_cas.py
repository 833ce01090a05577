"""Quality versus cost of raysweep's DDPM generator: Classification Accuracy Score (CAS).

Trains the `ddpm` generator on the low-data train split of mnist5k (``--per-class`` real images
per class), samples a class-balanced synthetic set, then trains one small CNN with one fixed
recipe three times and tests each on the real test split (1,000 images):

* on synthetic images only            -> CAS (Ravuri & Vinyals, 2019)
* on the real train split only        -> the baseline the synthetic data must approach
* on real + synthetic                 -> what augmentation buys

Every figure printed is what this run measured; wall-clock numbers depend on the machine and
on what else runs on it, so the load average and thread count are printed too.

    python benchmarks/generator_cas.py                      # the defaults for this device
                                                            # (GPU defaults on CUDA)
    python benchmarks/generator_cas.py --steps 800 --set image_size=16 --set guidance_scale=3
    python benchmarks/generator_cas.py --smoke-test         # seconds, for CI: checks it runs
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from raysweep.data import create_dataset, split_dataset
from raysweep.generators import create_generator


class SmallCNN(nn.Module):
    """Two conv blocks and a linear head: ~0.1M parameters, seconds per epoch on a CPU."""

    def __init__(self, channels: int, num_classes: int, size: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.3),
                                  nn.Linear(64 * (size // 4) ** 2, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _as_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0


def _shift(x: torch.Tensor, gen: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Random translation by up to `pad` pixels (the one augmentation of the fixed recipe)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen).tolist()
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen).tolist()
    return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])


def classifier_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                        test_y: np.ndarray, num_classes: int, *, steps: int, seed: int = 0,
                        batch_size: int = 64, lr: float = 2e-3) -> float:
    """The fixed recipe: SmallCNN, AdamW + cosine decay, `steps` batches, shift augmentation."""
    with torch.random.fork_rng(devices=[]):  # dropout draws from the global RNG: seed it here
        torch.manual_seed(seed)
        return _train_and_test(train_x, train_y, test_x, test_y, num_classes, steps=steps,
                               seed=seed, batch_size=batch_size, lr=lr)


def _train_and_test(train_x, train_y, test_x, test_y, num_classes, *, steps, seed, batch_size,
                    lr) -> float:
    gen = torch.Generator().manual_seed(seed)
    model = SmallCNN(train_x.shape[-1], num_classes, train_x.shape[1])
    x, y = _as_tensor(train_x), torch.from_numpy(np.asarray(train_y).astype(np.int64))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    model.train()
    for _ in range(steps):
        index = torch.randint(0, x.shape[0], (batch_size,), generator=gen)
        loss = F.cross_entropy(model(_shift(x[index], gen)), y[index], label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    correct = 0
    with torch.no_grad():
        tx = _as_tensor(test_x)
        for start in range(0, tx.shape[0], 500):
            pred = model(tx[start:start + 500]).argmax(1).numpy()
            correct += int((pred == test_y[start:start + 500]).sum())
    return correct / len(test_y)


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=None,
                        help="generator training steps (default: the generator's default)")
    parser.add_argument("--per-class", type=int, default=50,
                        help="real training images per class (low-data regime)")
    parser.add_argument("--synthetic", type=int, default=1000,
                        help="synthetic images to sample, class-balanced")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="generator hyperparameter override, JSON value (repeatable), "
                             "e.g. --set image_size=16 --set 'block_out_channels=[16,32,64]'")
    parser.add_argument("--classifier-steps", type=int, default=600,
                        help="batches of 64 for each classifier (the same for every training set)")
    parser.add_argument("--seed", type=int, default=0, help="split, generator and classifier seed")
    parser.add_argument("--classifier-seeds", type=int, default=1,
                        help="train each classifier with this many seeds and print the mean "
                             "(CAS moves by about a point between classifier seeds)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's own choice)")
    parser.add_argument("--resolution-check", action="store_true",
                        help="also train on the real split passed through the generator's "
                             "resolution and back (the ceiling that resolution allows)")
    parser.add_argument("--grid", default=None, help="write a PNG grid of samples here")
    parser.add_argument("--json", default=None, help="append the measured figures to this file")
    parser.add_argument("--smoke-test", action="store_true",
                        help="tiny model, few steps, few images: checks the script runs")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key.strip()] = _parse_value(value)
    if args.smoke_test:
        overrides = {"block_out_channels": [8, 16], "image_size": 8, "sample_steps": 2,
                     "batch_size": 16, **overrides}
        args.steps = args.steps or 3
        args.synthetic = min(args.synthetic, 20)
        args.classifier_steps = min(args.classifier_steps, 5)
    if args.steps is not None:
        overrides["steps"] = args.steps

    splits = split_dataset(create_dataset("mnist5k"), val_fraction=0.1, test_fraction=0.2,
                           per_class=args.per_class, seed=args.seed)
    train, test = splits.train, splits.test
    k = train.num_classes
    generator = create_generator("ddpm", **overrides)
    config = generator.config()
    print(f"# machine: {os.cpu_count()} cpus, torch threads {torch.get_num_threads()}, "
          f"load avg {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"# data: mnist5k train {len(train)} ({args.per_class}/class), test {len(test)}")
    print(f"# ddpm config: {json.dumps(config, sort_keys=True)}", flush=True)

    started = time.perf_counter()
    cpu_started = time.process_time()
    generator.fit(train.images, train.labels, k, seed=args.seed,
                  progress=lambda msg: print(f"#   {msg}", flush=True))
    train_s = time.perf_counter() - started
    train_cpu = time.process_time() - cpu_started

    labels = np.arange(args.synthetic, dtype=np.int64) % k
    seeds = np.arange(args.synthetic, dtype=np.int64)
    started = time.perf_counter()
    synthetic = generator.sample(labels, seeds)
    sample_s = time.perf_counter() - started
    if args.grid:
        _write_grid(args.grid, synthetic, labels, k)

    def acc(x, y):
        runs = [classifier_accuracy(x, y, test.images, test.labels, k,
                                    steps=args.classifier_steps, seed=args.seed + i)
                for i in range(args.classifier_seeds)]
        return float(np.mean(runs)), runs

    def fmt(value):
        mean, runs = value
        if len(runs) == 1:
            return f"{mean:.3f}"
        return f"{mean:.3f} (classifier seeds: {', '.join(f'{r:.3f}' for r in runs)})"

    results = {"train_minutes": train_s / 60, "train_cpu_minutes": train_cpu / 60,
               "sample_seconds": sample_s, "images_per_second": args.synthetic / sample_s}
    print(f"ddpm training: {train_s / 60:.2f} min wall ({train_cpu / 60:.2f} min cpu), "
          f"{config['steps']} steps, final loss {generator.last_losses['loss']:.4f}")
    print(f"sampling: {sample_s:.1f} s for {args.synthetic} images "
          f"({args.synthetic / sample_s:.1f} images/s, {config['sample_steps']} steps, "
          f"guidance {config['guidance_scale']})", flush=True)
    results["cas"] = acc(synthetic, labels)
    print(f"CAS (train on {args.synthetic} synthetic only, test on {len(test)} real): "
          f"{fmt(results['cas'])}", flush=True)
    results["real_only"] = acc(train.images, train.labels)
    print(f"real only ({len(train)} real): {fmt(results['real_only'])}", flush=True)
    results["real_plus_synthetic"] = acc(np.concatenate([train.images, synthetic]),
                                         np.concatenate([train.labels, labels]))
    print(f"real + synthetic ({len(train)} + {args.synthetic}): "
          f"{fmt(results['real_plus_synthetic'])}", flush=True)
    if args.resolution_check:
        size = generator.model_size
        from raysweep.data.tensors import to_nchw, to_uint8_nhwc

        low = to_uint8_nhwc(to_nchw(train.images, size, (-1.0, 1.0)), *train.images.shape[1:3])
        results["real_at_model_resolution"] = acc(low, train.labels)
        print(f"real only at the generator's {size}x{size} and back: "
              f"{fmt(results['real_at_model_resolution'])}")
    print(f"# load avg after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if args.json:
        with open(args.json, "a") as handle:
            handle.write(json.dumps({"config": config, "per_class": args.per_class,
                                     "synthetic": args.synthetic, **results}) + "\n")
    return 0


def _write_grid(path: str, images: np.ndarray, labels: np.ndarray, k: int) -> None:
    from PIL import Image

    rows = [images[labels == c][:10] for c in range(k)]
    cols = min(len(r) for r in rows)
    if cols == 0:
        return
    grid = np.concatenate([np.concatenate(list(r[:cols]), axis=1) for r in rows], axis=0)
    Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(path)


if __name__ == "__main__":
    raise SystemExit(main())
