"""The synthetic store on S3, against a real S3-API server (moto) on loopback.

The same behaviours as test_store.py — nested prefixes, checksums, repair, generators saved
and loaded, conditional writes that let two processes append to one pool — through boto3 and
HTTP, plus hostile object keys refused, and the `check()` that the planner runs before any
compute: a missing bucket or an unreachable endpoint is a one-line UserError.
"""

from __future__ import annotations

import json
import multiprocessing
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tiny import TINY_DDPM, check_appends, images, shard_names, worker_appends

from raysweep.data import create_dataset, split_dataset
from raysweep.errors import UserError
from raysweep.synthesis import fitting, sampled
from raysweep.store.backends import UnsafePath
from raysweep.store.cache_cli import cache_ls, cache_verify
from raysweep.store.store import CorruptPool, SyntheticStore


@pytest.fixture
def store(bucket, tmp_path):
    return SyntheticStore(f"s3://{bucket}/sweeps/cache", cache_dir=tmp_path / "cache")


def flip_byte(s3, bucket, key):
    data = bytearray(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    data[-5] ^= 0xFF
    s3.put_object(Bucket=bucket, Key=key, Body=bytes(data))


def test_boto3_honours_aws_endpoint_url(endpoint, s3):
    assert s3.meta.endpoint_url == endpoint


def test_append_then_read_prefixes(store, s3, bucket):
    store.create_pool("k", {"what": "test"})
    store.append("k", images(0, 30))
    store.append("k", images(30, 50))
    assert store.count("k") == 50
    prefix = store.read("k", 40)
    assert np.array_equal(prefix.seeds, np.arange(40))
    assert np.array_equal(store.read("k", 10).images, prefix.images[:10])
    with pytest.raises(ValueError, match="holds 50"):
        store.read("k", 51)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert sorted(keys) == [f"sweeps/cache/pools/k/{name}" for name in
                            ("manifest.json", "meta.json", *shard_names(store, "k"))]
    assert store.pool_keys() == ["k"]
    assert store.pool_dir("k") == f"s3://{bucket}/sweeps/cache/pools/k"
    # str(root) rebuilds the same store, as trials do from the sweep's context; so does pickle.
    assert store.root == f"s3://{bucket}/sweeps/cache"
    assert SyntheticStore(str(store.root)).count("k") == 50
    assert pickle.loads(pickle.dumps(store)).count("k") == 50


def test_wrong_checksum_is_detected_and_repaired(store, s3, bucket):
    store.create_pool("k", {})
    for start in (0, 10, 20):
        store.append("k", images(start, start + 10))
    names = shard_names(store, "k")
    flip_byte(s3, bucket, f"sweeps/cache/pools/k/{names[1]}")
    assert store.verify("k") == [f"pool k: {names[1]} does not match its checksum"]
    with pytest.raises(CorruptPool, match="checksum"):
        store.read("k", 15)
    assert store.read("k", 10).images.shape[0] == 10
    assert store.repair("k") == 10
    assert store.verify("k") == [] and store.count("k") == 10
    shards = s3.list_objects_v2(Bucket=bucket, Prefix="sweeps/cache/pools/k/shard")["Contents"]
    listed = [o["Key"] for o in shards]
    assert listed == [f"sweeps/cache/pools/k/{names[0]}"]
    store.append("k", images(10, 20))
    assert np.array_equal(store.read("k", 20).seeds, np.arange(20))


def test_missing_shard_is_detected(store, s3, bucket):
    store.create_pool("k", {})
    store.append("k", images(0, 10))
    name = shard_names(store, "k")[0]
    s3.delete_object(Bucket=bucket, Key=f"sweeps/cache/pools/k/{name}")
    assert store.verify("k") == [f"pool k: {name} is missing"]


def test_append_interrupted_between_shard_and_manifest(store, endpoint):
    """A process killed after its shard PUT but before its manifest PUT: the pool is as it
    was, the orphan is reported and never read, and the next append carries on."""
    store.create_pool("k", {})
    store.append("k", images(0, 10))
    script = f"""
import os, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from tiny import images
from raysweep.store.backends import S3Backend
from raysweep.store.store import SyntheticStore
write_if = S3Backend.write_if
def die_before_manifest(self, path, data, version):
    if path.endswith("manifest.json"):
        os._exit(9)  # the process dies here: the shard is stored, the manifest is not
    return write_if(self, path, data, version)
S3Backend.write_if = die_before_manifest
SyntheticStore({str(store.root)!r}).append("k", images(10, 20))
"""
    assert subprocess.run([sys.executable, "-c", script]).returncode == 9
    assert store.count("k") == 10 and store.verify("k") == []
    assert len(store.stray_shards("k")) == 1
    report, ok = cache_verify(store)
    assert ok and "is listed in no manifest" in report
    assert store.append("k", images(10, 20), start=10)
    assert np.array_equal(store.read("k", 20).seeds, np.arange(20))


def test_hostile_keys_are_refused_and_nothing_outside_is_written(store, s3, bucket, tmp_path):
    """A bucket writer plants keys with `..`: listing, download and cache verify refuse them,
    and nothing appears outside the cache."""
    store.save_generator("g", {"generator": "test"},
                         lambda d: (Path(d) / "w.bin").write_bytes(b"weights"))
    meta = store.generator_meta("g")
    hostile = {**meta, "files": {**meta["files"], "../../../../escaped.txt": "0" * 64}}
    s3.put_object(Bucket=bucket, Key="sweeps/cache/generators/g/meta.json",
                  Body=json.dumps(hostile).encode())
    s3.put_object(Bucket=bucket, Key="sweeps/cache/pools/../../escaped.txt", Body=b"x")
    fresh = SyntheticStore(str(store.root), cache_dir=tmp_path / "fresh" / "cache")
    with pytest.raises(UnsafePath, match=r"\.\./"):
        fresh.generator_dir("g")
    with pytest.raises(UnsafePath, match="escaped.txt"):
        fresh.pool_keys()
    report, ok = cache_verify(fresh)
    assert not ok and "refusing store path" in report
    assert not any(p.name == "escaped.txt" for p in tmp_path.rglob("*"))


def test_two_processes_appending_to_one_s3_pool_lose_nothing(store, endpoint):
    """Conditional PUTs (If-Match / If-None-Match) serialise the manifest updates."""
    store.create_pool("k", {})
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    workers = [context.Process(target=worker_appends,
                               args=(str(store.root), "k", w, 30, None, barrier))
               for w in range(2)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(180)
        assert process.exitcode == 0
    check_appends(store, "k", workers=2, batches=30)


def test_generator_saved_meta_last_and_loaded_from_a_fresh_cache(store, s3, bucket, tmp_path):
    def save(directory):  # like save_pretrained: files and a subfolder
        (Path(directory) / "weights.bin").write_bytes(b"\x00\x01" * 1000)
        (Path(directory) / "unet").mkdir()
        (Path(directory) / "unet" / "config.json").write_text("{}")

    assert not store.has_generator("g")
    local, stored = store.save_generator("g", {"generator": "test", "seed": 0}, save)
    assert stored and store.has_generator("g") and (local / "weights.bin").is_file()
    assert store.generator_keys() == ["g"] and store.generator_meta("g")["generator"] == "test"

    other_machine = SyntheticStore(str(store.root), cache_dir=tmp_path / "other-cache")
    loaded = other_machine.generator_dir("g")
    assert str(loaded).startswith(str(tmp_path / "other-cache"))
    assert (loaded / "weights.bin").read_bytes() == b"\x00\x01" * 1000
    assert (loaded / "unet" / "config.json").read_text() == "{}"
    assert other_machine.generator_meta("g")["seed"] == 0
    stamp = (loaded / "weights.bin").stat().st_mtime_ns
    assert other_machine.generator_dir("g") == loaded  # the cache is reused, not re-downloaded
    assert (loaded / "weights.bin").stat().st_mtime_ns == stamp

    # Without meta.json (an interrupted upload) the generator does not count as stored.
    s3.delete_object(Bucket=bucket, Key="sweeps/cache/generators/g/meta.json")
    assert not store.has_generator("g") and store.generator_keys() == []
    with pytest.raises(FileNotFoundError):
        other_machine.generator_dir("g")


def test_generator_trained_once_and_reused_through_s3(store, tmp_path):
    train = split_dataset(create_dataset("digits", image_size=8), per_class=2, seed=0).train
    first = fitting.ensure_generator(store, "ddpm", TINY_DDPM, train, 0, log=print)
    elsewhere = SyntheticStore(str(store.root), cache_dir=tmp_path / "elsewhere")
    second = fitting.ensure_generator(elsewhere, "ddpm", TINY_DDPM, train, 0, log=print)
    assert not first.reused and second.reused
    assert second.weights_sha256 == first.weights_sha256
    order = sampled.pool_order(10, 0, 0, 20)
    assert np.abs(first.generator.sample(*order).astype(int)
                  - second.generator.sample(*order).astype(int)).max() <= 1


def check_cache_ls_and_verify(store, damage):
    store.create_pool("p1", {"generator": "ddpm", "seed": 3, "num_classes": 10})
    store.append("p1", images(0, 10))
    store.append("p1", images(10, 15))
    store.save_generator("g1", {"generator": "ddpm", "dataset": "digits", "train_images": 50,
                                "seed": 0, "fit_seconds": 1.25}, lambda d: None)
    listing = json.loads(cache_ls(store, as_json=True))
    assert listing["store"] == str(store.root)
    assert listing["pools"] == [{"key": "p1", "images": 15, "shards": 2,
                                 "meta": {"generator": "ddpm", "seed": 3, "num_classes": 10}}]
    assert [g["key"] for g in listing["generators"]] == ["g1"]
    text = cache_ls(store, as_json=False)
    assert "p1" in text and "15" in text and "generator=ddpm seed=3" in text and "g1" in text

    report, ok = cache_verify(store)
    assert ok and "ok   pool p1: 15 images in 2 shards" in report and "all good" in report
    name = shard_names(store, "p1")[1]
    damage(f"pools/p1/{name}")
    report, ok = cache_verify(store)
    assert not ok and f"BAD  pool p1: {name} does not match its checksum" in report


def test_cache_ls_and_verify_on_s3(store, s3, bucket):
    check_cache_ls_and_verify(store, lambda path: flip_byte(s3, bucket, f"sweeps/cache/{path}"))


def test_cache_ls_and_verify_on_a_local_store(tmp_path):
    def damage(path):
        data = bytearray((tmp_path / path).read_bytes())
        data[-5] ^= 0xFF
        (tmp_path / path).write_bytes(bytes(data))

    check_cache_ls_and_verify(SyntheticStore(tmp_path), damage)


def test_store_at_the_bucket_root(bucket, s3, tmp_path):
    store = SyntheticStore(f"s3://{bucket}", cache_dir=tmp_path)
    store.create_pool("k", {})
    store.append("k", images(0, 5))
    assert store.root == f"s3://{bucket}" and store.pool_keys() == ["k"]
    assert np.array_equal(store.read("k", 5).seeds, np.arange(5))
    assert s3.head_object(Bucket=bucket, Key="pools/k/manifest.json")


def test_check_passes_and_leaves_nothing_behind(store, s3, bucket):
    store.check()
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_check_missing_bucket_is_a_user_error(endpoint, tmp_path):
    store = SyntheticStore("s3://no-such-bucket-here/prefix", cache_dir=tmp_path)
    with pytest.raises(UserError, match="s3://no-such-bucket-here/prefix.*does not exist") as error:
        store.check()
    assert "\n" not in str(error.value) and "aws s3 mb" in str(error.value)


def test_check_unreachable_endpoint_is_a_user_error(endpoint, tmp_path, monkeypatch):
    with socket.socket() as probe:  # a loopback port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", closed)
    store = SyntheticStore("s3://bucket/prefix", cache_dir=tmp_path)
    with pytest.raises(UserError, match="cannot reach S3") as error:
        store.check()
    message = str(error.value)
    assert "s3://bucket/prefix" in message and closed in message and "\n" not in message


def test_check_local_store(tmp_path):
    root = tmp_path / "new" / "cache"
    SyntheticStore(root).check()
    assert root.is_dir() and not list(root.iterdir())
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="not writable"):
        SyntheticStore(tmp_path / "file" / "cache").check()


def test_bad_s3_url_is_a_user_error():
    with pytest.raises(UserError, match="s3://bucket/prefix"):
        SyntheticStore("s3:///no-bucket")


def test_threads_that_read_a_fresh_store_at_once_share_one_client(store):
    """The synthesis service reads pools from several threads: a missing manifest must read as
    an empty pool in every one of them (two lazily made clients, each from its own boto3
    session, raised NoSuchKey classes the other's `except` did not name)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    fresh = SyntheticStore(str(store.root), cache_dir=store.backend.cache.parent)
    start = threading.Barrier(8)

    def read_missing_manifest(_):
        start.wait()
        return fresh.manifest("absentpool00000000000")

    with ThreadPoolExecutor(8) as pool:
        manifests = list(pool.map(read_missing_manifest, range(8)))
    assert manifests == [{"count": 0, "shards": []}] * 8
