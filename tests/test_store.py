"""The synthetic store, on a local directory and on S3 (a real S3-API server, moto, on
loopback): every test below runs on both. Atomic shards, checksums, every kind of shard damage
read as damage and repaired, hostile manifests refused, stray files that hide nothing,
`cache verify` over everything the store holds, `cache gc`, and appends from several processes
at once that lose nothing.

What only one backend has is tested on its own: links and file modes on a local store here at
the end, S3's keys, download cache, `check()` and uploads in test_store_s3.py.
(`SynthesisService.ensure`, the one code path that extends pools, is in test_synthesis_actors.py.)
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import boto3
import numpy as np
import pytest
from tiny import TINY_DDPM, check_appends, images, shard_names, worker_appends

from raysweep.cli import main
from raysweep.data import create_dataset, split_dataset
from raysweep.errors import UserError
from raysweep.store.backends import UnsafePath
from raysweep.store.cache_cli import cache_gc, cache_ls, cache_verify
from raysweep.store.store import (CorruptGenerator, CorruptPool, PoolImages, SyntheticStore,
                                  _encode_manifest, content_key)
from raysweep.synthesis.fitting import ensure_generator


class Raw:
    """The store's bytes as someone with write access to them sees them: files under the root,
    or objects under the prefix. Damage is done here, never through the store's own code."""

    def __init__(self, store: SyntheticStore):
        self.store = store
        self.local = not str(store.root).startswith("s3://")
        if not self.local:
            self.s3 = boto3.client("s3")
            self.bucket, self.prefix = store.backend.bucket, store.backend.prefix

    def _key(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path

    def put(self, path: str, data: bytes) -> None:
        if self.local:
            (Path(self.store.root) / path).parent.mkdir(parents=True, exist_ok=True)
            (Path(self.store.root) / path).write_bytes(data)
        else:
            self.s3.put_object(Bucket=self.bucket, Key=self._key(path), Body=data)

    def get(self, path: str) -> bytes:
        if self.local:
            return (Path(self.store.root) / path).read_bytes()
        return self.s3.get_object(Bucket=self.bucket, Key=self._key(path))["Body"].read()

    def delete(self, path: str) -> None:
        if self.local:
            (Path(self.store.root) / path).unlink()
        else:
            self.s3.delete_object(Bucket=self.bucket, Key=self._key(path))

    def names(self, prefix: str) -> list[str]:
        if self.local:
            base = Path(self.store.root)
            return sorted(p.relative_to(base).as_posix() for p in (base / prefix).rglob("*")
                          if p.is_file() and not p.name.startswith("."))
        found = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=self._key(prefix))
        start = len(self.prefix) + 1 if self.prefix else 0
        return sorted(o["Key"][start:] for o in found.get("Contents", []))

    def flip_byte(self, path: str) -> None:
        data = bytearray(self.get(path))
        data[-5] ^= 0xFF
        self.put(path, bytes(data))


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return SyntheticStore(tmp_path / "store")
    bucket = request.getfixturevalue("bucket")
    return SyntheticStore(f"s3://{bucket}/sweeps/cache", cache_dir=tmp_path / "cache")


@pytest.fixture
def raw(store):
    return Raw(store)


def test_content_key_is_order_independent_and_sensitive():
    assert content_key({"a": 1, "b": [1, 2]}) == content_key({"b": [1, 2], "a": 1})
    assert content_key({"a": 1}) != content_key({"a": 2})


def test_append_then_read_prefixes(store):
    store.create_pool("k", {"what": "test"})
    store.append("k", images(0, 30))
    store.append("k", images(30, 50))
    assert store.count("k") == 50
    prefix = store.read("k", 40)
    assert np.array_equal(prefix.seeds, np.arange(40))
    assert np.array_equal(store.read("k", 10).images, prefix.images[:10])
    with pytest.raises(ValueError, match="holds 50"):
        store.read("k", 51)
    # str(root) rebuilds the same store, as trials do from the sweep's context.
    assert SyntheticStore(str(store.root)).count("k") == 50


