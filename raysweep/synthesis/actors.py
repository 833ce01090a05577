"""Generator actors: each loads one generator once and serves image requests for the whole sweep.

Ray's `num_gpus=0.25` is bookkeeping only, so an actor on a GPU also caps its own CUDA memory
to its share (`raysweep.devices`); running out under the cap fails with a message naming the
cap, and the request is retried. An actor given no GPU (`gpus_per_actor: 0`) sees no CUDA device at all. An actor
that dies is restarted by Ray and reloads the stored weights (it never retrains), a bounded
number of times; its in-flight request is retried, and since image i depends only on
(label, seed), the retry returns the same images. When the restarts run out, or a wait passes
its timeout, the request fails with `SynthesisFailed`, one line saying what happened.
"""

from __future__ import annotations

import asyncio
import os
import time

import numpy as np
import ray
from ray.exceptions import GetTimeoutError, RayError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from raysweep.data import ImageDataset
from raysweep.devices import GPUMemoryCapExceeded, cap_gpu_memory, explain_out_of_memory
from raysweep.store import PoolImages, SyntheticStore
from raysweep.synthesis.identity import Mask, PoolId
from raysweep.synthesis.inpaint import inpaint_order, inpaint_pool_fields, inpaint_pool_key
from raysweep.synthesis.service import ensure_generator, pool_key, pool_meta, pool_order

# An actor killed (OOM, node lost) is restarted and its request retried this many times.
ACTOR_RESTARTS = 3
# The longest wait for an actor to start: it may train its generator first, and wait for a node.
LOAD_TIMEOUT_S = 6 * 3600.0
# The longest wait for one chunk of images from an actor, retries included.
CHUNK_TIMEOUT_S = 1800.0
# The longest wait for the service's small bookkeeping calls.
CALL_TIMEOUT_S = 120.0


class SynthesisFailed(RuntimeError):
    """Generation could not finish: actors died more often than allowed, or a wait timed out."""


@ray.remote(num_cpus=0)
class LoadLedger:
    """Counts generator loads: each actor process records one when its constructor finishes,
    so a restarted actor counts again. (Ray's own restart counts sit behind its state API,
    which needs the dashboard; sweeps run without one.)"""

    def __init__(self):
        self.pids: list[int] = []

    def loaded(self, pid: int) -> None:
        self.pids.append(pid)

    def count(self) -> int:
        return len(self.pids)


