"""Where the synthetic store keeps its bytes: a local directory or an S3 prefix.

A backend stores named objects (`pools/<key>/shard-00000.npz`) under one root and offers the
few operations the store needs: read, atomic write, exists, list, delete. A local write goes to
a temp file that is renamed into place; an S3 PUT is atomic per object by itself. Both make the
store's "data first, manifest last" order crash-safe.

Generators are directories that libraries load from a local path (`from_pretrained`), so a
backend also maps a directory to a local one: the store directory itself, or a cache under
`~/.cache/raysweep/s3/<bucket>/<prefix>/` that is uploaded from and downloaded into, with a
marker file (meta.json) uploaded last and downloaded last.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path
from urllib.parse import urlparse

from raysweep.errors import UserError


def create_backend(root: str | os.PathLike, cache_dir: str | os.PathLike | None = None):
    """A `S3Backend` for `s3://bucket/prefix`, else a `LocalBackend` for a directory path."""
    if str(root).startswith("s3://"):
        return S3Backend(str(root), cache_dir=cache_dir)
    return LocalBackend(root)


def default_cache_dir() -> Path:
    """raysweep's local cache: `$XDG_CACHE_HOME/raysweep`, by default `~/.cache/raysweep`."""
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "raysweep"


class LocalBackend:
    """Objects are files under a local directory; writes go through a temp file and a rename."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().resolve()
        self.url = str(self.root)

    def locate(self, path: str) -> Path:
        return self.root / path

    def read_bytes(self, path: str) -> bytes:
        """The object's bytes; FileNotFoundError when there is none."""
        return (self.root / path).read_bytes()

    def write_bytes(self, path: str, data: bytes) -> None:
        write_atomic(self.root / path, data)

    def exists(self, path: str) -> bool:
        return (self.root / path).is_file()

    def list(self, prefix: str) -> list[str]:
        """Paths of all objects under `prefix`, relative to the root; temp files left out."""
        base = self.root / prefix
        if not base.is_dir():
            return []
        paths = (p.relative_to(self.root) for p in base.rglob("*") if p.is_file())
        return sorted(p.as_posix() for p in paths
                      if not any(part.startswith(".") for part in p.parts))

    def delete(self, path: str) -> None:
        (self.root / path).unlink(missing_ok=True)

    def check(self) -> None:
        """Create the directory and prove it writable; UserError naming the path if not."""
        probe = self.root / f".raysweep-check-{uuid.uuid4().hex}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            raise UserError(f"store {self.url} is not writable ({error.strerror or error}); "
                            f"set store.path to a directory you can write") from None

    def mirror_dir(self, path: str) -> Path:
        """The local directory for `path`: here, the store's own directory."""
        return self.root / path

    def upload_dir(self, path: str, last: str) -> None:
        """Nothing to do: the mirror is the store."""

    def download_dir(self, path: str, last: str) -> Path:
        return self.root / path


