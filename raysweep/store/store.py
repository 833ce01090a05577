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
pattern before they are used as paths. A shard that is missing, fails its checksum, is no
readable `.npz`, lacks an array, holds another count, another dtype or image shape than the
pool's, or labels outside [0, num_classes) makes the pool `CorruptPool`, whatever the damage;
`repair` cuts the manifest back to the last good shard so the missing images are generated
again.

A trained generator lives under `generators/<key>/<version>/`, a directory written once and
never replaced or removed (readers may be loading it). `generators/<key>/meta.json`, written
last and only if absent, names the version and every file's sha256: the first complete save
wins, and every reader loads and verifies the same bytes. Loading needs a local directory, so
an S3 store downloads it into a local cache; a cached copy found damaged is downloaded again.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import uuid
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from raysweep.store.backends import (TEMP_PREFIX, Stored, UnsafePath, check_path,
                                     create_backend, make_temp_dir)

MANIFEST = "manifest.json"
META = "meta.json"
# Optional per-image arrays of pools made from real images (see PoolImages).
_PROVENANCE = ("sources", "masks", "saliency", "source_labels", "weights")
_ARRAYS = ("images", "labels", "seeds", *_PROVENANCE)
# What parsing hostile or damaged shard bytes can raise (zip, npy header, truncated data).
_DECODE_ERRORS = (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, KeyError,
                  MemoryError)
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
        # Each pool's class count from its meta.json (written once, never changed).
        self._num_classes: dict[str, int | None] = {}

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
        path = f"{area}/{_key(key)}/{meta['version']}"
        directory = self.backend.download_dir(path, meta["files"])
        problems = _check_files(directory, meta["files"])
        if problems:  # a damaged download cache (S3) is fetched again; the store's copy may be fine
            again = self.backend.refetch_dir(path, meta["files"])
            if again is not None:
                directory, problems = again, _check_files(again, meta["files"])
        if problems:
            raise CorruptGenerator(f"{area[:-1]} {key}: {problems[0]} in "
                                   f"{self.backend.locate(path)}; delete "
                                   f"{self.backend.locate(f'{area}/{key}')} to train it again")
        return directory

    def verify_generator(self, key: str, *, area: str = "generators") -> list[str]:
        """Problems of the stored copy of generator `key` (an S3 store's objects, downloaded
        afresh, not its local cache): files missing or not matching meta.json's sha256s.
        FileNotFoundError if absent, CorruptGenerator if meta.json is malformed."""
        meta = self.generator_meta(key, area=area)
        path = f"{area}/{_key(key)}/{meta['version']}"
        with self.backend.stored_copy(path, meta["files"]) as directory:
            return [f"{area[:-1]} {key}: {problem} in {self.backend.locate(path)}"
                    for problem in _check_files(directory, meta["files"])]

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

    def generator_keys(self, area: str = "generators") -> list[str]:
        """Keys of the complete generators (those whose meta.json was written)."""
        return _keys_with_meta(self.backend.list(area))

    def unreferenced_versions(self, area: str = "generators") -> list[tuple[str, str, Stored]]:
        """(key, version, newest file's time and total size) of every stored version that no
        meta.json names: saves interrupted before their meta.json, or that lost to another
        save and were not removed. Nothing reads them. Keys whose meta.json is unreadable are
        left out (`cache verify` reports those)."""
        versions: dict[tuple[str, str], Stored] = {}
        for path, info in self.backend.stat(area).items():
            parts = path.split("/")
            if len(parts) >= 4 and KEY_NAME.fullmatch(parts[1]):
                seen = versions.get((parts[1], parts[2]), Stored(0.0, 0))
                versions[(parts[1], parts[2])] = Stored(max(seen.modified, info.modified),
                                                        seen.size + info.size)
        named = {}
        for key in {key for key, _ in versions}:
            try:
                named[key] = self.generator_meta(key, area=area)["version"]
            except FileNotFoundError:
                named[key] = None
            except (CorruptGenerator, UnsafePath):
                continue
        return sorted((key, version, info) for (key, version), info in versions.items()
                      if key in named and named[key] != version)

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
        tmp = make_temp_dir(final.parent, f"{TEMP_PREFIX}{version}-")
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
            parts.append(self._read_shard(key, shard, parts[0] if parts else None))
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
        problems, have, first = [], 0, None
        for shard in self.manifest(key)["shards"]:
            if n is not None and have >= n:
                break
            try:
                part = self._read_shard(key, shard, first)
                first = first or part
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
                good, first = [], None
                for shard in manifest["shards"]:
                    try:
                        part = self._read_shard(key, shard, first)
                    except CorruptPool:
                        break
                    first = first or part
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

    def delete_pool(self, key: str) -> None:
        """Remove a whole pool: its manifest first (readers then see an empty pool, which the
        next sweep that needs it fills again), then its shards, meta.json last."""
        with self.backend.lock(f"pools/{_key(key)}"):
            self.backend.delete(f"pools/{key}/{MANIFEST}")
            names = [p for p in self.backend.list(f"pools/{key}") if not p.endswith(f"/{META}")]
            for path in names:
                self.backend.delete(path)
            self.backend.delete(f"pools/{key}/{META}")
        self.backend.delete_dir(f"pools/{key}")
        self._num_classes.pop(key, None)

    def _manifest_versioned(self, key: str) -> tuple[dict, str | None]:
        data, version = self.backend.read_versioned(f"pools/{_key(key)}/{MANIFEST}")
        if data is None:
            return {"count": 0, "shards": []}, None
        return _parse_manifest(key, data), version

    def _read_shard(self, key: str, shard: dict, like: PoolImages | None = None) -> PoolImages:
        """A listed shard, checked in full (see the module docstring); `like` is the pool's
        first shard, whose dtype, image shape and arrays every later one must share."""
        try:
            data = self.backend.read_bytes(f"pools/{key}/{shard['file']}")
        except FileNotFoundError:
            raise CorruptPool(f"pool {key}: {shard['file']} is missing") from None
        if hashlib.sha256(data).hexdigest() != shard["sha256"]:
            raise CorruptPool(f"pool {key}: {shard['file']} does not match its checksum")
        part = _decode_shard(key, shard["file"], data)
        if not len(part.images) == len(part.labels) == len(part.seeds) == shard["count"]:
            raise CorruptPool(f"pool {key}: {shard['file']} holds {len(part.labels)} images, "
                              f"its manifest entry says {shard['count']}")
        problem = _array_problem(part, self._classes(key), like)
        if problem:
            raise CorruptPool(f"pool {key}: {shard['file']} {problem}")
        return part

    def _classes(self, key: str) -> int | None:
        """The pool's class count from meta.json, or None when it names none (labels are then
        only checked to be >= 0)."""
        if key not in self._num_classes:
            try:
                value = self.pool_meta(key).get("num_classes")
            except FileNotFoundError:  # not created yet: ask again next time
                return None
            except CorruptPool:  # meta.json's own damage is for `cache verify` to report
                value = None
            valid = isinstance(value, int) and not isinstance(value, bool) and value >= 1
            self._num_classes[key] = value if valid else None
        return self._num_classes[key]