@ray.remote(max_restarts=ACTOR_RESTARTS, max_task_retries=ACTOR_RESTARTS)
class GeneratorActor:
    """Holds one trained generator in memory; `generate` turns (labels, seeds) into images."""

    def __init__(self, name: str, options: dict, train: ImageDataset, fit_seed: int,
                 store_root: str, threads: int, gpu_fraction: float, masking=None,
                 ledger=None):
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
        if ledger is not None:
            ray.get(ledger.loaded.remote(os.getpid()), timeout=CALL_TIMEOUT_S)

    def info(self) -> dict:
        """Who this actor is and what it has done (a restart shows as a new pid)."""
        import torch

        return {"pid": os.getpid(), "generator_key": self.trained.key,
                "weights_sha256": self.trained.weights_sha256, "reused": self.trained.reused,
                "fit_seconds": self.trained.fit_seconds, "load_seconds": self.load_seconds,
                "images_generated": self.images_generated,
                "generate_seconds": self.generate_seconds,
                "inpaint_config": getattr(self.trained.generator, "inpaint_config", dict)(),
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "cuda_devices": torch.cuda.device_count()}

    # Out of memory under the cap is retried (a neighbour's peak may have passed); image i
    # depends only on (label, seed), so a retry returns the same images.
    @ray.method(max_task_retries=ACTOR_RESTARTS, retry_exceptions=[GPUMemoryCapExceeded])
    def generate(self, labels: np.ndarray, seeds: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        with explain_out_of_memory(f"generator actor {self.name} (pid {os.getpid()})",
                                   "lower the generator's batch_size or raise "
                                   "synthesis.gpus_per_actor"):
            images = self.trained.generator.sample(labels, seeds)
        self.generate_seconds += time.perf_counter() - start
        self.images_generated += len(labels)
        return images

    @ray.method(max_task_retries=ACTOR_RESTARTS, retry_exceptions=[GPUMemoryCapExceeded])
    def repaint(self, sources: np.ndarray, seeds: np.ndarray, mask: Mask) -> PoolImages:
        """Pool images (with provenance) repainting these training images' masks."""
        start = time.perf_counter()
        with explain_out_of_memory(f"generator actor {self.name} (pid {os.getpid()})",
                                   "lower the generator's batch_size or raise "
                                   "synthesis.gpus_per_actor"):
            images = self.repainter.repaint(sources, seeds, mask)
        self.generate_seconds += time.perf_counter() - start
        self.images_generated += len(seeds)
        return images


@ray.remote(num_cpus=0, max_restarts=ACTOR_RESTARTS, max_task_retries=ACTOR_RESTARTS)
class SynthesisService:
    """The one place that extends pools: "the first n images of pool p" (a `PoolId`).

    It answers from the store, extends a pool that is too short (never regenerates it), makes
    concurrent requests for one pool share one generation (a lock per pool), and splits the
    missing images into chunks across the generator actors. Chunks come back in any order but
    are appended in pool order, each only where the pool still ends (another sweep may extend
    the same pool meanwhile), so the store only ever holds a complete prefix. Store reads and
    writes run in a thread, never on the actor's event loop.
    """

    def __init__(self, store_root: str, source: str, actors: list,
                 pools: dict[PoolId, tuple[str, dict]], num_classes: int, chunk_size: int,
                 chunk_timeout_s: float = CHUNK_TIMEOUT_S,
                 train_labels: np.ndarray | None = None, ledger=None):
        self.store = SyntheticStore(store_root)
        self.ledger = ledger
        self.source = source
        self.actors = actors
        # PoolId -> (content key, meta). Inpainted pools repaint training images, which
        # `train_labels` orders.
        self.pools = dict(pools)
        self.train_labels = train_labels
        self.num_classes = num_classes
        self.chunk_size = chunk_size
        self.chunk_timeout_s = chunk_timeout_s
        self.locks = {pool: asyncio.Lock() for pool in self.pools}
        self.generated = {pool: 0 for pool in self.pools}
        self.log: list[str] = []

    async def ensure(self, pool: PoolId, count: int) -> dict:
        """Make `pool` hold >= count good images; say how many this call generated.

        Reads (and checks) only the shards holding the first `count` images.

        Raises:
            SynthesisFailed: the actors died too often, were released, or timed out.
        """
        key, meta = self.pools[pool]
        async with self.locks[pool]:
            start_time = time.perf_counter()
            have = await asyncio.to_thread(self._good_prefix, key, meta, count)
            reused, generated = min(have, count), 0
            while have < count:
                if not self.actors:
                    raise SynthesisFailed(
                        f"pool {key}: {count - have} more images are needed, but the "
                        f"{self.source} actors were released once the planned pools were full")
                generated += await self._extend(key, pool, have, count)
                have = await asyncio.to_thread(self.store.count, key)
            self.generated[pool] += generated
            return {"key": key, "count": max(count, have), "generated": generated,
                    "reused": reused, "seconds": time.perf_counter() - start_time}

    async def _extend(self, key: str, pool: PoolId, have: int, count: int) -> int:
        """Generate one wave of chunks from `have` on and append them in order; images added."""
        starts = list(range(have, count, self.chunk_size))[:2 * len(self.actors)]  # bounded memory
        chunks = [(s, min(s + self.chunk_size, count)) for s in starts]
        if pool.mask is not None:
            orders = [inpaint_order(self.train_labels, pool.seed, a, b) for a, b in chunks]
            refs = [self.actors[i % len(self.actors)].repaint.remote(sources, seeds, pool.mask)
                    for i, (sources, _labels, seeds) in enumerate(orders)]
        else:
            orders = [pool_order(self.num_classes, pool.seed, a, b) for a, b in chunks]
            refs = [self.actors[i % len(self.actors)].generate.remote(*order)
                    for i, order in enumerate(orders)]
        try:
            results = await asyncio.wait_for(asyncio.gather(*refs), self.chunk_timeout_s)
        except asyncio.TimeoutError:
            raise SynthesisFailed(
                f"pool {key}: {self.source} actors made no chunk of {self.chunk_size} images "
                f"within {self.chunk_timeout_s:g}s; lower synthesis.chunk_size or check the "
                f"actors' logs") from None
        except RayError as error:
            raise SynthesisFailed(
                f"pool {key}: a {self.source} actor failed {ACTOR_RESTARTS + 1} times while "
                f"generating ({_first_line(error)}); if it ran out of memory, lower "
                f"synthesis.chunk_size or give actors more memory") from None
        added = 0
        for (start, stop), order, images in zip(chunks, orders, results):
            if not isinstance(images, PoolImages):  # class-conditional: bare images
                images = PoolImages(images, *order)
            appended = await asyncio.to_thread(self.store.append, key, images, start)
            if not appended:  # another sweep extended this pool meanwhile: recount
                break
            added += stop - start
        return added

    def _good_prefix(self, key: str, meta: dict, count: int) -> int:
        """Create the pool if new; repair it if a shard among the first `count` images is bad;
        return how many images it holds."""
        self.store.create_pool(key, meta)
        if self.store.verify(key, count):
            kept = self.store.repair(key)
            self.log.append(f"pool {key}: damaged shards found; kept the first {kept} images, "
                            f"regenerating the rest")
        return self.store.count(key)

    def release_actors(self) -> int:
        """Stop the generator actors (their GPUs go back to trials); return how many."""
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        released, self.actors = len(self.actors), []
        return released

    async def stats(self) -> dict:
        """Images generated per pool, the log, the pool keys, and how many times a generator
        was loaded (actors + restarts; None if the ledger was lost)."""
        try:
            loads = await self.ledger.count.remote() if self.ledger is not None else 0
        except RayError:  # bookkeeping only: a lost ledger must not fail a finished sweep
            loads = None
        return {"generated": dict(self.generated), "log": list(self.log),
                "keys": {pool: key for pool, (key, _) in self.pools.items()},
                "model_loads": loads}


def start_synthesis(name: str, options: dict, train: ImageDataset, fit_seed: int,
                    store: SyntheticStore, pools: list[PoolId], *, actors: int,
                    cpus_per_actor: float,
                    gpus_per_actor: float, chunk_size: int, service_name: str,
                    log=print, load_timeout_s: float = LOAD_TIMEOUT_S,
                    chunk_timeout_s: float = CHUNK_TIMEOUT_S,
                    masking=None) -> tuple[object, list, dict]:
    """Start the generator actors (the first trains or loads, the rest load) and the service.

    `name` is the generator's registry name; `pools` are the source's pools (with a mask when
    `masking`, a `Masking`, makes this an inpainting source). Every actor must report the same
    stored weights; the pools' content keys hash them. Returns the service handle, the actor
    handles and the first actor's info.

    Raises:
        SynthesisFailed: an actor did not start (it died on every attempt, or waited longer
            than `load_timeout_s` for resources or training), or actors hold different weights.
    """
    threads = int(cpus_per_actor) if cpus_per_actor >= 1 else max(1, (os.cpu_count() or 1) // actors)
    settings = {"num_cpus": cpus_per_actor, "num_gpus": gpus_per_actor}
    if gpus_per_actor == 0:  # Ray leaves CUDA_VISIBLE_DEVICES alone without a GPU: hide them
        settings["runtime_env"] = {"env_vars": {"CUDA_VISIBLE_DEVICES": ""}}
    make = GeneratorActor.options(**settings)
    # The ledger lives on the driver's node: it must outlive any worker node the sweep loses.
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    ledger = LoadLedger.options(scheduling_strategy=here).remote()
    arguments = (name, options, train, fit_seed, str(store.root), threads, gpus_per_actor,
                 masking, ledger)
    # The first actor trains (or loads) alone, so the others find the weights in the store.
    handles = [make.remote(*arguments)]
    first = _wait(handles[0].info.remote(), name, load_timeout_s,
                  f"{cpus_per_actor:g} CPU and {gpus_per_actor:g} GPU")
    handles += [make.remote(*arguments) for _ in range(actors - 1)]
    infos = [first] + [_wait(h.info.remote(), name, load_timeout_s,
                             f"{cpus_per_actor:g} CPU and {gpus_per_actor:g} GPU")
                       for h in handles[1:]]
    if len({i["weights_sha256"] for i in infos}) != 1:
        raise SynthesisFailed(f"generator {name}: its {actors} actors loaded different weights "
                              f"({', '.join(sorted({i['weights_sha256'][:12] for i in infos}))}); "
                              f"run `raysweep cache verify`")
    log(f"generator {name}: {actors} actor(s) loaded, {cpus_per_actor:g} CPU and "
        f"{gpus_per_actor:g} GPU each")
    keyed = {}
    for pool in pools:
        if pool.mask is not None:
            fields = inpaint_pool_fields(name, first["generator_key"], first["weights_sha256"],
                                         first["inpaint_config"], masking, train.fingerprint(),
                                         pool.seed, pool.mask)
            keyed[pool] = (inpaint_pool_key(fields), fields)
            continue
        fields = (name, first["generator_key"], first["weights_sha256"], train.num_classes,
                  pool.seed)
        keyed[pool] = (pool_key(*fields), pool_meta(*fields))
    service = SynthesisService.options(name=service_name).remote(
        str(store.root), name, handles, keyed, train.num_classes, chunk_size, chunk_timeout_s,
        train.labels if masking is not None else None, ledger)
    return service, handles, first


def _wait(ref, name: str, timeout_s: float, resources: str) -> dict:
    try:
        return ray.get(ref, timeout=timeout_s)
    except GetTimeoutError:
        raise SynthesisFailed(f"generator {name}: an actor did not start within {timeout_s:g}s; "
                              f"check that a node has {resources} free") from None
    except RayError as error:
        raise SynthesisFailed(f"generator {name}: an actor failed to start "
                              f"{ACTOR_RESTARTS + 1} times ({_first_line(error)})") from None


def _first_line(error: BaseException) -> str:
    """The most specific one-line cause Ray gives for a failure."""
    cause = getattr(error, "cause", None) or error
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    return (lines[-1] if lines else type(cause).__name__)[:300]
