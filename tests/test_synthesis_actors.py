"""Generator actors and the synthesis service on a real local Ray with logical GPUs.

`SynthesisService.ensure` is the one code path that extends pools, so the pool behaviours
(extend, never regenerate, repair damage, share one generation) are tested through it here.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import ray
from tiny import TINY_DDPM, generator_actor_pids, shard_names

from raysweep.cli import main
from raysweep.data import load_splits
from raysweep.synthesis.actors import ACTOR_RESTARTS
from raysweep.synthesis.identity import PoolId
from raysweep.synthesis.sampled import pool_order
from raysweep.synthesis.service import SourceSetup, SynthesisFailed, start_service

POOL0, POOL1 = PoolId("ddpm", 0), PoolId("ddpm", 1)
DATASET = {"name": "digits", "options": {}, "per_class": 5, "val_fraction": 0.1,
           "test_fraction": 0.2, "split_seed": 0}
from raysweep.store.store import SyntheticStore


@pytest.fixture(scope="module")
def local_ray():
    # address="local": a Ray of its own, even when another sweep's Ray runs on this machine.
    ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def train():
    return load_splits(DATASET).train


def start(store, train, name, **kwargs):
    """A synthesis service for the DDPM's pools of seeds 0 and 1, with its actors started and
    loaded (a fresh store makes the first one train); returns it, the actors and the first's
    info."""
    settings = {"actors": 2, "cpus_per_actor": 0, "gpus_per_actor": 0, "chunk_size": 8, **kwargs}
    setup = SourceSetup("ddpm", DATASET, "ddpm", TINY_DDPM, 0, **settings)
    service = start_service(setup, [POOL0, POOL1], store, name)
    deadline = time.time() + 300
    while time.time() < deadline:
        progress = ray.get(service.progress.remote())
        assert progress["state"] != "failed", progress["error"]
        if progress["state"] == "ready" and progress["actors"] == settings["actors"]:
            break
        time.sleep(0.2)
    actors = ray.get(service.generator_actors.remote())
    return service, actors, ray.get(actors[0].info.remote())


def test_actors_pack_on_logical_gpus_and_leave_room_for_trials(local_ray, train, tmp_path):
    service, actors, first = start(SyntheticStore(tmp_path), train, "pack", actors=4,
                                   gpus_per_actor=0.25)
    # Four quarter-GPU actors fill exactly one of the two logical GPUs.
    deadline = time.time() + 30
    while ray.available_resources().get("GPU", 0) > 1.0 and time.time() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("GPU", 0) == pytest.approx(1.0)

    @ray.remote(num_gpus=1)
    def trial_on_the_other_gpu():
        return len(ray.get_gpu_ids())

    assert ray.get(trial_on_the_other_gpu.remote(), timeout=60) == 1
    infos = ray.get([a.info.remote() for a in actors])
    assert len({i["pid"] for i in infos}) == 4
    assert not first["reused"] and all(i["reused"] for i in infos[1:])  # trained once
    assert all(i["cuda_visible_devices"] not in (None, "") for i in infos)  # Ray gave each a GPU
    assert len({i["weights_sha256"] for i in infos}) == 1
    assert ray.get(service.release_actors.remote()) == 4
    deadline = time.time() + 30  # released actors give their GPU back
    while ray.available_resources().get("GPU", 0) < 2.0 and time.time() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("GPU", 0) == pytest.approx(2.0)


def test_actors_without_a_gpu_see_no_cuda_device(local_ray, train, tmp_path):
    service, actors, first = start(SyntheticStore(tmp_path), train, "cpu-only", actors=1)
    assert first["cuda_visible_devices"] == "" and first["cuda_devices"] == 0
    ray.get(service.release_actors.remote())


def test_pool_extends_and_a_damaged_pool_is_regenerated(local_ray, train, tmp_path):
    store = SyntheticStore(tmp_path)
    service, actors, _ = start(store, train, "extend", actors=1)
    small = ray.get(service.ensure.remote(POOL0, 30, "small"))
    before = store.read(small["key"], 30)
    large = ray.get(service.ensure.remote(POOL0, 50, "large"))
    assert small["key"] == large["key"] and small["generated"] == 30 and large["generated"] == 20
    assert np.array_equal(store.read(large["key"], 50).images[:30], before.images)
    assert ray.get(service.ensure.remote(POOL0, 40, "smaller"))["generated"] == 0
    labels, seeds = pool_order(train.num_classes, 0, 0, 50)
    stored = store.read(large["key"], 50)
    assert np.array_equal(stored.labels, labels) and np.array_equal(stored.seeds, seeds)
    # A damaged shard: the pool keeps the good prefix and makes the rest again, identically.
    names = shard_names(store, large["key"])
    (Path(store.pool_dir(large["key"])) / names[2]).write_bytes(b"garbage")
    repaired = ray.get(service.ensure.remote(POOL0, 50, "finds-the-damage"))
    assert repaired["generated"] == 50 - 16 and store.verify(large["key"]) == []
    again = store.read(large["key"], 50).images.astype(int)
    assert np.abs(again - stored.images.astype(int)).max() <= 1
    # Once released, the actors make nothing more, and say so in one line.
    ray.get(service.release_actors.remote())
    assert ray.get(service.ensure.remote(POOL0, 50))["generated"] == 0
    with pytest.raises(SynthesisFailed, match="released") as error:
        ray.get(service.ensure.remote(POOL0, 60))
    assert "\n" not in str(error.value.cause)


def test_concurrent_requests_share_one_generation(local_ray, train, tmp_path):
    store = SyntheticStore(tmp_path)
    service, actors, _ = start(store, train, "concurrent")
    results = ray.get([service.ensure.remote(POOL0, 40, "a"),
                       service.ensure.remote(POOL0, 40, "b"),
                       service.ensure.remote(POOL0, 24, "c")])
    # Whichever request runs first generates; the others reuse: 40 images in all, not 104.
    assert sum(r["generated"] for r in results) == 40
    assert [r["count"] >= n for r, n in zip(results, (40, 40, 24))] == [True] * 3
    assert ray.get(service.stats.remote())["generated"] == {POOL0: 40, POOL1: 0}
    assert sum(ray.get(a.info.remote())["images_generated"] for a in actors) == 40
    # Asking for more extends the pool; the first 40 images stay as they were.
    before = store.read(results[0]["key"], 40).images
    grown = ray.get(service.ensure.remote(POOL0, 56, "d"))
    assert grown["generated"] == 16 and grown["reused"] == 40
    assert np.array_equal(store.read(grown["key"], 40).images, before)


def test_killed_actor_loses_and_duplicates_nothing(local_ray, train, tmp_path):
    store = SyntheticStore(tmp_path)
    service, actors, _ = start(store, train, "killed", chunk_size=4)
    pending = service.ensure.remote(POOL1, 200)
    # Kill one actor while the pool is being filled; Ray restarts it and retries its chunk.
    pool_key = None
    deadline = time.time() + 60
    while time.time() < deadline:
        keys = [k for k in store.pool_keys() if store.pool_meta(k)["seed"] == 1]
        if keys and store.count(keys[0]) > 0:
            pool_key = keys[0]
            break
        time.sleep(0.05)
    assert pool_key is not None and store.count(pool_key) < 200  # killed mid-pool
    ray.kill(actors[0], no_restart=False)
    result = ray.get(pending, timeout=300)
    assert result["count"] == 200 and store.verify(pool_key) == []
    stored = store.read(pool_key, 200)
    labels, seeds = pool_order(train.num_classes, 1, 0, 200)
    assert np.array_equal(stored.seeds, seeds) and np.array_equal(stored.labels, labels)
    reference = ray.get(actors[1].generate.remote(labels[:16], seeds[:16]))
    assert np.abs(stored.images[:16].astype(int) - reference.astype(int)).max() <= 1
    assert ray.get(actors[0].info.remote())["reused"]  # the restarted actor loaded, never retrained
    assert ray.get(service.stats.remote())["model_loads"] == 3  # two actors, one restart


def test_actor_killed_on_every_attempt_fails_with_one_line(local_ray, train, tmp_path):
    """No retry forever: after ACTOR_RESTARTS restarts the request fails, in one line."""
    store = SyntheticStore(tmp_path)
    service, actors, _ = start(store, train, "doomed", actors=1, chunk_size=4)
    others = generator_actor_pids() - {ray.get(actors[0].info.remote())["pid"]}
    pending = service.ensure.remote(POOL0, 4000)
    killed: set[int] = set()

    def kill_every_attempt():
        while True:
            done, _ = ray.wait([pending], timeout=0.1)
            if done:
                return
            for pid in generator_actor_pids() - others - killed:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)

    killer = threading.Thread(target=kill_every_attempt, daemon=True)
    killer.start()
    with pytest.raises(SynthesisFailed) as error:
        ray.get(pending, timeout=600)
    killer.join(30)
    message = str(error.value.cause)
    assert "\n" not in message and f"failed {ACTOR_RESTARTS + 1} times" in message
    assert len(killed) == ACTOR_RESTARTS + 1


def test_impossible_budget_is_refused_at_validate(write_spec, capsys):
    spec = {"name": "budget", "dataset": {"name": "digits", "per_class": 5},
            "synthesis": {"actors": 4, "gpus_per_actor": 0.5},
            "tune": {"gpus_per_trial": 1},
            "sweep": {"synthetic_ratio": [0, 1], "backbone": "test_resnet"}}
    assert main(["validate", str(write_spec(spec)), "--num-gpus", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "wait forever" in err and "gpus_per_trial" in err
    assert main(["validate", str(write_spec(spec)), "--num-gpus", "1"]) == 2
    assert "need 2 GPUs but 1 are available" in capsys.readouterr().err
    assert main(["validate", str(write_spec(spec)), "--num-gpus", "3"]) == 0
