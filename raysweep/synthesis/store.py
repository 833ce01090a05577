"""The synthetic store: content-addressed pools of generated images, and trained generators.

A pool lives under `pools/<key>/`, where the key hashes everything that determines its images.
Image i of a pool depends only on the pool's key fields and i, so the first n images are the
same whatever n: a ratio sweep reads nested prefixes, and asking for more appends shards.

Writes are atomic and ordered: each shard is written (temp file, then rename) before the
manifest that lists it, and the manifest carries every shard's sha256, checked on read. A
shard that is missing or fails its checksum makes the pool `CorruptPool`; `repair` cuts the
manifest back to the last good shard so the missing images are generated again.
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

MANIFEST = "manifest.json"
META = "meta.json"


class CorruptPool(RuntimeError):
    """A pool's shard is missing, truncated or does not match its checksum."""


def content_key(fields: dict) -> str:
    """A short, stable hash of a JSON-able mapping (sorted keys)."""
    text = json.dumps(fields, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class PoolImages:
    """A slice of a pool: uint8 images (N,H,W,C), their labels and their per-image seeds."""

    images: np.ndarray
    labels: np.ndarray
    seeds: np.ndarray


class SyntheticStore:
    """A directory of pools and generator weights. Safe against crashes mid-write."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().resolve()

    # -- generators -------------------------------------------------------------------------

    def generator_dir(self, key: str) -> Path:
        return self.root / "generators" / key

    def has_generator(self, key: str) -> bool:
        return (self.generator_dir(key) / META).is_file()

    def save_generator(self, key: str, meta: dict, save_fn) -> Path:
        """Call `save_fn(tmpdir)` and move the result into place; meta.json last marks it done."""
        final = self.generator_dir(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=final.parent))
        save_fn(str(tmp))
        _write_atomic(tmp / META, json.dumps(meta, indent=2, default=str).encode())
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        return final

    # -- pools ------------------------------------------------------------------------------

    def pool_dir(self, key: str) -> Path:
        return self.root / "pools" / key

    def create_pool(self, key: str, meta: dict) -> None:
        directory = self.pool_dir(key)
        directory.mkdir(parents=True, exist_ok=True)
        if not (directory / META).exists():
            _write_atomic(directory / META, json.dumps(meta, indent=2, default=str).encode())

    def pool_meta(self, key: str) -> dict:
        return json.loads((self.pool_dir(key) / META).read_text())

    def manifest(self, key: str) -> dict:
        path = self.pool_dir(key) / MANIFEST
        if not path.exists():
            return {"count": 0, "shards": []}
        return json.loads(path.read_text())

    def count(self, key: str) -> int:
        return int(self.manifest(key)["count"])

    def append(self, key: str, images: PoolImages) -> None:
        """Add the next images of the pool: shard first, then the manifest that lists it."""
        manifest = self.manifest(key)
        index = len(manifest["shards"])
        name = f"shard-{index:05d}.npz"
        buffer = io.BytesIO()
        np.savez(buffer, images=images.images, labels=images.labels, seeds=images.seeds)
        data = buffer.getvalue()
        _write_atomic(self.pool_dir(key) / name, data)
        manifest["shards"].append({"file": name, "start": manifest["count"],
                                   "count": int(len(images.labels)),
                                   "sha256": hashlib.sha256(data).hexdigest()})
        manifest["count"] += int(len(images.labels))
        _write_atomic(self.pool_dir(key) / MANIFEST, json.dumps(manifest, indent=1).encode())

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
        return PoolImages(np.concatenate([p.images for p in parts])[:n],
                          np.concatenate([p.labels for p in parts])[:n],
                          np.concatenate([p.seeds for p in parts])[:n])

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
        for shard in manifest["shards"][len(good):]:
            (self.pool_dir(key) / shard["file"]).unlink(missing_ok=True)
        _write_atomic(self.pool_dir(key) / MANIFEST,
                      json.dumps({"count": kept, "shards": good}, indent=1).encode())
        return kept

    def pool_keys(self) -> list[str]:
        pools = self.root / "pools"
        return sorted(p.name for p in pools.iterdir() if (p / META).exists()) if pools.exists() else []

    def _read_shard(self, key: str, shard: dict) -> PoolImages:
        path = self.pool_dir(key) / shard["file"]
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise CorruptPool(f"pool {key}: {shard['file']} is missing") from None
        if hashlib.sha256(data).hexdigest() != shard["sha256"]:
            raise CorruptPool(f"pool {key}: {shard['file']} does not match its checksum")
        with np.load(io.BytesIO(data)) as arrays:
            return PoolImages(arrays["images"], arrays["labels"], arrays["seeds"])


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