def test_wrong_checksum_is_detected_and_repaired(store, raw):
    store.create_pool("k", {})
    for start in (0, 10, 20):
        store.append("k", images(start, start + 10))
    names = shard_names(store, "k")
    raw.flip_byte(f"pools/k/{names[1]}")
    assert store.verify("k") == [f"pool k: {names[1]} does not match its checksum"]
    assert store.verify("k", 10) == []  # only the shards holding the first 10 images are read
    with pytest.raises(CorruptPool, match="checksum"):
        store.read("k", 15)
    assert store.read("k", 10).images.shape[0] == 10  # shards before the bad one still read
    assert store.repair("k") == 10
    assert store.verify("k") == [] and store.count("k") == 10
    assert [n for n in raw.names("pools/k") if "shard-" in n] == [f"pools/k/{names[0]}"]
    store.append("k", images(10, 20))
    assert np.array_equal(store.read("k", 20).seeds, np.arange(20))


def test_missing_shard_is_detected(store, raw):
    store.create_pool("k", {})
    store.append("k", images(0, 10))
    name = shard_names(store, "k")[0]
    raw.delete(f"pools/k/{name}")
    assert store.verify("k") == [f"pool k: {name} is missing"]


def test_shard_count_is_checked_against_its_arrays(store, raw):
    store.create_pool("k", {})
    store.append("k", images(0, 10))
    shards = store.manifest("k")["shards"]
    shards[0]["count"] = 12  # a manifest that claims more images than the shard holds
    raw.put("pools/k/manifest.json", _encode_manifest(shards))
    assert store.verify("k") == [f"pool k: {shards[0]['file']} holds 10 images, its manifest "
                                 f"entry says 12"]


def test_manifest_checksum_and_shape_are_checked(store, raw):
    store.create_pool("k", {})
    store.append("k", images(0, 10))
    manifest = json.loads(raw.get("pools/k/manifest.json"))
    manifest["count"] = 11
    raw.put("pools/k/manifest.json", json.dumps(manifest).encode())
    with pytest.raises(CorruptPool, match="count 11 but the shards hold 10"):
        store.count("k")
    manifest["count"] = 10
    manifest["shards"][0]["sha256"] = "0" * 64  # consistent shape, but not what was written
    raw.put("pools/k/manifest.json", json.dumps(manifest).encode())
    with pytest.raises(CorruptPool, match="does not match its own sha256"):
        store.read("k", 1)
    raw.put("pools/k/manifest.json", b'{"count": 1')
    with pytest.raises(CorruptPool, match="not JSON"):
        store.manifest("k")


# -- every kind of shard damage is damage: CorruptPool, exit 1 from verify, repaired -------

def npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def good(n: int = 5, size: int = 4, start: int = 10) -> dict:
    part = images(start, start + n)
    pixels = np.resize(part.images, (n, size, size, 1))
    return {"images": pixels, "labels": part.labels, "seeds": part.seeds}


def compressed_npz() -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **good())
    return buffer.getvalue()


def npy_not_npz() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, good()["images"])
    return buffer.getvalue()


def pickled_object_array() -> bytes:
    return npz(**{**good(), "labels": np.array([object()] * 5)})


