"""The synthesis service: the one place pools are extended, as far as trials ask and no further.

One service per synthesis source and sweep: a named async actor that holds no CPU and lives on
the driver's node. It starts its source's generator actors itself, in the background (the
first trains or loads the generator, the others load it), so a sweep never waits for them:
trials that need no synthetic image run meanwhile. When the generator is already stored, the
pool keys come from the store alone and no actor starts until a pool is short.

Demand is "the first n images of pool p" (a `PoolId`): `want` registers it (the sweep's trial
gate does, for trials it has not started yet) and returns at once; `ensure` waits until it is
met (trials call it). One fill loop serves the earliest unmet demand, in waves of chunks spread
over the actors. Chunks come back in any order but are appended in pool order, each only where
the pool still ends (another sweep may extend the same pool meanwhile), so the store only ever
holds a complete prefix. A pool's stored shards are checked before they are counted on, and a
damaged one is cut back and regenerated. Store reads and writes run in a thread, never on the
event loop.

When no trial can ask for more, the gate calls `release_actors`: their GPUs and CPUs go to
trials, and the service stays to answer trials from the store.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import ray
from ray.exceptions import RayError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from raysweep.data import load_splits
from raysweep.store import PoolImages, SyntheticStore
from raysweep.synthesis.actors import ACTOR_RESTARTS, CALL_TIMEOUT_S, GeneratorActor, LoadLedger
from raysweep.synthesis.fitting import generator_key
from raysweep.synthesis.identity import PoolId
from raysweep.synthesis.img2img import img2img_order, img2img_pool_fields, img2img_pool_key
from raysweep.synthesis.inpaint import (Masking, inpaint_order, inpaint_pool_fields,
                                        inpaint_pool_key)
from raysweep.synthesis.sampled import pool_key, pool_meta, pool_order

# The longest wait for the first actor: it may train its generator first, and wait for a node.
LOAD_TIMEOUT_S = 6 * 3600.0
# The longest wait for one chunk of images from an actor, retries included.
CHUNK_TIMEOUT_S = 1800.0
# The longest a trial waits for its prefix: a backstop, since every chunk has its own timeout.
ENSURE_TIMEOUT_S = 24 * 3600.0
# How often an inpainting source looks for the reference classifier its masks need.
REFERENCE_POLL_S = 1.0


class SynthesisFailed(RuntimeError):
    """Generation could not finish: actors died more often than allowed, or a wait timed out."""


@dataclass(frozen=True)
class SourceSetup:
    """How one synthesis source makes its images.

    Args:
        source: the source's name (`SynthesisSource.name`: `ddpm`, `inpaint-ddpm`, ...).
        dataset: the spec's `dataset:` block (a dict): the service and each actor load the
            training split themselves rather than receive it.
        generator: the generator's registry name.
        options: the generator's options.
        fit_seed: the generator's training seed.
        actors: how many generator actors serve the source.
        cpus_per_actor, gpus_per_actor: what each actor asks Ray for (0 CPU: it borrows one).
        chunk_size: images per request to an actor.
        masking: how an inpainting source makes its masks; None for other sources.
        soft_label_gamma: an img2img source's soft labels toward another class put
            strength ** gamma on it (`img2img.label_weight`).
    """

    source: str
    dataset: dict
    generator: str
    options: dict
    fit_seed: int
    actors: int
    cpus_per_actor: float
    gpus_per_actor: float
    chunk_size: int
    masking: Masking | None = None
    soft_label_gamma: float = 0.5

    @property
    def threads(self) -> int:
        """torch threads per actor: the CPUs it holds, or one when it borrows."""
        return max(1, int(self.cpus_per_actor))


@dataclass
class _Pool:
    """What the service knows of one pool; `verified` <= `stored` images were checked."""

    key: str
    meta: dict
    stored: int = 0
    verified: int = 0
    wanted: int = 0
    generated: int = 0
    seconds: float = 0.0
    # requester -> images generated because it asked first (charged to its trial)
    charged: dict[str, int] = field(default_factory=dict)


@ray.remote(num_cpus=0, max_restarts=ACTOR_RESTARTS, max_task_retries=ACTOR_RESTARTS)
class SynthesisService:
    """See the module docstring. Start it with `start_service`; `run` is its life."""

    def __init__(self, setup: SourceSetup, pools: list[PoolId], store_root: str,
                 chunk_timeout_s: float = CHUNK_TIMEOUT_S,
                 load_timeout_s: float = LOAD_TIMEOUT_S):
        self.setup = setup
        self.train = load_splits(setup.dataset).train
        self.store = SyntheticStore(store_root)
        self.planned = list(pools)
        self.chunk_timeout_s = chunk_timeout_s
        self.load_timeout_s = load_timeout_s
        self.ledger: str | None = None  # the name of the load ledger, once actors start
        self._ledger = None
        self.pools: dict[PoolId, _Pool] = {}
        self.queue: list[PoolId] = []  # pools in the order their unmet demand arrived
        self.actors: list = []
        self.first: dict | None = None  # the first actor's info (fit seconds, reuse)
        self.state = "starting"  # starting -> ready -> (released); or failed
        self.error: str | None = None
        self.released = False
        self.started_at = time.time()
        self.actor_seconds = 0.0  # lifetime x actors, accounted when they stop
        self.busy: list[dict] = []
        self.log: list[str] = []
        self._early: dict[PoolId, list[tuple[int, str]]] = {}  # demand before keys are known
        self._changed: asyncio.Condition | None = None

    # -- the service's life ------------------------------------------------------------------

    async def run(self) -> None:
        """Find the pools' keys (starting the first actor if the generator must be trained),
        then fill demand until the sweep ends. Call once, without waiting for it: a failure
        is kept (`progress` shows it, `ensure` raises it), not raised here."""
        try:
            await self._find_keys()
            await self._fill()
        except Exception as error:  # noqa: BLE001 - every failure ends the service's work
            self.state, self.error = "failed", one_line(error)
            self._say(f"{self.setup.source}: {self.error}")
            await self._notify()

    async def want(self, pool: PoolId, count: int, requester: str = "") -> dict:
        """Register that `pool` must hold `count` images; return at once with its progress.

        The images this demand adds beyond everything asked before are charged to `requester`.
        """
        self._check(pool)
        state = self.pools.get(pool)
        if state is None:  # keys are not known yet: remember the demand until they are
            self._early.setdefault(pool, []).append((count, requester))
            return self._pool_progress(pool)
        if count > state.wanted:
            extra = count - max(state.wanted, state.stored)
            if extra > 0:
                state.charged[requester] = state.charged.get(requester, 0) + extra
            state.wanted = count
            if pool not in self.queue:
                self.queue.append(pool)
            await self._notify()
        return self._pool_progress(pool)

    async def ensure(self, pool: PoolId, count: int, requester: str = "") -> dict:
        """Wait until `pool` holds `count` checked images; say how many were generated for
        `requester` and how long it waited.

        Raises:
            SynthesisFailed: the actors failed, were released before the pool was long
                enough, or timed out.
        """
        start = time.perf_counter()
        await self.want(pool, count, requester)
        while True:
            if self.error is not None:
                raise SynthesisFailed(self.error)
            state = self.pools.get(pool)
            if state is not None and state.verified >= count:
                # Checked again for this caller: a shard damaged since is cut back and made
                # again (charged to the caller that found it), never handed out.
                kept = await self._recheck(state, count)
                if kept >= count:
                    break
                state.charged[requester] = state.charged.get(requester, 0) + count - kept
                self.queue.append(pool)
                await self._notify()
                continue
            if self.released and (state is None or state.stored < count):
                raise SynthesisFailed(
                    f"pool {pool.describe()}: {count} images are needed, but the "
                    f"{self.setup.source} actors were released once no trial could ask for more")
            await self._wait_changed()
        charged = min(count, state.charged.get(requester, 0))
        return {"key": state.key, "count": state.stored, "generated": charged,
                "reused": count - charged, "waited": time.perf_counter() - start}

    async def progress(self) -> dict:
        """Where the service stands: state, error, and each pool's images stored and wanted."""
        return {"state": self.state, "error": self.error, "released": self.released,
                "actors": len(self.actors),
                "pools": {pool: self._pool_progress(pool) for pool in self.planned}}

    async def generator_actors(self) -> list:
        """The live generator actors' handles (after `run` started them), for inspection."""
        return list(self.actors)

    async def release_actors(self) -> int:
        """Stop the generator actors (their GPUs and CPUs go back to trials); how many."""
        self.released = True
        released = len(self.actors)
        if self.actors:
            try:
                self.busy = await asyncio.wait_for(
                    asyncio.gather(*[actor.busy.remote() for actor in self.actors]),
                    CALL_TIMEOUT_S)
            except (RayError, asyncio.TimeoutError):
                self.busy = []  # bookkeeping only: a lost actor must not stop the release
            self.actor_seconds += released * (time.time() - self.started_at)
            for actor in self.actors:
                ray.kill(actor, no_restart=True)
            self.actors = []
        if self.state == "ready":
            self.state = "released"
        await self._notify()
        return released

    async def stats(self) -> dict:
        """What the sweep logs: images generated per pool, keys, generator loads (None if the
        ledger was lost), the generator's fit, and actor seconds held against seconds busy."""
        try:
            loads = await self._ledger.count.remote() if self._ledger is not None else 0
        except RayError:  # bookkeeping only: a lost ledger must not fail a finished sweep
            loads = None
        busy = sum(b["load_seconds"] + b["generate_seconds"] for b in self.busy)
        return {"generated": {pool: s.generated for pool, s in self.pools.items()},
                "seconds": {pool: s.seconds for pool, s in self.pools.items()},
                "keys": {pool: s.key for pool, s in self.pools.items()},
                "log": list(self.log), "model_loads": loads, "first": self.first,
                "actor_seconds": self.actor_seconds, "actor_busy_seconds": busy}

    # -- keys and actors ---------------------------------------------------------------------

    async def _find_keys(self) -> None:
        """Pool keys hash the generator's stored weights: read them from the store, or have
        the first actor train (or load) the generator and store it."""
        setup = self.setup
        key, generator = await asyncio.to_thread(generator_key, setup.generator, setup.options,
                                                 self.train, setup.fit_seed)
        if await asyncio.to_thread(self.store.has_generator, key):
            weights = await asyncio.to_thread(self.store.generator_weights, key)
            self.first = {"generator_key": key, "weights_sha256": weights, "reused": True,
                          "fit_seconds": 0.0, "load_seconds": 0.0}
        else:
            await self._start_actors()
            key, weights = self.first["generator_key"], self.first["weights_sha256"]
        inpaint_config = getattr(generator, "inpaint_config", dict)()
        img2img_config = getattr(generator, "img2img_config", dict)()
        for pool in self.planned:
            if pool.mask is not None:
                fields = inpaint_pool_fields(setup.generator, key, weights, inpaint_config,
                                             setup.masking, self.train.fingerprint(),
                                             self.train.num_classes, pool.seed, pool.mask)
                pool_state = _Pool(inpaint_pool_key(fields), fields)
            elif pool.variation is not None:
                fields = img2img_pool_fields(setup.generator, key, weights, img2img_config,
                                             self.train.fingerprint(), self.train.num_classes,
                                             pool.seed, pool.variation, setup.soft_label_gamma)
                pool_state = _Pool(img2img_pool_key(fields), fields)
            else:
                fields = (setup.generator, key, weights, self.train.num_classes, pool.seed)
                pool_state = _Pool(pool_key(*fields), pool_meta(*fields))
            await asyncio.to_thread(self.store.create_pool, pool_state.key, pool_state.meta)
            pool_state.stored = await asyncio.to_thread(self.store.count, pool_state.key)
            self.pools[pool] = pool_state
        self.state = "released" if self.released else "ready"
        for pool, asks in self._early.items():
            for count, requester in asks:
                await self.want(pool, count, requester)
        self._early.clear()
        await self._notify()

    async def _start_actors(self) -> None:
        """Start the actors: the first alone (it may train the generator, and the others then
        load what it stored), then the rest. Every actor must hold the same weights."""
        setup = self.setup
        if setup.masking is not None:
            await self._wait_for_reference()
        settings = {"num_cpus": setup.cpus_per_actor, "num_gpus": setup.gpus_per_actor}
        if setup.gpus_per_actor == 0:  # Ray leaves CUDA_VISIBLE_DEVICES alone: hide the GPUs
            settings["runtime_env"] = {"env_vars": {"CUDA_VISIBLE_DEVICES": ""}}
        make = GeneratorActor.options(**settings)
        if self._ledger is None:
            # Beside the service (the driver's node). Actors get its name: a handle among an
            # actor's arguments sits in the object store, which Ray warns about on restarts.
            self.ledger = f"{ray.get_runtime_context().get_actor_name()}-loads"
            here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(),
                                                  soft=False)
            self._ledger = LoadLedger.options(name=self.ledger, scheduling_strategy=here).remote()
        arguments = (setup.generator, setup.options, setup.dataset, setup.fit_seed,
                     str(self.store.root), setup.threads, setup.gpus_per_actor, setup.masking,
                     self.ledger)
        self.started_at = time.time()
        self.actors = [make.remote(*arguments)]
        self.first = await self._started(self.actors[0])
        self.actors += [make.remote(*arguments) for _ in range(setup.actors - 1)]
        infos = [self.first] + [await self._started(actor) for actor in self.actors[1:]]
        if len({info["weights_sha256"] for info in infos}) != 1:
            raise SynthesisFailed(
                f"generator {setup.generator}: its {setup.actors} actors loaded different "
                f"weights ({', '.join(sorted({i['weights_sha256'][:12] for i in infos}))}); "
                f"run `raysweep cache verify`")
        self._say(f"generator {setup.generator}: {setup.actors} actor(s) loaded, "
                  f"{setup.cpus_per_actor:g} CPU and {setup.gpus_per_actor:g} GPU each")
        if self.released:  # the sweep needed none of their images after all
            await self.release_actors()

    async def _started(self, actor) -> dict:
        resources = (f"{self.setup.cpus_per_actor:g} CPU and {self.setup.gpus_per_actor:g} "
                     f"GPU")
        try:
            return await asyncio.wait_for(actor.info.remote(), self.load_timeout_s)
        except asyncio.TimeoutError:
            raise SynthesisFailed(f"generator {self.setup.generator}: an actor did not start "
                                  f"within {self.load_timeout_s:g}s; check that a node has "
                                  f"{resources} free") from None
        except RayError as error:
            raise SynthesisFailed(f"generator {self.setup.generator}: an actor failed to start "
                                  f"{ACTOR_RESTARTS + 1} times ({one_line(error)})") from None

    async def _wait_for_reference(self) -> None:
        """An inpainting source's masks come from the sweep's reference classifier, which the
        sweep trains beside it; wait until it is stored."""
        key = self.setup.masking.reference_key
        deadline = time.monotonic() + self.load_timeout_s
        while not await asyncio.to_thread(self.store.has_classifier, key):
            if time.monotonic() > deadline:
                raise SynthesisFailed(f"reference classifier {key} was not stored within "
                                      f"{self.load_timeout_s:g}s; see the sweep's log")
            await asyncio.sleep(REFERENCE_POLL_S)

    # -- filling -----------------------------------------------------------------------------

    async def _fill(self) -> None:
        """Serve the earliest unmet demand, one wave of chunks at a time, forever."""
        while True:
            pool = next((p for p in self.queue if self.pools[p].wanted > self.pools[p].verified),
                        None)
            if pool is None:
                self.queue.clear()
                await self._wait_changed()
                continue
            state = self.pools[pool]
            if state.verified < min(state.wanted, state.stored):
                await self._check_prefix(state, min(state.wanted, state.stored))
            if state.stored < state.wanted:
                if self.released:
                    self.queue.remove(pool)  # `ensure` says why the pool stays short
                    await self._notify()
                    continue
                if not self.actors:
                    await self._start_actors()
                start = time.perf_counter()
                added = await self._extend(state.key, pool, state.stored, state.wanted)
                state.seconds += time.perf_counter() - start
                state.generated += added
                state.stored = await asyncio.to_thread(self.store.count, state.key)
                state.verified = max(state.verified, min(state.stored, state.verified + added))
            await self._notify()

    async def _recheck(self, state: _Pool, count: int) -> int:
        """The first `count` images' shards checked once more; on damage the pool is cut
        back to its good prefix. Returns how many checked images it holds."""
        if not await asyncio.to_thread(self.store.verify, state.key, count):
            return state.stored
        await self._check_prefix(state, count)
        return state.verified

    async def _check_prefix(self, state: _Pool, count: int) -> None:
        """Check the stored shards holding the first `count` images; cut a damaged pool back
        to its last good shard, so the rest is generated again."""
        if await asyncio.to_thread(self.store.verify, state.key, count):
            kept = await asyncio.to_thread(self.store.repair, state.key)
            self._say(f"pool {state.key}: damaged shards found; kept the first {kept} images, "
                      f"regenerating the rest")
            state.stored = kept
        state.verified = min(count, state.stored)

    async def _extend(self, key: str, pool: PoolId, have: int, count: int) -> int:
        """Generate one wave of chunks from `have` on and append them in order; images added."""
        size = self.setup.chunk_size
        starts = list(range(have, count, size))[:2 * len(self.actors)]  # bounded memory
        chunks = [(s, min(s + size, count)) for s in starts]
        actors = [self.actors[i % len(self.actors)] for i in range(len(chunks))]
        labels = self.train.labels
        if pool.mask is not None:
            orders = [inpaint_order(labels, pool.seed, a, b) for a, b in chunks]
            refs = [actor.repaint.remote(sources, seeds, pool.mask)
                    for actor, (sources, _labels, seeds) in zip(actors, orders)]
        elif pool.variation is not None:
            orders = [img2img_order(labels, self.train.num_classes, pool.seed, pool.variation,
                                    a, b) for a, b in chunks]
            refs = [actor.vary.remote(sources, targets, seeds, pool.variation,
                                      self.setup.soft_label_gamma)
                    for actor, (sources, targets, seeds) in zip(actors, orders)]
        else:
            orders = [pool_order(self.train.num_classes, pool.seed, a, b) for a, b in chunks]
            refs = [self.actors[i % len(self.actors)].generate.remote(*order)
                    for i, order in enumerate(orders)]
        try:
            results = await asyncio.wait_for(asyncio.gather(*refs), self.chunk_timeout_s)
        except asyncio.TimeoutError:
            raise SynthesisFailed(
                f"pool {key}: {self.setup.source} actors made no chunk of {size} images "
                f"within {self.chunk_timeout_s:g}s; lower synthesis.chunk_size or check the "
                f"actors' logs") from None
        except RayError as error:
            raise SynthesisFailed(
                f"pool {key}: a {self.setup.source} actor failed {ACTOR_RESTARTS + 1} times "
                f"while generating ({one_line(error)}); if it ran out of memory, lower "
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

    # -- bookkeeping -------------------------------------------------------------------------

    def _say(self, line: str) -> None:
        """A line for the sweep's log now (Ray forwards it), and for its parent run later."""
        print(f"[raysweep] {line}", flush=True)
        self.log.append(line)

    def _check(self, pool: PoolId) -> None:
        if pool not in self.planned:
            raise SynthesisFailed(f"pool {pool.describe()} is not one of source "
                                  f"{self.setup.source}'s pools in this sweep")

    def _pool_progress(self, pool: PoolId) -> dict:
        state = self.pools.get(pool)
        if state is None:
            wanted = max((count for count, _ in self._early.get(pool, [])), default=0)
            return {"key": None, "stored": 0, "ready": 0, "wanted": wanted, "generated": 0,
                    "seconds": 0.0}
        return {"key": state.key, "stored": state.stored, "ready": state.verified,
                "wanted": state.wanted, "generated": state.generated, "seconds": state.seconds}

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def _notify(self) -> None:
        async with self._condition():
            self._condition().notify_all()

    async def _wait_changed(self) -> None:
        async with self._condition():
            await self._condition().wait()


def start_service(setup: SourceSetup, pools: list[PoolId], store: SyntheticStore, name: str,
                  **timeouts):
    """Create the named service on this (the driver's) node and start its life; returns its
    handle. It must outlive any worker node the sweep loses."""
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    service = SynthesisService.options(name=name, scheduling_strategy=here).remote(
        setup, pools, str(store.root), **timeouts)
    service.run.remote()
    return service


def one_line(error: BaseException) -> str:
    """The most specific one-line cause Ray gives for a failure."""
    if isinstance(error, SynthesisFailed):
        return str(error)
    cause = getattr(error, "cause", None) or error
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    return (lines[-1] if lines else type(cause).__name__)[:300]
