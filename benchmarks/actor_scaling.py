"""DDPM images/s through the synthesis service with 1 and 2 generator actors on this machine.

The DDPM has the default architecture and sampler of ratio.yaml's generator (throughput does not
depend on weight values, so it trains only a few steps). Each configuration fills a fresh pool.

    python benchmarks/actor_scaling.py [--images 1000] [--steps 20]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import ray

from raysweep.data import create_dataset, split_dataset
from raysweep.synthesis.actors import start_synthesis
from raysweep.store.store import SyntheticStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=20, help="DDPM training steps (speed only)")
    parser.add_argument("--chunk-size", type=int, default=125)
    args = parser.parse_args()
    train = split_dataset(create_dataset("mnist5k"), per_class=50, seed=0).train
    cores = os.cpu_count() or 1
    ray.init(num_cpus=cores, include_dashboard=False)
    store = SyntheticStore(tempfile.mkdtemp(prefix="raysweep-scaling-"))
    options = {"steps": args.steps}
    configurations = [(1, 1), (1, cores), (2, 1)] if cores >= 2 else [(1, 1)]
    for seed, (actors, cpus) in enumerate(configurations):
        service, handles, _ = start_synthesis(
            "ddpm", options, train, 0, store, [seed], actors=actors, cpus_per_actor=cpus,
            gpus_per_actor=0, chunk_size=args.chunk_size, service_name=f"scaling-{seed}",
            log=lambda message: None)
        start = time.perf_counter()
        result = ray.get(service.ensure.remote(seed, args.images))
        seconds = time.perf_counter() - start
        print(f"ddpm: {actors} actor(s) x {cpus} CPU: {result['generated']} images in "
              f"{seconds:.1f}s = {result['generated'] / seconds:.1f} images/s")
        for handle in handles:
            ray.kill(handle)
    ray.shutdown()


if __name__ == "__main__":
    main()