DAMAGE = {
    "a zip header then garbage": (b"PK\x03\x04" + b"garbage" * 20, "is not a readable shard"),
    "no zip at all": (b"\x00" * 64, "is not a readable shard"),
    "a .npy, not an .npz": (npy_not_npz(), "is not a readable shard"),
    "a compressed member": (compressed_npz(), "members raysweep never writes"),
    "an object (pickled) array": (pickled_object_array(), "is not a readable shard"),
    "no labels": (npz(images=good()["images"], seeds=good()["seeds"]), "has no labels array"),
    "float images": (npz(**{**good(), "images": good()["images"].astype(np.float32)}),
                     "images of dtype float32"),
    "images without a channel axis": (npz(**{**good(), "images": good()["images"][..., 0]}),
                                      "not uint8 (N, H, W, 1 or 3)"),
    "images of another size than the pool's": (npz(**good(size=8)), "the pool's first shard"),
    "float labels": (npz(**{**good(), "labels": good()["labels"].astype(float)}),
                     "labels of dtype float64"),
    "labels beyond the class count": (npz(**{**good(), "labels": np.full(5, 12)}),
                                      "labels from 12 to 12, outside [0, 10)"),
    "negative labels": (npz(**{**good(), "labels": np.full(5, -1)}), "outside [0, 10)"),
    "a mask of another shape": (npz(**{**good(), "masks": np.zeros((5, 2, 2), bool)}),
                                "masks of dtype bool and shape (5, 2, 2)"),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_every_kind_of_shard_damage_reads_as_damage_and_is_repaired(store, raw, kind):
    """A shard whose manifest entry and checksum match (someone rewrote both, or a bug wrote
    it): whatever is wrong inside, read, verify and repair see a CorruptPool, never a
    BadZipFile or KeyError, and the pool is cut back to its good prefix."""
    data, reason = DAMAGE[kind]
    store.create_pool("k", {"num_classes": 10})
    store.append("k", images(0, 10))
    name = "shard-00001-0badbeef.npz"
    raw.put(f"pools/k/{name}", data)
    entry = {"file": name, "start": 10, "count": 5,
             "sha256": hashlib.sha256(data).hexdigest()}
    raw.put("pools/k/manifest.json", _encode_manifest(store.manifest("k")["shards"] + [entry]))

    problems = store.verify("k")
    assert len(problems) == 1 and problems[0].startswith(f"pool k: {name} ") and \
        reason in problems[0], problems
    with pytest.raises(CorruptPool, match=name):
        store.read("k", 15)
    report, ok = cache_verify(store)  # `raysweep cache verify` exits 1 on it
    assert not ok and f"BAD  pool k: {name}" in report
    assert store.repair("k") == 10  # what the next run does before it extends the pool
    assert store.verify("k") == [] and name not in " ".join(raw.names("pools/k"))
    assert store.append("k", images(10, 15), start=10)
    assert np.array_equal(store.read("k", 15).seeds, np.arange(15))


def test_traversal_manifest_is_refused_and_nothing_outside_is_touched(store, raw, tmp_path,
                                                                      capsys):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    store.create_pool("k", {})
    store.append("k", images(0, 10))
    first = store.manifest("k")["shards"][0]
    hostile = [first, {**first, "file": "../../../victim.txt", "start": 10}]
    raw.put("pools/k/manifest.json", _encode_manifest(hostile))
    for action in (lambda: store.read("k", 20), lambda: store.repair("k"),
                   lambda: store.verify("k"), lambda: store.count("k")):
        with pytest.raises(CorruptPool, match="shard name '../../../victim.txt'"):
            action()
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


def test_malformed_manifest_in_cache_ls_is_one_line(store, raw, capsys):
    store.create_pool("k", {})
    raw.put("pools/k/manifest.json", b'{"shards": [{"file": 3}]}')
    assert main(["cache", "ls", "--store", str(store.root)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pool k: manifest.json is malformed" in err


def test_a_stray_file_hides_nothing(store, raw, capsys):
    """A copy someone made by hand (a name raysweep never writes) and, on S3, a console's
    folder marker: `cache ls` still lists the store, `cache verify` still checks every pool and
    notes the strays (they are not damage), `cache gc` leaves them alone."""
    store.create_pool("k", {"generator": "ddpm"})
    store.append("k", images(0, 10))
    strays = ["pools/notes (copy).txt", "pools/k/manifest (copy).json"]
    if not raw.local:
        strays += ["pools/k/", "pools/"]
    for path in strays:
        raw.put(path, b"")
    assert main(["cache", "ls", "--store", str(store.root)]) == 0
    assert [(p["key"], p["images"]) for p in json.loads(cache_ls(store, True))["pools"]] == \
        [("k", 10)]
    report, ok = cache_verify(store)
    assert ok and "ok   pool k: 10 images in 1 shards" in report
    assert report.count("not a name raysweep writes") == 2, report
    gc = cache_gc(store, delete=True, min_age_s=0)
    assert "nothing to remove" in gc and "left alone" in gc
    assert all(path in raw.names("pools") for path in strays if not path.endswith("/"))


def test_append_interrupted_between_shard_and_manifest(store):
    """A process killed after writing a shard but before the manifest: the pool is as it was,
    the orphan shard is reported and never read, and the next append carries on."""
    store.create_pool("k", {})
    store.append("k", images(0, 10))
    backend = type(store.backend).__name__
    script = f"""
import os, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from tiny import images
from raysweep.store.backends import {backend}
from raysweep.store.store import SyntheticStore
write_if = {backend}.write_if
def die_before_manifest(self, path, data, version):
    if path.endswith("manifest.json"):
        os._exit(9)  # the process dies here: the shard is written, the manifest is not
    return write_if(self, path, data, version)
{backend}.write_if = die_before_manifest
SyntheticStore({str(store.root)!r}).append("k", images(10, 20))
"""
    assert subprocess.run([sys.executable, "-c", script]).returncode == 9
    assert store.count("k") == 10 and store.verify("k") == []
    assert len(store.stray_shards("k")) == 1
    report, ok = cache_verify(store)
    assert ok and f"{store.stray_shards('k')[0]} is listed in no manifest" in report
    assert store.append("k", images(10, 20), start=10)
    assert np.array_equal(store.read("k", 20).seeds, np.arange(20))


def test_failed_writes_leave_no_temp_files(store):
    def save_then_fail(directory):
        (Path(directory) / "weights.bin").write_bytes(b"x" * 100)
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        store.save_generator("g", {}, save_then_fail)
    assert store.backend.leftovers("generators") == [] and not store.has_generator("g")
    assert store.unreferenced_versions() == []


def test_two_processes_appending_to_one_pool_lose_nothing(store):
    """Each process appends its own numbered batches: every image lands exactly once, each
    process's batches in the order it appended them, and the manifest's offsets are exact
    (a local lock, or S3's conditional PUTs, serialise the manifest updates)."""
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


def test_two_processes_extending_one_pool_write_each_image_once(store):
    """Both extend the same pool to 150 images in chunks (as two sweeps sharing a store do):
    the pool ends with images 0..149, each exactly once, in order."""
    store.create_pool("k", {})
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    workers = [context.Process(target=worker_appends,
                               args=(str(store.root), "k", w, 0, 150, barrier))
               for w in range(2)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(180)
        assert process.exitcode == 0
    assert store.count("k") == 150 and store.verify("k") == []
    assert np.array_equal(store.read("k", 150).seeds, np.arange(150))


def write(name: bytes):
    return lambda d: (Path(d) / "w.bin").write_bytes(name)


def test_generator_saved_twice_keeps_the_first_and_never_removes_it(store, raw, tmp_path):
    first, stored = store.save_generator("g", {"n": 1}, write(b"first"))
    assert stored and (first / "w.bin").read_bytes() == b"first"
    second, stored = store.save_generator("g", {"n": 2}, write(b"second"))
    assert not stored and second == first and (first / "w.bin").read_bytes() == b"first"
    assert store.generator_meta("g")["n"] == 1
    version = store.generator_meta("g")["version"]
    assert raw.names("generators") == sorted(["generators/g/meta.json",
                                              f"generators/g/{version}/w.bin"])
    raw.put(f"generators/g/{version}/w.bin", b"tampered")
    fresh = SyntheticStore(str(store.root), cache_dir=tmp_path / "fresh")
    with pytest.raises(CorruptGenerator, match="w.bin does not match its checksum"):
        fresh.generator_dir("g")
    report, ok = cache_verify(store)  # the stored copy is checked, not a cached one
    assert not ok and "BAD  generator g: w.bin does not match its checksum" in report


def test_verify_covers_classifiers_and_every_version_and_gc_removes_what_nothing_names(
        store, raw, capsys):
    store.create_pool("p", {})
    store.append("p", images(0, 5))
    store.save_generator("g", {"generator": "ddpm"}, write(b"weights"))
    store.save_classifier("c", {"kind": "reference-classifier"}, write(b"classifier"))
    # What interrupted writes leave: a shard no manifest lists, a version no meta.json names,
    # a generator whose meta.json was never written.
    store.backend.write_bytes("pools/p/shard-00009-0000beef.npz", b"orphan")
    raw.put("generators/g/0123456789ab/w.bin", b"a losing save")
    raw.put("generators/h/0123456789ab/w.bin", b"an interrupted save")
    report, ok = cache_verify(store)
    assert ok, report
    assert "ok   classifier c: reference-classifier, 1 files" in report
    assert "note generator g: version 0123456789ab is named by no meta.json" in report
    assert "note generator h: version 0123456789ab is named by no meta.json" in report
    assert "shard-00009-0000beef.npz is listed in no manifest" in report
    assert "checked 1 pools, 1 generators and 1 classifiers" in report

    version = store.classifier_meta("c")["version"]
    raw.put(f"classifiers/c/{version}/w.bin", b"tampered")
    report, ok = cache_verify(store)
    assert not ok and "BAD  classifier c: w.bin does not match its checksum" in report
    raw.put(f"classifiers/c/{version}/w.bin", b"classifier")

    # Young leftovers are left alone (a write may be under way); a dry run removes nothing.
    assert "nothing to remove" in cache_gc(store)
    assert main(["cache", "gc", "--store", str(store.root), "--min-age-hours", "0"]) == 0
    out = capsys.readouterr().out
    assert out.count("would remove") == 3 and "nothing removed yet" in out
    assert len(raw.names("generators")) == 4
    assert main(["cache", "gc", "--store", str(store.root), "--min-age-hours", "0", "--yes"]) == 0
    out = capsys.readouterr().out
    assert out.count("removed ") == 4 and "removed 3 item(s)" in out
    version = store.generator_meta("g")["version"]
    assert raw.names("generators") == sorted(["generators/g/meta.json",
                                              f"generators/g/{version}/w.bin"])
    report, ok = cache_verify(store)
    assert ok and "note" not in report
    assert np.array_equal(store.read("p", 5).seeds, np.arange(5))
    assert (store.generator_dir("g") / "w.bin").read_bytes() == b"weights"


def test_gc_removes_old_pools_only_when_asked(store, capsys):
    store.create_pool("p", {})
    store.append("p", images(0, 5))
    assert main(["cache", "gc", "--store", str(store.root), "--min-age-hours", "0"]) == 0
    assert "nothing to remove" in capsys.readouterr().out
    assert main(["cache", "gc", "--store", str(store.root), "--pools-older-than", "0",
                 "--yes"]) == 0
    assert "removed pool p (last written" in capsys.readouterr().out
    assert store.pool_keys() == [] and store.count("p") == 0
    assert main(["cache", "gc", "--store", str(store.root), "--pools-older-than", "nan"]) == 2


@pytest.fixture(scope="module")
def digits_train():
    return split_dataset(create_dataset("digits", image_size=8), per_class=3, seed=0).train


def test_generator_trained_once_then_reused(store, digits_train, tmp_path):
    messages = []
    first = ensure_generator(store, "ddpm", TINY_DDPM, digits_train, 0, log=messages.append)
    elsewhere = SyntheticStore(str(store.root), cache_dir=tmp_path / "elsewhere")
    second = ensure_generator(elsewhere, "ddpm", TINY_DDPM, digits_train, 0, log=messages.append)
    assert not first.reused and second.reused
    assert first.key == second.key and first.weights_sha256 == second.weights_sha256
    assert any("skipping training" in m for m in messages)
    other = ensure_generator(store, "ddpm", {**TINY_DDPM, "steps": 4}, digits_train, 0, log=print)
    assert other.key != first.key and not other.reused


def test_cache_ls_and_verify(store, raw):
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
    raw.flip_byte(f"pools/p1/{name}")
    report, ok = cache_verify(store)
    assert not ok and f"BAD  pool p1: {name} does not match its checksum" in report


# -- a local store: links never followed, files its other users can read -------------------

def test_a_link_never_leads_a_write_or_a_read_out_of_the_local_store(tmp_path, capsys):
    """`pools/<key>` a link to another folder: the next append wrote its manifest, meta.json
    and shard there. Now every path through a link is refused, and nothing lands outside."""
    outside = tmp_path / "outside"
    outside.mkdir()
    store = SyntheticStore(tmp_path / "store")
    (tmp_path / "store" / "pools").mkdir(parents=True)
    (tmp_path / "store" / "pools" / "k").symlink_to(outside)
    with pytest.raises(UnsafePath, match="symbolic link"):
        store.create_pool("k", {})
    with pytest.raises(UnsafePath, match="symbolic link"):
        store.append("k", images(0, 5))
    with pytest.raises(UnsafePath, match="symbolic link"):
        store.read("k", 0)
    assert list(outside.iterdir()) == []

    # A listed shard that is a link to a file outside: refused, not read.
    secret = tmp_path / "secret.npz"
    secret.write_bytes(npz(**good()))
    store.create_pool("j", {})
    store.append("j", images(0, 5))
    name = shard_names(store, "j")[0]
    (tmp_path / "store" / "pools" / "j" / name).unlink()
    (tmp_path / "store" / "pools" / "j" / name).symlink_to(secret)
    with pytest.raises(UnsafePath, match="symbolic link"):
        store.read("j", 5)
    # A planted lock link does not make the store create a file elsewhere.
    (tmp_path / "store" / "pools" / "j" / ".lock").unlink()
    (tmp_path / "store" / "pools" / "j" / ".lock").symlink_to(tmp_path / "created-by-lock")
    with pytest.raises(OSError):
        store.append("j", images(5, 10))
    assert not (tmp_path / "created-by-lock").exists()

    report, ok = cache_verify(store)
    pools = tmp_path / "store" / "pools"
    assert not ok and f"BAD  refusing store path 'pools/j/{name}'" in report
    for link in (pools / "k", pools / "j" / name, pools / "j" / ".lock"):
        assert f"BAD  {link}: a symbolic link, which raysweep never makes" in report
    assert main(["cache", "verify", "--store", str(store.root)]) == 1
    capsys.readouterr()
    assert main(["cache", "gc", "--store", str(store.root), "--yes", "--min-age-hours", "0"]) == 0
    assert "left alone" in capsys.readouterr().out and (tmp_path / "store/pools/k").is_symlink()


def test_a_generator_file_that_is_a_link_is_refused(tmp_path):
    store = SyntheticStore(tmp_path / "store")
    directory, _ = store.save_generator("g", {}, write(b"weights"))
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"weights")
    (directory / "w.bin").unlink()
    (directory / "w.bin").symlink_to(outside)
    with pytest.raises(UnsafePath, match="symbolic link"):
        store.generator_dir("g")


def test_a_shared_local_store_is_readable_by_its_other_users(tmp_path):
    """With a team's umask (002) every file and folder the store writes is group-writable,
    not the 0600 / 0700 of Python's temp files, which locked the other users out."""
    previous = os.umask(0o002)
    try:
        store = SyntheticStore(tmp_path / "store")
        store.create_pool("k", {})
        store.append("k", images(0, 5))
        directory, _ = store.save_generator("g", {}, write(b"weights"))
    finally:
        os.umask(previous)
    root = tmp_path / "store"
    files = [root / "pools/k/manifest.json", root / "pools/k/meta.json",
             root / "pools/k" / shard_names(store, "k")[0], root / "generators/g/meta.json",
             directory / "w.bin", root / "pools/k/.lock"]
    assert {f.name: oct(f.stat().st_mode & 0o777) for f in files} == \
        {f.name: "0o664" for f in files}
    assert oct(directory.stat().st_mode & 0o777) == "0o775"


def test_check_local_store(tmp_path):
    root = tmp_path / "new" / "cache"
    SyntheticStore(root).check()
    assert root.is_dir() and not list(root.iterdir())
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="not writable"):
        SyntheticStore(tmp_path / "file" / "cache").check()


def test_temp_files_of_an_older_crash_are_found_and_collected(tmp_path):
    store = SyntheticStore(tmp_path)
    store.create_pool("k", {})
    leftover = store.pool_dir("k") / ".tmp-manifest.json-abc"
    leftover.write_bytes(b"{")
    report, ok = cache_verify(store)
    assert ok and f"note {leftover}: left by an interrupted write" in report
    old = os.stat(leftover).st_mtime - 7200
    os.utime(leftover, (old, old))  # two hours ago: no write can still be under way
    assert f"removed {leftover}" in cache_gc(store, delete=True)
    assert not leftover.exists()


def test_pool_images_round_trip_provenance(store):
    part = images(0, 4)
    inpainted = PoolImages(part.images, part.labels, part.seeds, sources=np.arange(4),
                           masks=np.ones((4, 4, 4), bool), saliency=np.zeros((4, 4, 4), np.uint8))
    store.create_pool("k", {})
    store.append("k", inpainted)
    back = store.read("k", 4)
    assert np.array_equal(back.sources, np.arange(4)) and back.masks.all()

