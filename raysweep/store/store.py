"""The synthetic store: content-addressed pools of generated images, and trained generators.

The store lives in a local directory or under `s3://bucket/prefix` (see `backends.py`); the
layout and the rules below are the same for both.

A pool lives under `pools/<key>/`, where the key hashes everything that determines its images.
Image i of a pool depends only on the pool's key fields and i, so the first n images are the
same whatever n: a ratio sweep reads nested prefixes, and asking for more appends shards.

Writes are atomic and ordered: each shard is written under a name no other write uses, before
the manifest that lists it. The manifest is replaced only if it is still the version the writer
read (a conditional write, under a lock on a local store), so two sweeps appending to one pool
never lose or reorder each other's shards. The manifest carries its own sha256 and every
shard's sha256 and image count, all checked on read; shard names are checked against a strict
pattern before they are used as paths. A shard that is missing, fails its checksum or holds
another count makes the pool `CorruptPool`; `repair` cuts the manifest back to the last good
shard so the missing images are generated again.

A trained generator lives under `generators/<key>/<version>/`, a directory written once and
never replaced or removed (readers may be loading it). `generators/<key>/meta.json`, written
last and only if absent, names the version and every file's sha256: the first complete save
wins, and every reader loads and verifies the same bytes. Loading needs a local directory, so
an S3 store downloads it into a local cache.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from raysweep.store.backends import TEMP_PREFIX, UnsafePath, check_path, create_backend

MANIFEST = "manifest.json"
META = "meta.json"
# Optional per-image arrays of pools made from real images (see PoolImages).
_PROVENANCE = ("sources", "masks", "saliency", "source_labels", "weights")
SHARD_NAME = re.compile(r"shard-\d{5,}(-[0-9a-f]{8})?\.npz")
KEY_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}")
# Conditional manifest writes that lose a race are retried; this many losses in a row means
# something is wrong (a writer stuck in a loop), not ordinary contention.
WRITE_ATTEMPTS = 50


class CorruptPool(RuntimeError):
    """A pool's manifest or shard is missing, malformed, or does not match its checksum."""


class CorruptGenerator(RuntimeError):
    """A stored generator's meta.json is malformed or a file does not match its checksum."""


