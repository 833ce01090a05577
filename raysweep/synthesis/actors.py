"""Generator actors: each loads one generator once and serves image requests for the whole sweep.

Ray's `num_gpus=0.25` is bookkeeping only, so an actor on a GPU also caps its own CUDA memory
to its share (`raysweep.devices`); running out under the cap fails with a message naming the
cap, and the request is retried. An actor that dies is restarted by Ray and reloads the stored weights (it never
retrains); its in-flight request is retried, and since image i depends only on (label, seed),
the retry returns the same images.
"""

from __future__ import annotations

import os
import time

import numpy as np
import ray

from raysweep.data import ImageDataset
from raysweep.devices import GPUMemoryCapExceeded, cap_gpu_memory, explain_out_of_memory
from raysweep.synthesis.service import ensure_generator
from raysweep.synthesis.store import SyntheticStore


@ray.remote(max_restarts=-1, max_task_retries=-1)
class GeneratorActor:
    """Holds one trained generator in memory; `generate` turns (labels, seeds) into images."""

    def __init__(self, name: str, options: dict, train: ImageDataset, fit_seed: int,
                 store_root: str, threads: int, gpu_fraction: float, masking=None):
        import torch

        torch.set_num_threads(max(1, threads))
        # Ray set CUDA_VISIBLE_DEVICES to this actor's GPU: `cuda` is it, whatever its number.
        if gpu_fraction > 0 and torch.cuda.is_available():
            cap_gpu_memory(min(1.0, gpu_fraction), "cuda")
        self.name = name
        start = time.perf_counter()
        self.trained = ensure_generator(SyntheticStore(store_root), name, options, train, fit_seed,
                                        log=lambda message: print(f"[raysweep] {message}",
                                                                  flush=True))
        # An inpainting source also loads the reference classifier, once, for its masks.
        self.repainter = None
        if masking is not None:
            from raysweep.synthesis.inpaint import Repainter

            self.repainter = Repainter(self.trained.generator, train, masking,
                                       SyntheticStore(store_root))
        self.load_seconds = time.perf_counter() - start
        self.images_generated = 0
        self.generate_seconds = 0.0

    def info(self) -> dict:
        """Who this actor is and what it has done (a restart shows as a new pid)."""
        return {"pid": os.getpid(), "generator_key": self.trained.key,
                "weights_sha256": self.trained.weights_sha256, "reused": self.trained.reused,
                "fit_seconds": self.trained.fit_seconds, "load_seconds": self.load_seconds,
                "images_generated": self.images_generated,
                "inpaint_config": getattr(self.trained.generator, "inpaint_config", dict)(),
                "generate_seconds": self.generate_seconds}

    # Out of memory under the cap is retried (a neighbour's peak may have passed); image i
    # depends only on (label, seed), so a retry returns the same images.
    @ray.method(max_task_retries=3, retry_exceptions=[GPUMemoryCapExceeded])
    def generate(self, labels: np.ndarray, seeds: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        with explain_out_of_memory(f"generator actor {self.name} (pid {os.getpid()})",
                                   "lower the generator's batch_size or raise "
                                   "synthesis.gpus_per_actor"):
            images = self.trained.generator.sample(labels, seeds)
        self.generate_seconds += time.perf_counter() - start
        self.images_generated += len(labels)
        return images

    def repaint(self, sources: np.ndarray, seeds: np.ndarray, fraction: float, region: str):
        """Pool images (with provenance) repainting these training images' masks."""
        start = time.perf_counter()
        images = self.repainter.repaint(sources, seeds, fraction, region)
        self.generate_seconds += time.perf_counter() - start
        self.images_generated += len(seeds)
        return images


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class SynthesisService:
    """The one place trials ask for "the first n images of the pool for seed s".

    It answers from the store, extends a pool that is too short (never regenerates it), makes
    concurrent requests for one pool share one generation (a lock per pool), and splits the
    missing images into chunks across the generator actors. Chunks come back in any order but
    are appended in pool order, so the store only ever holds a complete prefix.
    """

    def __init__(self, store_root: str, actors: list, pools: dict, num_classes: int,
                 chunk_size: int, train_labels: np.ndarray | None = None):
        import asyncio

        self.store = SyntheticStore(store_root)
        self.actors = actors
        # Pool ids: a seed, or (seed, mask_fraction, mask_region) for inpainted pools.
        self.pools = {_pool_id(pool): value for pool, value in pools.items()}
        self.train_labels = train_labels
        self.num_classes = num_classes
        self.chunk_size = chunk_size
        self.locks = {seed: asyncio.Lock() for seed in self.pools}
        self.generated = {seed: 0 for seed in self.pools}
        self.log: list[str] = []

    async def ensure(self, seed: int, count: int, mask_fraction: float | None = None,
                     mask_region: str | None = None) -> dict:
        """Make pool `seed` (inpainted: with this mask) hold >= count images; say how many this
        call generated."""
        import asyncio

        from raysweep.synthesis.service import open_pool, pool_order
        from raysweep.synthesis.store import PoolImages

        from raysweep.synthesis.inpaint import inpaint_order

        pool = _pool_id(seed if mask_fraction is None else (seed, mask_fraction, mask_region))
        key, meta = self.pools[pool]
        async with self.locks[pool]:
            start_time = time.perf_counter()
            have = open_pool(self.store, key, meta, self.log.append)
            starts = list(range(have, count, self.chunk_size))
            wave = 2 * len(self.actors)  # bounded memory: a few chunks per actor in flight
            for first in range(0, len(starts), wave):
                chunks = [(s, min(s + self.chunk_size, count)) for s in starts[first:first + wave]]
                if mask_fraction is None:
                    orders = [pool_order(self.num_classes, int(seed), a, b) for a, b in chunks]
                    refs = [self.actors[i % len(self.actors)].generate.remote(*order)
                            for i, order in enumerate(orders)]
                    results = [PoolImages(images, *order)
                               for order, images in zip(orders, await asyncio.gather(*refs))]
                else:
                    orders = [inpaint_order(self.train_labels, int(seed), a, b) for a, b in chunks]
                    results = await asyncio.gather(*[
                        self.actors[i % len(self.actors)].repaint.remote(
                            sources, seeds, float(mask_fraction), mask_region)
                        for i, (sources, _labels, seeds) in enumerate(orders)])
                for images in results:
                    self.store.append(key, images)
            generated = max(0, count - have)
            self.generated[pool] += generated
            return {"key": key, "count": max(count, have), "generated": generated,
                    "reused": min(count, have), "seconds": time.perf_counter() - start_time}

    def stats(self) -> dict:
        return {"generated": dict(self.generated), "log": list(self.log)}


def _pool_id(pool) -> int | tuple:
    """A hashable, normalised pool id: a seed, or (seed, fraction, region)."""
    if isinstance(pool, (tuple, list)):
        return int(pool[0]), float(pool[1]), str(pool[2])
    return int(pool)


def start_synthesis(name: str, options: dict, train: ImageDataset, fit_seed: int,
                    store: SyntheticStore, seeds: list, *, actors: int, cpus_per_actor: float,
                    gpus_per_actor: float, chunk_size: int, service_name: str,
                    log=print, masking=None) -> tuple[object, list, dict]:
    """Start the generator actors (the first trains or loads, the rest load) and the service.

    `seeds` are pool ids: seeds, or (seed, mask_fraction, mask_region) when `masking` (a
    `Masking`) makes this an inpainting source. Returns the service handle, the actor handles
    and the first actor's info.
    """
    from raysweep.synthesis.service import pool_key, pool_meta

    threads = int(cpus_per_actor) if cpus_per_actor >= 1 else max(1, (os.cpu_count() or 1) // actors)
    make = GeneratorActor.options(num_cpus=cpus_per_actor, num_gpus=gpus_per_actor)
    arguments = (name, options, train, fit_seed, str(store.root), threads, gpus_per_actor,
                 masking)
    # The first actor trains (or loads) alone, so the others find the weights in the store.
    handles = [make.remote(*arguments)]
    first = ray.get(handles[0].info.remote())
    handles += [make.remote(*arguments) for _ in range(actors - 1)]
    ray.get([h.info.remote() for h in handles[1:]])
    log(f"generator {name}: {actors} actor(s) loaded, {cpus_per_actor:g} CPU and "
        f"{gpus_per_actor:g} GPU each")
    pools = {}
    for seed in seeds:
        if masking is not None:
            from raysweep.synthesis.inpaint import inpaint_pool_fields, inpaint_pool_key

            fields = inpaint_pool_fields(name, first["generator_key"], first["weights_sha256"],
                                         first["inpaint_config"], masking, train.fingerprint(),
                                         *seed)
            pools[seed] = (inpaint_pool_key(fields), fields)
            continue
        fields = (name, first["generator_key"], first["weights_sha256"], train.num_classes, seed)
        pools[seed] = (pool_key(*fields), pool_meta(*fields))
    service = SynthesisService.options(name=service_name).remote(
        str(store.root), handles, pools, train.num_classes, chunk_size,
        train.labels if masking is not None else None)
    return service, handles, first
