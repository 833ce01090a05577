"""DDPM variants of real images per second (SDEdit, `sample_img2img`) against from-scratch
`sample`, with the same model in the same run.

The DDPM has ratio.yaml's generator options (600 training steps, 10 DPM-Solver++ sampling
steps) on mnist5k's 50-per-class train split. It comes from the store when `--store` holds it
(ratio.yaml's `.raysweep/cache` does after one run), else it is trained there first; throughput
does not depend on the weights, so `--steps 20` measures the same in seconds. Each variant
starts from a real training image. The four kinds of call take turns, `--repeats` rounds of
them after one warm-up round, and each figure is the median of its rounds, so that what else
runs on the machine weighs on all four alike.

    python benchmarks/img2img_throughput.py [--store .raysweep/cache] [--images 500]
    python benchmarks/img2img_throughput.py --steps 20 --images 250    # quick
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from raysweep.data import create_dataset, split_dataset
from raysweep.generators.base import denoising_steps
from raysweep.store.store import SyntheticStore
from raysweep.synthesis.fitting import ensure_generator
from raysweep.synthesis.sampled import image_seeds

STRENGTHS = (0.25, 0.5, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default=None,
                        help="store holding (or to hold) the trained DDPM; default: a temp dir")
    parser.add_argument("--steps", type=int, default=600, help="DDPM training steps")
    parser.add_argument("--sample-steps", type=int, default=10, help="DPM-Solver++ steps")
    parser.add_argument("--images", type=int, default=500, help="images per timing")
    parser.add_argument("--repeats", type=int, default=3, help="timings per figure (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    train = split_dataset(create_dataset("mnist5k"), per_class=50, seed=0).train
    store = SyntheticStore(args.store or tempfile.mkdtemp(prefix="raysweep-img2img-"))
    options = {"steps": args.steps, "sample_steps": args.sample_steps,
               "num_threads": args.threads}
    ddpm = ensure_generator(store, "ddpm", options, train, 0, log=print).generator
    index = np.arange(args.images) % len(train)
    sources, labels = train.images[index], train.labels[index]
    seeds = image_seeds(0, np.arange(args.images))
    print(f"# {os.cpu_count()} cpus, torch threads {torch.get_num_threads()}, load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}; {args.images} images per timing, "
          f"median of {args.repeats}")
    calls = {None: lambda: ddpm.sample(labels, seeds)}
    for strength in STRENGTHS:
        calls[strength] = lambda strength=strength: ddpm.sample_img2img(sources, labels, seeds,
                                                                        strength)
    seconds: dict[float | None, list[float]] = {kind: [] for kind in calls}
    for round_ in range(args.repeats + 1):
        for kind, call in calls.items():
            start = time.perf_counter()
            call()
            if round_:  # round 0 warms up (lazy imports, first allocations)
                seconds[kind].append(time.perf_counter() - start)
    rate = {kind: args.images / statistics.median(times) for kind, times in seconds.items()}
    print(f"sample (from noise, {ddpm.sample_steps} steps): {rate[None]:.1f} images/s")
    for strength in STRENGTHS:
        steps = denoising_steps(ddpm.sample_steps, strength)
        print(f"sample_img2img strength {strength:g} ({steps} of {ddpm.sample_steps} steps): "
              f"{rate[strength]:.1f} variants/s = {rate[strength] / rate[None]:.2f} x sample")
    print(f"# load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
