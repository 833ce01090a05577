"""The synthetic store on a local directory: atomic shards, checksums, repair, reuse, hostile
manifests refused, and appends from several processes at once that lose nothing.

(`SynthesisService.ensure`, the one code path that extends pools, is tested in
test_synthesis_actors.py; the same store on S3 in test_store_s3.py.)
"""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tiny import TINY_DDPM, check_appends, images, shard_names, worker_appends

from raysweep.cli import main
from raysweep.data import create_dataset, split_dataset
from raysweep.store.backends import UnsafePath
from raysweep.store.cache_cli import cache_verify
from raysweep.synthesis.fitting import ensure_generator
from raysweep.store.store import (
    CorruptGenerator,
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


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))


def test_wrong_checksum_is_detected_and_repaired(tmp_path):
    store = SyntheticStore(tmp_path)
    store.create_pool("k", {})
    for start in (0, 10, 20):
        store.append("k", images(start, start + 10))
    names = shard_names(store, "k")
    flip_byte(store.pool_dir("k") / names[1])
    assert store.verify("k") == [f"pool k: {names[1]} does not match its checksum"]
    assert store.verify("k", 10) == []  # only the shards holding the first 10 images are read
    with pytest.raises(CorruptPool, match="checksum"):
        store.read("k", 15)
    assert store.read("k", 10).images.shape[0] == 10  # shards before the bad one still read
    assert store.repair("k") == 10
    assert store.verify("k") == [] and store.count("k") == 10
    assert sorted(p.name for p in store.pool_dir("k").glob("shard-*")) == names[:1]


def test_truncated_shard_is_detected(tmp_path):
    store = SyntheticStore(tmp_path)
    store.create_pool("k", {})
    store.append("k", images(0, 10))
    shard = store.pool_dir("k") / shard_names(store, "k")[0]
    shard.write_bytes(shard.read_bytes()[:100])
    assert store.verify("k") == [f"pool k: {shard.name} does not match its checksum"]


def test_shard_count_is_checked_against_its_arrays(tmp_path):
    from raysweep.store.store import _encode_manifest

    store = SyntheticStore(tmp_path)
    store.create_pool("k", {})
    store.append("k", images(0, 10))
    shards = store.manifest("k")["shards"]
    shards[0]["count"] = 12  # a manifest that claims more images than the shard holds
    (store.pool_dir("k") / "manifest.json").write_bytes(_encode_manifest(shards))
    assert store.verify("k") == [f"pool k: {shards[0]['file']} holds 10 images, its manifest "
                                 f"entry says 12"]


def test_manifest_checksum_and_shape_are_checked(tmp_path):
    store = SyntheticStore(tmp_path)
    store.create_pool("k", {})
    store.append("k", images(0, 10))
    path = store.pool_dir("k") / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["shards"][0]["start"] = 0
    manifest["count"] = 11
    path.write_text(json.dumps(manifest))
    with pytest.raises(CorruptPool, match="count 11 but the shards hold 10"):
        store.count("k")
    manifest["count"] = 10
    manifest["shards"][0]["sha256"] = "0" * 64  # consistent shape, but not what was written
    path.write_text(json.dumps(manifest))
    with pytest.raises(CorruptPool, match="does not match its own sha256"):
        store.read("k", 1)
    path.write_text('{"count": 1')
    with pytest.raises(CorruptPool, match="not JSON"):
        store.manifest("k")


