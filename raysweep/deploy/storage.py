"""Where a sweep writes: one storage prefix for Tune, the synthetic store and MLflow artifacts.

On a laptop everything stays in the working directory. On a multi-node cluster every node
must reach what the sweep writes (trial checkpoints, pools, artifacts), so `--storage
s3://bucket/prefix` (or the spec's `storage:` key) gives the three their defaults under one
prefix, and a head-local path is refused before anything starts. Remote URIs are kept as
strings: `pathlib` would fold `s3://bucket` into `s3:/bucket`.
"""

from __future__ import annotations

from pathlib import Path

from raysweep.errors import UserError
from raysweep.spec import REMOTE_SCHEME, Spec, check_location


def is_remote(path: str) -> bool:
    """True for `s3://…`, the only storage every node reaches that raysweep writes (the spec
    refuses other schemes, which would otherwise pass here and then become local folders)."""
    return str(path).startswith(REMOTE_SCHEME)


def absolute(path: str) -> str:
    """A local path made absolute (Tune moves trials to their own folders); a URI unchanged."""
    return path if is_remote(path) else str(Path(path).expanduser().resolve())


def apply_storage(spec: Spec, storage: str | None) -> Spec:
    """Point Tune's storage and the synthetic store under `storage` (from the CLI, else the
    spec), unless the spec sets them itself. Returns a new spec."""
    storage = check_location("--storage", (storage or spec.storage or "").rstrip("/"))
    if not storage:
        return spec
    if not is_remote(storage):
        raise UserError(f"--storage {storage!r}: give a prefix every node can reach, "
                        f"e.g. s3://YOUR-BUCKET/raysweep")
    spec = spec.model_copy(deep=True)
    spec.storage = storage
    if "storage_path" not in spec.tune.model_fields_set:
        spec.tune.storage_path = f"{storage}/tune"
    if "path" not in spec.store.model_fields_set:
        spec.store.path = f"{storage}/cache"
    return spec


def artifact_location(spec: Spec) -> str | None:
    """Where a new MLflow experiment keeps its artifacts: under the storage prefix, if any."""
    return f"{spec.storage}/mlflow" if spec.storage else None


def check_shared(spec: Spec) -> None:
    """On a multi-node cluster, Tune's storage and the store must be reachable from every node."""
    for key, value in (("tune.storage_path", spec.tune.storage_path),
                       ("store.path", spec.store.path)):
        if not is_remote(value):
            raise UserError(f"{key}: {value!r} is on this node only, but the cluster has several "
                            f"nodes; pass --storage s3://YOUR-BUCKET/raysweep (or set {key} to "
                            f"an s3:// prefix)")