class S3Backend:
    """Objects under `s3://bucket/prefix`, through boto3.

    The endpoint, region and credentials come from boto3's own configuration: environment
    (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_S3`, `AWS_PROFILE`, ...), `~/.aws/config`, or the
    instance role on a cluster node. The client is made on first use and is not pickled, so a
    store can be handed to Ray workers.
    """

    # check() must fail in seconds, not after boto3's default 60 s connect timeout and retries.
    CHECK_CONFIG = {"connect_timeout": 3, "read_timeout": 10,
                    "retries": {"total_max_attempts": 2, "mode": "standard"}}

    def __init__(self, url: str, cache_dir: str | os.PathLike | None = None):
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise UserError(f"store {url!r} is not an S3 URL; write it as s3://bucket/prefix")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self.url = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.root = self.url
        cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self.cache = cache / "s3" / self.bucket / self.prefix
        self._client = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_client": None}

    @property
    def client(self):
        if self._client is None:
            self._client = _make_client()
        return self._client

    def locate(self, path: str) -> str:
        return f"{self.url}/{path}"

    def key(self, path: str) -> str:
        """The S3 object key of a store path."""
        return f"{self.prefix}/{path}" if self.prefix else path

    def read_bytes(self, path: str) -> bytes:
        """The object's bytes; FileNotFoundError when there is none."""
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.key(path))["Body"].read()
        except self.client.exceptions.NoSuchKey:
            raise FileNotFoundError(self.locate(path)) from None

    def write_bytes(self, path: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.key(path), Body=data)

    def exists(self, path: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self.key(path))
        except ClientError as error:
            if error.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def list(self, prefix: str) -> list[str]:
        """Paths of all objects under `prefix`, relative to the store root."""
        start = len(self.key(""))
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.key(prefix.rstrip("/") + "/"))
        return sorted(item["Key"][start:] for page in pages for item in page.get("Contents", []))

    def delete(self, path: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.key(path))

    def check(self) -> None:
        """Prove the bucket exists and the prefix is writable (HEAD, PUT and DELETE a probe).

        Raises:
            UserError: one line naming the URL, the endpoint and the fix.
        """
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        client = _make_client(Config(**self.CHECK_CONFIG))
        where = f"store {self.url} (endpoint {client.meta.endpoint_url})"
        probe = self.key(f".raysweep-check-{uuid.uuid4().hex}")
        try:
            client.head_bucket(Bucket=self.bucket)
            client.put_object(Bucket=self.bucket, Key=probe, Body=b"")
            client.delete_object(Bucket=self.bucket, Key=probe)
        except NoCredentialsError:
            raise UserError(f"{where}: no AWS credentials found; set AWS_ACCESS_KEY_ID and "
                            f"AWS_SECRET_ACCESS_KEY or AWS_PROFILE") from None
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code"))
            if code in ("404", "NoSuchBucket", "NotFound"):
                raise UserError(f"{where}: bucket {self.bucket!r} does not exist; create it "
                                f"(aws s3 mb s3://{self.bucket}) or point store.path at an "
                                f"existing bucket") from None
            if code in ("403", "AccessDenied", "Forbidden"):
                raise UserError(f"{where}: access denied; use credentials that may list, read "
                                f"and write {self.url}") from None
            raise UserError(f"{where}: S3 answered {code} ({error}); check the bucket and "
                            f"credentials") from None
        except BotoCoreError as error:
            raise UserError(f"{where}: cannot reach S3 ({error}); check the network and "
                            f"AWS_ENDPOINT_URL") from None

    def mirror_dir(self, path: str) -> Path:
        """The local cache directory that mirrors `path`."""
        return self.cache / path

    def upload_dir(self, path: str, last: str) -> None:
        """Upload the mirror of `path`, the `last` file after every other one.

        Any earlier upload under `path` is removed first, marker first, so a crash at any
        point leaves either nothing marked done or the complete new directory.
        """
        for stale in sorted(self.list(path), key=lambda name: not name.endswith("/" + last)):
            self.delete(stale)
        local = self.mirror_dir(path)
        files = sorted(p for p in local.rglob("*") if p.is_file())
        for file in sorted(files, key=lambda p: p.relative_to(local).as_posix() == last):
            relative = file.relative_to(local).as_posix()
            self.client.upload_file(str(file), self.bucket, self.key(f"{path}/{relative}"))

    def download_dir(self, path: str, last: str) -> Path:
        """The local mirror of `path`, downloaded unless the cached `last` file matches.

        Raises:
            FileNotFoundError: there is no `last` file under `path` on S3.
        """
        local = self.mirror_dir(path)
        marker = self.read_bytes(f"{path}/{last}")
        if _same_marker(local / last, marker):
            return local
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{local.name}-", dir=local.parent))
        for name in self.list(path):
            relative = name[len(path.rstrip("/")) + 1:]
            if relative != last:
                (tmp / relative).parent.mkdir(parents=True, exist_ok=True)
                self.client.download_file(self.bucket, self.key(name), str(tmp / relative))
        (tmp / last).write_bytes(marker)
        if local.exists() and not _same_marker(local / last, marker):
            shutil.rmtree(local, ignore_errors=True)
        try:
            os.replace(tmp, local)
        except OSError:  # another process on this machine finished the same download first
            shutil.rmtree(tmp, ignore_errors=True)
            if not _same_marker(local / last, marker):
                raise
        return local


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temp file in the same directory, fsync, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _same_marker(path: Path, marker: bytes) -> bool:
    return path.is_file() and path.read_bytes() == marker


def _make_client(config=None):
    import boto3

    return boto3.session.Session().client("s3", config=config)