def test_traversal_manifest_is_refused_and_nothing_outside_is_touched(tmp_path, capsys):
    from raysweep.store.store import _encode_manifest

    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    store = SyntheticStore(tmp_path / "store")
    store.create_pool("k", {})
    store.append("k", images(0, 10))
    good = store.manifest("k")["shards"][0]
    hostile = [good, {**good, "file": "../../../victim.txt", "start": 10}]
    (store.pool_dir("k") / "manifest.json").write_bytes(_encode_manifest(hostile))
    for action in (lambda: store.read("k", 20), lambda: store.repair("k"),
                   lambda: store.verify("k"), lambda: store.count("k")):
        with pytest.raises(CorruptPool, match="shard name '../../../victim.txt'"):
            action()
    assert victim.read_text() == "keep me"
    with pytest.raises(UnsafePath):
        store.read("../../victim", 1)
    with pytest.raises(UnsafePath):
        store.backend.read_bytes("/etc/passwd")
    # The CLI: `cache ls` refuses in one line (exit 2), `cache verify` reports it (exit 1).
    assert main(["cache", "ls", "--store", str(store.root)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "victim.txt" in err and "cache verify" in err
    assert main(["cache", "verify", "--store", str(store.root)]) == 1
    assert "BAD  pool k: manifest.json is malformed" in capsys.readouterr().out
    assert victim.read_text() == "keep me"


def test_malformed_manifest_in_cache_ls_is_one_line(tmp_path, capsys):
    store = SyntheticStore(tmp_path)
    store.create_pool("k", {})
    (store.pool_dir("k") / "manifest.json").write_text('{"shards": [{"file": 3}]}')
    assert main(["cache", "ls", "--store", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pool k: manifest.json is malformed" in err


def test_append_interrupted_between_shard_and_manifest(tmp_path):
    """A process killed after writing a shard but before the manifest: the pool is as it was,
    the orphan shard is reported and never read, and the next append carries on."""
    store = SyntheticStore(tmp_path)
    store.create_pool("k", {})
    store.append("k", images(0, 10))
    script = f"""
import os, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from tiny import images
from raysweep.store.backends import LocalBackend
from raysweep.store.store import SyntheticStore
write_if = LocalBackend.write_if
def die_before_manifest(self, path, data, version):
    if path.endswith("manifest.json"):
        os._exit(9)  # the process dies here: the shard is written, the manifest is not
    return write_if(self, path, data, version)
LocalBackend.write_if = die_before_manifest
SyntheticStore({str(tmp_path)!r}).append("k", images(10, 20))
"""
    assert subprocess.run([sys.executable, "-c", script]).returncode == 9
    assert len(list(store.pool_dir("k").glob("shard-*"))) == 2  # the orphan is on disk
    assert store.count("k") == 10 and store.verify("k") == []
    assert len(store.stray_shards("k")) == 1
    report, ok = cache_verify(store)
    assert ok and f"{store.stray_shards('k')[0]} is listed in no manifest" in report
    assert store.append("k", images(10, 20), start=10)
    assert np.array_equal(store.read("k", 20).seeds, np.arange(20))


def test_failed_writes_leave_no_temp_files_and_verify_finds_old_ones(tmp_path):
    store = SyntheticStore(tmp_path)

    def save_then_fail(directory):
        (Path(directory) / "weights.bin").write_bytes(b"x" * 100)
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        store.save_generator("g", {}, save_then_fail)
    assert store.backend.leftovers("generators") == [] and not store.has_generator("g")
    store.create_pool("k", {})
    (store.pool_dir("k") / ".tmp-manifest.json-abc").write_bytes(b"{")  # from an older crash
    report, ok = cache_verify(store)
    assert ".tmp-manifest.json-abc: a temp file left by an interrupted write" in report


def test_two_processes_appending_to_one_pool_lose_nothing(tmp_path):
    """Each process appends its own numbered batches: every image lands exactly once, each
    process's batches in the order it appended them, and the manifest's offsets are exact."""
    root = str(tmp_path)
    SyntheticStore(root).create_pool("k", {})
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    workers = [context.Process(target=worker_appends, args=(root, "k", w, 60, None, barrier))
               for w in range(2)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(120)
        assert process.exitcode == 0
    check_appends(SyntheticStore(root), "k", workers=2, batches=60)


def test_two_processes_extending_one_pool_write_each_image_once(tmp_path):
    """Both extend the same pool to 300 images in chunks (as two sweeps sharing a store do):
    the pool ends with images 0..299, each exactly once, in order."""
    root = str(tmp_path)
    SyntheticStore(root).create_pool("k", {})
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    workers = [context.Process(target=worker_appends, args=(root, "k", w, 0, 300, barrier))
               for w in range(2)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(120)
        assert process.exitcode == 0
    store = SyntheticStore(root)
    assert store.count("k") == 300 and store.verify("k") == []
    assert np.array_equal(store.read("k", 300).seeds, np.arange(300))


def test_generator_saved_twice_keeps_the_first_and_never_removes_it(tmp_path):
    store = SyntheticStore(tmp_path)
    first, stored = store.save_generator("g", {"n": 1},
                                         lambda d: (Path(d) / "w.bin").write_bytes(b"first"))
    assert stored and (first / "w.bin").read_bytes() == b"first"
    second, stored = store.save_generator("g", {"n": 2},
                                          lambda d: (Path(d) / "w.bin").write_bytes(b"second"))
    assert not stored and second == first and (first / "w.bin").read_bytes() == b"first"
    assert store.generator_meta("g")["n"] == 1
    assert sorted(p.name for p in (tmp_path / "generators" / "g").iterdir()
                  if not p.name.startswith(".")) == sorted([first.name, "meta.json"])
    (first / "w.bin").write_bytes(b"tampered")
    with pytest.raises(CorruptGenerator, match="w.bin does not match its checksum"):
        store.generator_dir("g")
    report, ok = cache_verify(store)
    assert not ok and "BAD  generator g: w.bin does not match its checksum" in report


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