def _decode_shard(key: str, name: str, data: bytes) -> PoolImages:
    """The arrays of a shard's bytes; CorruptPool for anything `append` does not write: no zip,
    a compressed or unknown member (no zip bomb is expanded), no .npy, a missing array."""
    def bad(reason: str) -> CorruptPool:
        return CorruptPool(f"pool {key}: {name} {reason}")

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
        if any(m.compress_type != zipfile.ZIP_STORED or m.file_size > len(data)
               or m.filename.removesuffix(".npy") not in _ARRAYS for m in members):
            raise bad("holds members raysweep never writes")
        arrays = np.load(io.BytesIO(data), allow_pickle=False)
        try:
            missing = [n for n in ("images", "labels", "seeds") if n not in arrays.files]
            if missing:
                raise bad(f"has no {', '.join(missing)} array")
            return PoolImages(arrays["images"], arrays["labels"], arrays["seeds"],
                              **{n: arrays[n] for n in _PROVENANCE if n in arrays.files})
        finally:
            arrays.close()
    except _DECODE_ERRORS as error:
        reason = " ".join(str(error).split())[:120] or type(error).__name__
        raise bad(f"is not a readable shard ({reason})") from None


def _array_problem(part: PoolImages, num_classes: int | None,
                   like: PoolImages | None) -> str | None:
    """What is wrong with a decoded shard's arrays, or None: uint8 (N, H, W, 1 or 3) images,
    integer labels in [0, num_classes) and seeds, provenance of the image's height and width,
    and the same layout as the pool's first shard."""
    images = part.images
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] not in (1, 3):
        return (f"holds images of dtype {images.dtype} and shape {images.shape}, not uint8 "
                f"(N, H, W, 1 or 3)")
    for name in ("labels", "seeds", "sources", "source_labels"):
        value = getattr(part, name)
        if value is not None and (value.ndim != 1 or not np.issubdtype(value.dtype, np.integer)):
            return f"holds {name} of dtype {value.dtype} and shape {value.shape}, not integers (N,)"
    for name, dtype in (("masks", np.bool_), ("saliency", np.uint8)):
        value = getattr(part, name)
        if value is not None and (value.dtype != dtype or value.shape != images.shape[:3]):
            return (f"holds {name} of dtype {value.dtype} and shape {value.shape}, not "
                    f"{np.dtype(dtype)} {images.shape[:3]}")
    for name in ("sources", "source_labels", "weights"):
        value = getattr(part, name)
        if value is not None and len(value) != len(images):
            return f"holds {len(value)} {name} for {len(images)} images"
    weights = part.weights
    if weights is not None and (weights.dtype != np.float32 or weights.ndim != 1 or (
            len(weights) and not (0.0 <= weights.min() and weights.max() <= 1.0))):
        return f"holds weights of dtype {weights.dtype} outside float32 [0, 1] (N,)"
    source_labels = part.source_labels
    if source_labels is not None and len(source_labels) and (
            source_labels.min() < 0 or (num_classes is not None
                                        and source_labels.max() >= num_classes)):
        return f"holds source labels outside [0, {num_classes})"
    labels = part.labels
    if len(labels) and (labels.min() < 0 or (num_classes is not None
                                             and labels.max() >= num_classes)):
        bound = f"[0, {num_classes})" if num_classes is not None else ">= 0"
        return f"holds labels from {labels.min()} to {labels.max()}, outside {bound}"
    if like is not None:
        if images.shape[1:] != like.images.shape[1:]:
            return (f"holds images of shape {images.shape[1:]}, the pool's first shard "
                    f"{like.images.shape[1:]}")
        if [getattr(part, n) is None for n in _PROVENANCE] != \
                [getattr(like, n) is None for n in _PROVENANCE]:
            return "holds other provenance arrays than the pool's first shard"
    return None


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
