"""The synthetic store: content-addressed pools of generated images, and trained generators.

The store lives in a local directory or under `s3://bucket/prefix` (see `backends.py`); the
layout and the rules below are the same for both.

A pool lives under `pools/<key>/`, where the key hashes everything that determines its images.
Image i of a pool depends only on the pool's key fields and i, so the first n images are the
same whatever n: a ratio sweep reads nested prefixes, and asking for more appends shards.

Writes are atomic and ordered: each shard is written (a local temp file then a rename, or one
S3 PUT) before the manifest that lists it, and the manifest carries every shard's sha256,
checked on read. A shard that is missing or fails its checksum makes the pool `CorruptPool`;
`repair` cuts the manifest back to the last good shard so the missing images are generated
again.

A trained generator lives under `generators/<key>/`, its meta.json written last to mark it
complete. Loading needs a local directory, so an S3 store downloads it into a local cache.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from raysweep.synthesis.backends import create_backend

MANIFEST = "manifest.json"
META = "meta.json"
# Optional per-image arrays of inpainted pools (see PoolImages).
_PROVENANCE = ("sources", "masks", "saliency")


class CorruptPool(RuntimeError):
    """A pool's shard is missing, truncated or does not match its checksum."""


def content_key(fields: dict) -> str:
    """A short, stable hash of a JSON-able mapping (sorted keys)."""
    text = json.dumps(fields, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class PoolImages:
    """A slice of a pool: uint8 images (N,H,W,C), their labels and their per-image seeds.

    Inpainted pools also record provenance: `sources` (the index of each image's real source
    in the training split), `masks` (bool (N,H,W), True = repainted) and `saliency` (the
    source's saliency map as uint8 (N,H,W)); None in class-conditional pools.
    """

    images: np.ndarray
    labels: np.ndarray
    seeds: np.ndarray
    sources: np.ndarray | None = None
    masks: np.ndarray | None = None
    saliency: np.ndarray | None = None


class SyntheticStore:
    """Pools and generator weights in a directory or an S3 prefix. Safe against crashes mid-write.

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

    def generator_dir(self, key: str) -> Path:
        """A local directory holding generator `key`, ready to load.

        For an S3 store the files are downloaded into the local cache first (reused while the
        cached meta.json matches the stored one); FileNotFoundError if the generator is absent.
        """
        return self.backend.download_dir(f"generators/{key}", last=META)

    def has_generator(self, key: str) -> bool:
        return self.backend.exists(f"generators/{key}/{META}")

    def generator_meta(self, key: str) -> dict:
        return json.loads(self.backend.read_bytes(f"generators/{key}/{META}"))

    def generator_keys(self) -> list[str]:
        """Keys of the complete generators (those whose meta.json was written)."""
        return _keys_with_meta(self.backend.list("generators"))

    def save_generator(self, key: str, meta: dict, save_fn) -> Path:
        """Call `save_fn(tmpdir)`, move the result into place, then store it; meta.json last.

        Returns the local directory holding the saved generator.
        """
        path = f"generators/{key}"
        final = self.backend.mirror_dir(path)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=final.parent))
        save_fn(str(tmp))
        (tmp / META).write_text(json.dumps(meta, indent=2, default=str))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        self.backend.upload_dir(path, last=META)
        return final

    # -- reference classifiers --------------------------------------------------------------

    def has_classifier(self, key: str) -> bool:
        return self.backend.exists(f"classifiers/{key}/{META}")

    def classifier_dir(self, key: str) -> Path:
        """A local directory holding classifier `key` (downloaded first from S3)."""
        return self.backend.download_dir(f"classifiers/{key}", last=META)

    def classifier_meta(self, key: str) -> dict:
        return json.loads(self.backend.read_bytes(f"classifiers/{key}/{META}"))

    def save_classifier(self, key: str, meta: dict, save_fn) -> Path:
        """Like `save_generator`, under `classifiers/<key>/`; meta.json last."""
        path = f"classifiers/{key}"
        final = self.backend.mirror_dir(path)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=final.parent))
        save_fn(str(tmp))
        (tmp / META).write_text(json.dumps(meta, indent=2, default=str))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        self.backend.upload_dir(path, last=META)
        return final

    # -- pools ------------------------------------------------------------------------------

    def pool_dir(self, key: str) -> Path | str:
        """Where pool `key` lives: a local Path, or its s3:// URL."""
        return self.backend.locate(f"pools/{key}")

    def create_pool(self, key: str, meta: dict) -> None:
        if not self.backend.exists(f"pools/{key}/{META}"):
            self.backend.write_bytes(f"pools/{key}/{META}",
                                     json.dumps(meta, indent=2, default=str).encode())

    def pool_meta(self, key: str) -> dict:
        return json.loads(self.backend.read_bytes(f"pools/{key}/{META}"))

    def manifest(self, key: str) -> dict:
        try:
            return json.loads(self.backend.read_bytes(f"pools/{key}/{MANIFEST}"))
        except FileNotFoundError:
            return {"count": 0, "shards": []}

    def count(self, key: str) -> int:
        return int(self.manifest(key)["count"])

    def append(self, key: str, images: PoolImages) -> None:
        """Add the next images of the pool: shard first, then the manifest that lists it."""
        manifest = self.manifest(key)
        index = len(manifest["shards"])
        name = f"shard-{index:05d}.npz"
        buffer = io.BytesIO()
        provenance = {name: value for name in _PROVENANCE
                      if (value := getattr(images, name)) is not None}
        np.savez(buffer, images=images.images, labels=images.labels, seeds=images.seeds,
                 **provenance)
        data = buffer.getvalue()
        self.backend.write_bytes(f"pools/{key}/{name}", data)
        manifest["shards"].append({"file": name, "start": manifest["count"],
                                   "count": int(len(images.labels)),
                                   "sha256": hashlib.sha256(data).hexdigest()})
        manifest["count"] += int(len(images.labels))
        self.backend.write_bytes(f"pools/{key}/{MANIFEST}", json.dumps(manifest, indent=1).encode())

    def read(self, key: str, n: int) -> PoolImages:
        """The first n images of a pool, checksums verified; CorruptPool if any shard is bad."""
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

    def verify(self, key: str) -> list[str]:
        """Problems found in a pool (empty when every shard matches its checksum)."""
        problems = []
        for shard in self.manifest(key)["shards"]:
            try:
                self._read_shard(key, shard)
            except CorruptPool as error:
                problems.append(str(error))
        return problems

    def repair(self, key: str) -> int:
        """Cut the manifest back to the shards before the first bad one; return images kept."""
        manifest = self.manifest(key)
        good = []
        for shard in manifest["shards"]:
            try:
                self._read_shard(key, shard)
            except CorruptPool:
                break
            good.append(shard)
        kept = sum(s["count"] for s in good)
        # The manifest first: a crash between the two steps then leaves only unlisted shards.
        self.backend.write_bytes(f"pools/{key}/{MANIFEST}",
                                 json.dumps({"count": kept, "shards": good}, indent=1).encode())
        for shard in manifest["shards"][len(good):]:
            self.backend.delete(f"pools/{key}/{shard['file']}")
        return kept

    def pool_keys(self) -> list[str]:
        return _keys_with_meta(self.backend.list("pools"))

    def _read_shard(self, key: str, shard: dict) -> PoolImages:
        try:
            data = self.backend.read_bytes(f"pools/{key}/{shard['file']}")
        except FileNotFoundError:
            raise CorruptPool(f"pool {key}: {shard['file']} is missing") from None
        if hashlib.sha256(data).hexdigest() != shard["sha256"]:
            raise CorruptPool(f"pool {key}: {shard['file']} does not match its checksum")
        with np.load(io.BytesIO(data)) as arrays:
            return PoolImages(arrays["images"], arrays["labels"], arrays["seeds"],
                              **{name: arrays[name] for name in _PROVENANCE if name in arrays})


def _keys_with_meta(paths: list[str]) -> list[str]:
    """The `<key>` of every `<kind>/<key>/meta.json` among store paths."""
    return sorted({parts[1] for parts in (p.split("/") for p in paths)
                   if len(parts) == 3 and parts[2] == META})
