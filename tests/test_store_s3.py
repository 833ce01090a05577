"""What only an S3 store has, against a real S3-API server (moto) on loopback: its object keys,
hostile keys a bucket writer plants, the local download cache of generators (fetched again
when damaged), unfinished multipart uploads, and the `check()` the planner runs before any
compute: a missing bucket, an unreachable endpoint or one that ignores conditional writes is a
one-line UserError. (Everything both backends share is in test_store.py, run on both.)
"""

from __future__ import annotations

import json
import pickle
import socket
from pathlib import Path

import numpy as np
import pytest
from moto.server import ThreadedMotoServer
from tiny import images, shard_names

from raysweep.errors import UserError
from raysweep.store.backends import UnsafePath
from raysweep.store.cache_cli import cache_gc, cache_verify
from raysweep.store.store import SyntheticStore


@pytest.fixture
def store(bucket, tmp_path):
    return SyntheticStore(f"s3://{bucket}/sweeps/cache", cache_dir=tmp_path / "cache")


def test_pools_are_objects_under_the_prefix(store, s3, bucket):
    store.create_pool("k", {"what": "test"})
    store.append("k", images(0, 30))
    store.append("k", images(30, 50))
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert sorted(keys) == [f"sweeps/cache/pools/k/{name}" for name in
                            ("manifest.json", "meta.json", *shard_names(store, "k"))]
    assert store.pool_keys() == ["k"]
    assert store.pool_dir("k") == f"s3://{bucket}/sweeps/cache/pools/k"
    # The store travels to Ray workers pickled (its boto3 client is not).
    assert pickle.loads(pickle.dumps(store)).count("k") == 50


def test_hostile_keys_are_refused_and_nothing_outside_is_written(store, s3, bucket, tmp_path):
    """A bucket writer plants keys with `..`: a download refuses them, a listing never turns
    them into paths, `cache verify` reports them as damage, and nothing appears outside the
    cache."""
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
    assert fresh.pool_keys() == []
    report, ok = cache_verify(fresh)
    assert not ok and "refusing store path" in report
    assert f"BAD  s3://{bucket}/sweeps/cache/pools/../../escaped.txt: a key that would climb " \
           f"out of the store" in report
    assert not any(p.name == "escaped.txt" for p in tmp_path.rglob("*"))


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
    stamp = (loaded / "weights.bin").stat().st_mtime_ns
    assert other_machine.generator_dir("g") == loaded  # the cache is reused, not re-downloaded
    assert (loaded / "weights.bin").stat().st_mtime_ns == stamp

    # Without meta.json (an interrupted upload) the generator does not count as stored.
    s3.delete_object(Bucket=bucket, Key="sweeps/cache/generators/g/meta.json")
    assert not store.has_generator("g") and store.generator_keys() == []
    with pytest.raises(FileNotFoundError):
        other_machine.generator_dir("g")


def test_a_damaged_local_copy_of_a_generator_is_fetched_again(store, tmp_path):
    """The bucket's copy is fine, the machine's cache is not (a full disk, a crash): the next
    load downloads it again instead of failing with "delete the S3 copy" forever."""
    store.save_generator("g", {"generator": "test"},
                         lambda d: (Path(d) / "w.bin").write_bytes(b"weights"))
    machine = SyntheticStore(str(store.root), cache_dir=tmp_path / "machine")
    cached = machine.generator_dir("g")
    (cached / "w.bin").write_bytes(b"half a fil")
    again = machine.generator_dir("g")
    assert (again / "w.bin").read_bytes() == b"weights"
    report, ok = cache_verify(machine)
    assert ok and "ok   generator g: test, 1 files" in report


def test_unfinished_uploads_are_found_and_aborted_by_gc(store, s3, bucket):
    store.create_pool("k", {})
    upload = s3.create_multipart_upload(Bucket=bucket, Key="sweeps/cache/pools/k/big.bin")
    report, ok = cache_verify(store)
    assert ok and f"unfinished upload {upload['UploadId']}" in report
    assert "would remove" in cache_gc(store, min_age_s=0)
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
    assert "removed s3://" in cache_gc(store, delete=True, min_age_s=0)
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")


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


class IgnoresConditions:
    """WSGI middleware: an S3-compatible server that drops If-Match / If-None-Match, as some
    do, so every conditional PUT succeeds."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        environ.pop("HTTP_IF_MATCH", None)
        environ.pop("HTTP_IF_NONE_MATCH", None)
        return self.app(environ, start_response)


def test_check_refuses_an_endpoint_that_ignores_conditional_writes(endpoint, monkeypatch,
                                                                   tmp_path):
    """Two sweeps sharing such a store would lose each other's images: refused before any
    compute, in one line."""
    import boto3

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    server._server.app = IgnoresConditions(server._server.app)
    try:
        host, port = server.get_host_and_port()
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
        boto3.client("s3").create_bucket(Bucket="lax-bucket")
        with pytest.raises(UserError, match="ignores conditional writes") as error:
            SyntheticStore("s3://lax-bucket/cache", cache_dir=tmp_path).check()
        assert "\n" not in str(error.value)
        assert boto3.client("s3").list_objects_v2(Bucket="lax-bucket").get("KeyCount") == 0
    finally:
        server.stop()


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