def content_key(fields: dict) -> str:
    """A short, stable hash of a JSON-able mapping (sorted keys)."""
    text = json.dumps(fields, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class PoolImages:
    """A slice of a pool: uint8 images (N,H,W,C), their labels and their per-image seeds.

    Pools made from real images record provenance: `sources` (the index of each image's real
    source in the training split); inpainted ones `masks` (bool (N,H,W), True = repainted) and
    `saliency` (the source's saliency map as uint8 (N,H,W)); img2img ones `source_labels` (the
    source's class; `labels` is the class the image was denoised toward) and `weights` (float32
    (N,): the soft label's share on `labels`, the rest on `source_labels`). None elsewhere.
    """

    images: np.ndarray
    labels: np.ndarray
    seeds: np.ndarray
    sources: np.ndarray | None = None
    masks: np.ndarray | None = None
    saliency: np.ndarray | None = None
    source_labels: np.ndarray | None = None
    weights: np.ndarray | None = None


class SyntheticStore:
    """Pools and generator weights in a directory or an S3 prefix. Safe against crashes mid-write,
    concurrent writers and hostile manifests.

    Args:
        root: a local directory, or `s3://bucket/prefix`.
        cache_dir: where S3 generators are downloaded to be loaded; None means
            `$XDG_CACHE_HOME/raysweep` (`~/.cache/raysweep`). Unused for local stores.
    """

    def __init__(self, root: str | os.PathLike, cache_dir: str | os.PathLike | None = None):
        self.backend = create_backend(root, cache_dir)
        # A Path for a local store, the s3:// URL otherwise; str(root) rebuilds the store.
        self.root = self.backend.root

    def check(self) -> None:
        """Cheap proof that the store is reachable and writable, before any compute.

        Raises:
            UserError: one line naming the store and the fix (missing bucket, no access,
                unreachable endpoint, read-only directory).
        """
        self.backend.check()

    # -- generators -------------------------------------------------------------------------

    def generator_dir(self, key: str, *, area: str = "generators") -> Path:
        """A local directory holding generator `key`, every file checked against its sha256.

        For an S3 store the files are downloaded into the local cache first. FileNotFoundError
        if the generator is absent, CorruptGenerator if a file does not match.
        """
        meta = self.generator_meta(key, area=area)
        directory = self.backend.download_dir(f"{area}/{_key(key)}/{meta['version']}",
                                              meta["files"])
        problems = _check_files(directory, meta["files"])
        if problems:
            raise CorruptGenerator(f"generator {key}: {problems[0]}; delete "
                                   f"{self.backend.locate(f'{area}/{key}')} to train it again")
        return directory

    def has_generator(self, key: str, *, area: str = "generators") -> bool:
        try:
            self.generator_meta(key, area=area)
        except (FileNotFoundError, CorruptGenerator):
            return False
        return True

    def generator_meta(self, key: str, *, area: str = "generators") -> dict:
        """The generator's meta.json; FileNotFoundError if absent, CorruptGenerator if malformed."""
        data = self.backend.read_bytes(f"{area}/{_key(key)}/{META}")
        return _parse_generator_meta(key, data)

    def generator_weights(self, key: str) -> str:
        """One sha256 over every file of the stored generator (the files' own sha256s)."""
        files = self.generator_meta(key)["files"]
        return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()

    def generator_keys(self) -> list[str]:
        """Keys of the complete generators (those whose meta.json was written)."""
        return _keys_with_meta(self.backend.list("generators"))

    def save_generator(self, key: str, meta: dict, save_fn, *,
                       area: str = "generators") -> tuple[Path, bool]:
        """Call `save_fn(tmpdir)`, store the result as a new version, then meta.json if absent.

        Returns the local directory of the stored generator and whether it is the one saved
        here (False: another process stored this key first; its files win, load them).
        """
        base = f"{area}/{_key(key)}"
        version = uuid.uuid4().hex[:12]
        final = self.backend.mirror_dir(f"{base}/{version}")
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{version}-", dir=final.parent))
        try:
            save_fn(str(tmp))
            files = {p.relative_to(tmp).as_posix(): _sha256_file(p)
                     for p in sorted(tmp.rglob("*")) if p.is_file()}
            for relative in files:
                check_path(relative)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        record = json.dumps({**meta, "version": version, "files": files}, indent=2,
                            default=str).encode()
        with self.backend.lock(base):
            try:
                self.backend.upload_dir(f"{base}/{version}")
                _, current = self.backend.read_versioned(f"{base}/{META}")
                if current is not None and self.has_generator(key, area=area):
                    stored = False  # someone else's complete save came first
                else:  # absent, or an unreadable leftover: replace exactly that version
                    stored = self.backend.write_if(f"{base}/{META}", record, current)
            except BaseException:
                self.backend.delete_dir(f"{base}/{version}")
                raise
            if not stored:
                self.backend.delete_dir(f"{base}/{version}")  # never listed: nobody reads it
        return (final, True) if stored else (self.generator_dir(key, area=area), False)

    # -- reference classifiers --------------------------------------------------------------
    # Stored exactly like generators (versioned, sha256-checked files, meta.json last), under
    # `classifiers/<key>/`.

    def has_classifier(self, key: str) -> bool:
        return self.has_generator(key, area="classifiers")

    def classifier_dir(self, key: str) -> Path:
        """A local directory holding classifier `key`, its files checked."""
        return self.generator_dir(key, area="classifiers")

    def classifier_meta(self, key: str) -> dict:
        return self.generator_meta(key, area="classifiers")

    def save_classifier(self, key: str, meta: dict, save_fn) -> tuple[Path, bool]:
        """Like `save_generator`: the directory and whether this call's save is the stored one."""
        return self.save_generator(key, meta, save_fn, area="classifiers")

    # -- pools ------------------------------------------------------------------------------

    def pool_dir(self, key: str) -> Path | str:
        """Where pool `key` lives: a local Path, or its s3:// URL."""
        return self.backend.locate(f"pools/{_key(key)}")

    def create_pool(self, key: str, meta: dict) -> None:
        data = json.dumps(meta, indent=2, default=str).encode()
        with self.backend.lock(f"pools/{_key(key)}"):
            self.backend.write_if(f"pools/{key}/{META}", data, None)

    def pool_meta(self, key: str) -> dict:
        data = self.backend.read_bytes(f"pools/{_key(key)}/{META}")
        try:
            meta = json.loads(data)
        except ValueError as error:
            raise CorruptPool(f"pool {key}: meta.json is not JSON ({error})") from None
        if not isinstance(meta, dict):
            raise CorruptPool(f"pool {key}: meta.json is not a JSON object")
        return meta

    def manifest(self, key: str) -> dict:
        """The pool's manifest, checked; `{"count": 0, "shards": []}` for a pool with none."""
        return self._manifest_versioned(key)[0]

    def count(self, key: str) -> int:
        return int(self.manifest(key)["count"])

    def append(self, key: str, images: PoolImages, start: int | None = None) -> bool:
        """Add the next images of the pool: shard first, then the manifest that lists it.

        Args:
            start: the index these images begin at. If given and the pool no longer holds
                exactly `start` images (another sweep appended them meanwhile), nothing is
                written and False is returned. None appends wherever the pool ends.

        Returns:
            True when the images were appended.
        """
        n = len(images.labels)
        if not len(images.images) == len(images.seeds) == n:
            raise ValueError(f"pool {key}: {len(images.images)} images, {n} labels and "
                             f"{len(images.seeds)} seeds; append needs one of each per image")
        buffer = io.BytesIO()
        provenance = {name: value for name in _PROVENANCE
                      if (value := getattr(images, name)) is not None}
        np.savez(buffer, images=images.images, labels=images.labels, seeds=images.seeds,
                 **provenance)
        data = buffer.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        with self.backend.lock(f"pools/{_key(key)}"):
            for _ in range(WRITE_ATTEMPTS):
                manifest, version = self._manifest_versioned(key)
                if start is not None and manifest["count"] != start:
                    return False
                # A name no other write uses: a racing writer can never overwrite a listed shard.
                name = f"shard-{len(manifest['shards']):05d}-{uuid.uuid4().hex[:8]}.npz"
                self.backend.write_bytes(f"pools/{key}/{name}", data)
                shards = manifest["shards"] + [{"file": name, "start": manifest["count"],
                                                "count": n, "sha256": digest}]
                if self.backend.write_if(f"pools/{key}/{MANIFEST}", _encode_manifest(shards),
                                         version):
                    return True
                self.backend.delete(f"pools/{key}/{name}")  # lost the race; never listed
        raise RuntimeError(f"pool {key}: lost {WRITE_ATTEMPTS} manifest updates in a row to "
                           f"other writers; try again")

    def read(self, key: str, n: int) -> PoolImages:
        """The first n images of a pool, checksums verified; CorruptPool if any shard is bad.

        Reads only the shards that hold those n images."""
        manifest = self.manifest(key)
        if n > manifest["count"]:
            raise ValueError(f"pool {key} holds {manifest['count']} images, {n} asked")
        parts: list[PoolImages] = []
        have = 0
        for shard in manifest["shards"]:
            if have >= n:
                break
            parts.append(self._read_shard(key, shard))
            have += shard["count"]
        if not parts:
            return PoolImages(np.zeros((0,), np.uint8), np.zeros((0,), np.int64),
                              np.zeros((0,), np.int64))
        provenance = {name: np.concatenate([getattr(p, name) for p in parts])[:n]
                      for name in _PROVENANCE if all(getattr(p, name) is not None for p in parts)}
        return PoolImages(np.concatenate([p.images for p in parts])[:n],
                          np.concatenate([p.labels for p in parts])[:n],
                          np.concatenate([p.seeds for p in parts])[:n], **provenance)

    def verify(self, key: str, n: int | None = None) -> list[str]:
        """Problems found in the shards holding the first n images (all when None); empty
        when every one matches its checksum and count."""
        problems, have = [], 0
        for shard in self.manifest(key)["shards"]:
            if n is not None and have >= n:
                break
            try:
                self._read_shard(key, shard)
            except CorruptPool as error:
                problems.append(str(error))
            have += shard["count"]
        return problems

    def stray_shards(self, key: str) -> list[str]:
        """Shard files the manifest does not list: appends interrupted between shard and
        manifest, or in flight right now. Harmless; `cache verify` reports them."""
        listed = {s["file"] for s in self.manifest(key)["shards"]}
        names = (path.rsplit("/", 1)[-1] for path in self.backend.list(f"pools/{_key(key)}"))
        return sorted(n for n in names if SHARD_NAME.fullmatch(n) and n not in listed)

    def repair(self, key: str) -> int:
        """Cut the manifest back to the shards before the first bad one; return images kept.

        The bad shard and the ones after it are deleted after the manifest stops listing them;
        listed shards are never rewritten, so a reader of the good prefix is not disturbed.
        """
        with self.backend.lock(f"pools/{_key(key)}"):
            for _ in range(WRITE_ATTEMPTS):
                manifest, version = self._manifest_versioned(key)
                good = []
                for shard in manifest["shards"]:
                    try:
                        self._read_shard(key, shard)
                    except CorruptPool:
                        break
                    good.append(shard)
                if len(good) == len(manifest["shards"]):
                    return manifest["count"]
                if self.backend.write_if(f"pools/{key}/{MANIFEST}", _encode_manifest(good),
                                         version):
                    for shard in manifest["shards"][len(good):]:
                        self.backend.delete(f"pools/{key}/{shard['file']}")
                    return sum(s["count"] for s in good)
        raise RuntimeError(f"pool {key}: lost {WRITE_ATTEMPTS} manifest updates in a row to "
                           f"other writers; try again")

    def pool_keys(self) -> list[str]:
        return _keys_with_meta(self.backend.list("pools"))

    def _manifest_versioned(self, key: str) -> tuple[dict, str | None]:
        data, version = self.backend.read_versioned(f"pools/{_key(key)}/{MANIFEST}")
        if data is None:
            return {"count": 0, "shards": []}, None
        return _parse_manifest(key, data), version

    def _read_shard(self, key: str, shard: dict) -> PoolImages:
        try:
            data = self.backend.read_bytes(f"pools/{key}/{shard['file']}")
        except FileNotFoundError:
            raise CorruptPool(f"pool {key}: {shard['file']} is missing") from None
        if hashlib.sha256(data).hexdigest() != shard["sha256"]:
            raise CorruptPool(f"pool {key}: {shard['file']} does not match its checksum")
        with np.load(io.BytesIO(data)) as arrays:
            part = PoolImages(arrays["images"], arrays["labels"], arrays["seeds"],
                              **{name: arrays[name] for name in _PROVENANCE if name in arrays})
        if not len(part.images) == len(part.labels) == len(part.seeds) == shard["count"]:
            raise CorruptPool(f"pool {key}: {shard['file']} holds {len(part.labels)} images, "
                              f"its manifest entry says {shard['count']}")
        return part


def _key(key: str) -> str:
    """A pool or generator key, checked before it becomes part of a path."""
    if not isinstance(key, str) or not KEY_NAME.fullmatch(key):
        raise UnsafePath(f"refusing store key {str(key)[:100]!r}: keys are letters, digits, "
                         f"'_' and '-'")
    return key


def _manifest_sha256(shards: list[dict]) -> str:
    return hashlib.sha256(json.dumps(shards, sort_keys=True).encode()).hexdigest()


def _encode_manifest(shards: list[dict]) -> bytes:
    count = sum(s["count"] for s in shards)
    return json.dumps({"count": count, "shards": shards, "sha256": _manifest_sha256(shards)},
                      indent=1).encode()


def _parse_manifest(key: str, data: bytes) -> dict:
    """A manifest checked in full: JSON shape, safe shard names, contiguous starts, counts
    that add up, and its own sha256. CorruptPool naming the first problem otherwise."""
    def bad(reason: str) -> CorruptPool:
        return CorruptPool(f"pool {key}: manifest.json is malformed ({reason}); "
                           f"`raysweep cache verify` lists the damage")

    try:
        manifest = json.loads(data)
    except ValueError as error:
        raise bad(f"not JSON: {error}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("shards"), list):
        raise bad("no shard list")
    start = 0
    for shard in manifest["shards"]:
        if not isinstance(shard, dict) or set(shard) != {"file", "start", "count", "sha256"}:
            raise bad(f"shard entry {str(shard)[:80]!r} is not file/start/count/sha256")
        if not isinstance(shard["file"], str) or not SHARD_NAME.fullmatch(shard["file"]):
            raise bad(f"shard name {str(shard['file'])[:80]!r} is not shard-NNNNN[-hex].npz")
        if not all(isinstance(shard[f], int) and not isinstance(shard[f], bool)
                   for f in ("start", "count")) or shard["count"] < 1 or shard["start"] != start:
            raise bad(f"{shard['file']} starts at {shard['start']!r} with count "
                      f"{shard['count']!r}; expected start {start} and a positive count")
        if not isinstance(shard["sha256"], str) or not re.fullmatch(r"[0-9a-f]{64}", shard["sha256"]):
            raise bad(f"{shard['file']} has no sha256")
        start += shard["count"]
    if manifest.get("count") != start:
        raise bad(f"count {manifest.get('count')!r} but the shards hold {start}")
    if manifest.get("sha256") != _manifest_sha256(manifest["shards"]):
        raise bad("it does not match its own sha256")
    return {"count": start, "shards": manifest["shards"]}


def _parse_generator_meta(key: str, data: bytes) -> dict:
    try:
        meta = json.loads(data)
    except ValueError as error:
        raise CorruptGenerator(f"generator {key}: meta.json is not JSON ({error})") from None
    files = meta.get("files") if isinstance(meta, dict) else None
    if not isinstance(files, dict) or not isinstance(meta.get("version"), str) or \
            not KEY_NAME.fullmatch(meta["version"]):
        raise CorruptGenerator(f"generator {key}: meta.json names no version and files "
                               f"(an older or damaged save); the next sweep trains it again")
    for relative, digest in files.items():
        check_path(relative)
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise CorruptGenerator(f"generator {key}: meta.json has no sha256 for {relative}")
    return meta


def _check_files(directory: Path, files: dict[str, str]) -> list[str]:
    problems = []
    for relative, digest in sorted(files.items()):
        path = directory / relative
        if not path.is_file():
            problems.append(f"{relative} is missing")
        elif _sha256_file(path) != digest:
            problems.append(f"{relative} does not match its checksum")
    return problems


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _keys_with_meta(paths: list[str]) -> list[str]:
    """The `<key>` of every `<kind>/<key>/meta.json` among store paths."""
    return sorted({parts[1] for parts in (p.split("/") for p in paths)
                   if len(parts) == 3 and parts[2] == META and KEY_NAME.fullmatch(parts[1])})
