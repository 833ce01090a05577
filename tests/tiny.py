"""Tiny settings, data and helpers shared by the store, synthesis and sweep tests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from raysweep.store.store import PoolImages

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
    from raysweep.store.store import SyntheticStore

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


def generator_actor_pids() -> set[int]:
    """Pids of this test's GeneratorActor processes: Ray sets their process title, and they
    descend from this process (the local Ray it started), never another user's Ray."""
    pids = set()
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and \
                    (entry / "cmdline").read_bytes().startswith(b"ray::GeneratorActor") and \
                    descends_from_us(int(entry.name)):
                pids.add(int(entry.name))
        except OSError:
            pass
    return pids


def descends_from_us(pid: int) -> bool:
    while pid > 1:
        stat = Path(f"/proc/{pid}/stat").read_text()
        pid = int(stat.rsplit(")", 1)[1].split()[1])  # the parent pid
        if pid == os.getpid():
            return True
    return False
