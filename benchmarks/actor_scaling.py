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

from raysweep.store import SyntheticStore
from raysweep.synthesis.identity import PoolId
from raysweep.synthesis.service import SourceSetup, start_service

DATASET = {"name": "mnist5k", "options": {}, "per_class": 50, "val_fraction": 0.1,
           "test_fraction": 0.2, "split_seed": 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=20, help="DDPM training steps (speed only)")
    parser.add_argument("--chunk-size", type=int, default=125)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    ray.init(num_cpus=cores, include_dashboard=False)
    store = SyntheticStore(tempfile.mkdtemp(prefix="raysweep-scaling-"))
    options = {"steps": args.steps}
    configurations = [(1, 1), (1, cores), (2, 1)] if cores >= 2 else [(1, 1)]
    for seed, (actors, cpus) in enumerate(configurations):
        setup = SourceSetup("ddpm", DATASET, "ddpm", options, 0, actors, cpus, 0,
                            args.chunk_size)
        pool = PoolId("ddpm", seed)
        service = start_service(setup, [pool], store, f"scaling-{seed}")
        ray.get(service.ensure.remote(pool, 1, "warm-up"))  # actors started and loaded
        start = time.perf_counter()
        result = ray.get(service.ensure.remote(pool, args.images + 1, "timed"))
        seconds = time.perf_counter() - start
        print(f"ddpm: {actors} actor(s) x {cpus} CPU: {result['generated']} images in "
              f"{seconds:.1f}s = {result['generated'] / seconds:.1f} images/s")
        ray.get(service.release_actors.remote())
    ray.shutdown()


if __name__ == "__main__":
    main()
