"""The synthetic store and the service that fills it: atomic shards, checksums, repair, reuse."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tiny import TINY_DDPM, images

from raysweep.data import create_dataset, split_dataset
from raysweep.synthesis.service import ensure_generator, ensure_pool
from raysweep.synthesis.store import (
    CorruptPool,
    SyntheticStore,
    content_key,
)


def test_content_key_is_order_independent_and_sensitive():
    assert content_key({"a": 1, "b": [1, 2]}) == content_key({"b": [1, 2], "a": 1})
    assert content_key({"a": 1}) != content_key({"a": 2})


def test_append_then_read_prefixes(tmp_path):
    store = SyntheticStore(tmp_path)
    store.create_pool("k", {"what": "test"})
    store.append("k", images(0, 30))
    store.append("k", images(30, 50))
    assert store.count("k") == 50
    prefix = store.read("k", 40)
    assert np.array_equal(prefix.seeds, np.arange(40))
    assert np.array_equal(store.read("k", 10).images, prefix.images[:10])
    with pytest.raises(ValueError, match="holds 50"):
        store.read("k", 51)


def test_wrong_checksum_is_detected_and_repaired(tmp_path):
    store = SyntheticStore(tmp_path)
    store.create_pool("k", {})
    for start in (0, 10, 20):
        store.append("k", images(start, start + 10))
    shard = store.pool_dir("k") / "shard-00001.npz"
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert store.verify("k") == ["pool k: shard-00001.npz does not match its checksum"]
    with pytest.raises(CorruptPool, match="checksum"):
        store.read("k", 15)
    assert store.read("k", 10).images.shape[0] == 10  # shards before the bad one still read
    assert store.repair("k") == 10
    assert store.verify("k") == [] and store.count("k") == 10


def test_truncated_shard_is_detected(tmp_path):
    store = SyntheticStore(tmp_path)
    store.create_pool("k", {})
    store.append("k", images(0, 10))
    shard = store.pool_dir("k") / "shard-00000.npz"
    shard.write_bytes(shard.read_bytes()[:100])
    assert store.verify("k")


def test_manifest_only_lists_complete_shards(tmp_path):
    """A crash after the shard but before the manifest leaves the pool as it was."""
    store = SyntheticStore(tmp_path)
    store.create_pool("k", {})
    store.append("k", images(0, 10))
    (store.pool_dir("k") / "shard-00001.npz").write_bytes(b"half-written")
    manifest = json.loads((store.pool_dir("k") / "manifest.json").read_text())
    assert manifest["count"] == 10 and store.verify("k") == []


@pytest.fixture(scope="module")
def digits_train():
    return split_dataset(create_dataset("digits", image_size=8), per_class=5, seed=0).train


def test_generator_trained_once_then_reused(tmp_path, digits_train):
    store = SyntheticStore(tmp_path)
    messages = []
    first = ensure_generator(store, "ddpm", TINY_DDPM, digits_train, 0, log=messages.append)
    second = ensure_generator(store, "ddpm", TINY_DDPM, digits_train, 0, log=messages.append)
    assert not first.reused and second.reused
    assert first.key == second.key and first.weights_sha256 == second.weights_sha256
    assert any("skipping training" in m for m in messages)
    other = ensure_generator(store, "ddpm", {**TINY_DDPM, "steps": 4}, digits_train, 0, log=print)
    assert other.key != first.key and not other.reused


def test_pool_extends_instead_of_regenerating(tmp_path, digits_train):
    store = SyntheticStore(tmp_path)
    trained = ensure_generator(store, "ddpm", TINY_DDPM, digits_train, 0, log=print)
    small = ensure_pool(store, trained, 10, seed=0, count=30, batch_size=16, log=print)
    before = store.read(small.key, 30)
    large = ensure_pool(store, trained, 10, seed=0, count=50, batch_size=16, log=print)
    assert small.key == large.key and small.generated == 30 and large.generated == 20
    after = store.read(large.key, 50)
    assert np.array_equal(after.images[:30], before.images)
    again = ensure_pool(store, trained, 10, seed=0, count=40, log=print)
    assert again.generated == 0
    assert ensure_pool(store, trained, 10, seed=1, count=10, log=print).key != small.key


def test_damaged_pool_is_regenerated(tmp_path, digits_train):
    store = SyntheticStore(tmp_path)
    trained = ensure_generator(store, "ddpm", TINY_DDPM, digits_train, 0, log=print)
    status = ensure_pool(store, trained, 10, seed=0, count=32, batch_size=16, log=print)
    reference = store.read(status.key, 32).images
    (store.pool_dir(status.key) / "shard-00001.npz").write_bytes(b"garbage")
    repaired = ensure_pool(store, trained, 10, seed=0, count=32, batch_size=16, log=print)
    assert repaired.generated == 16 and store.verify(status.key) == []
    assert np.abs(store.read(status.key, 32).images.astype(int) - reference.astype(int)).max() <= 1
