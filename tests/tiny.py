"""Tiny settings and data shared by the store and synthesis tests."""

from __future__ import annotations

import numpy as np

from raysweep.synthesis.store import PoolImages

# A DDPM that trains in seconds: enough to exercise the real fit/save/load/sample path.
TINY_DDPM = {"steps": 3, "block_out_channels": [8, 16], "image_size": 8, "sample_steps": 2,
             "batch_size": 16}


def images(start: int, stop: int) -> PoolImages:
    """Pool images [start, stop) whose pixels, labels and seeds encode their index."""
    index = np.arange(start, stop)
    pixels = (index % 255).astype(np.uint8)[:, None, None, None] * np.ones((1, 4, 4, 1), np.uint8)
    return PoolImages(pixels, index % 10, index)


def shard_names(store, key: str) -> list[str]:
    """The pool's shard file names, in manifest order."""
    return [shard["file"] for shard in store.manifest(key)["shards"]]


BATCH = 3  # images per batch in the concurrent-append tests


def worker_appends(root: str, key: str, worker: int, batches: int, extend_to: int | None,
                   barrier) -> None:
    """One of several processes writing to one pool (run with multiprocessing's spawn); all
    start writing together, at `barrier`.

    batches: append that many batches of this worker's own images (seeds worker * 10**6 + i).
    extend_to: instead, extend the shared pool [0, extend_to) from wherever it ends, in chunks
        whose size differs per worker, as two sweeps filling the same pool do.
    """
    from raysweep.synthesis.store import SyntheticStore

    store = SyntheticStore(root)
    store.count(key)  # imports and clients ready before the race starts
    barrier.wait()
    if extend_to is None:
        for batch in range(batches):
            first = worker * 10**6 + batch * BATCH
            store.append(key, images(first, first + BATCH))
        return
    chunk = 5 + 4 * worker
    while (have := store.count(key)) < extend_to:
        store.append(key, images(have, min(have + chunk, extend_to)), start=have)


def check_appends(store, key: str, workers: int, batches: int) -> None:
    """Every worker's images are in the pool exactly once, each worker's in its own order."""
    total = workers * batches * BATCH
    assert store.count(key) == total and store.verify(key) == []
    seeds = store.read(key, total).seeds
    assert len(set(seeds.tolist())) == total
    for worker in range(workers):
        mine = seeds[seeds // 10**6 == worker]
        assert np.array_equal(mine, worker * 10**6 + np.arange(batches * BATCH))
