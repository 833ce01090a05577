"""Where the synthetic store keeps its bytes: a local directory or an S3 prefix.

A backend stores named objects (`pools/<key>/shard-00000-1a2b3c4d.npz`) under one root and
offers the few operations the store needs: read, atomic write, conditional write, exists, list,
delete. A local write goes to a temp file that is renamed into place; an S3 PUT is atomic per
object by itself. Both make the store's "data first, manifest last" order crash-safe.

Every path is checked against a strict pattern (`check_path`) before it is used, and every key
an S3 listing returns is checked before it becomes a local path: a hostile manifest or object
key naming `../x` or `/etc/x` is refused, never followed outside the store. A local store never
follows a symbolic link below its root (it makes none, so one is tampering); a listing leaves
out, and `strays` reports, whatever raysweep does not write (a link, `notes (copy).txt`, an S3
console's folder marker), so one odd file never hides the rest of the store.

Files and folders are created with the permissions the umask allows, as `open` would (not the
0600 / 0700 of Python's temp files), so a store shared by a team's users stays readable to all.

Two sweeps may share one store. A read-modify-write of a manifest is made safe by
`write_if(path, data, version)`, which writes only if the object is still the version that was
read: on S3 a conditional PUT (`If-Match` / `If-None-Match: *`), locally a comparison done under
an `fcntl` lock (`lock(directory)`) that every writer of that directory holds.

Generators are directories that libraries load from a local path (`from_pretrained`), so a
backend also maps a directory to a local one: the store directory itself, or a cache under
`~/.cache/raysweep/s3/<bucket>/<prefix>/` that is uploaded from and downloaded into.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import stat
import tempfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from raysweep.errors import UserError


# One path segment: starts with a letter, digit or underscore (so never `.`, `..` or a hidden
# temp file), then letters, digits and `_ . + = -`. Paths are `/`-joined segments, never absolute.
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=-]{0,199}")
# S3's bucket naming rules; the bucket also names a folder of the local download cache.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
TEMP_PREFIX = ".tmp-"
LOCK_NAME = ".lock"


class UnsafePath(RuntimeError):
    """A store path or object key that could reach outside the store (absolute, `..`, odd)."""


def check_path(path: str) -> str:
    """`path` itself if every segment is a plain name; UnsafePath otherwise."""
    parts = str(path).split("/")
    if not path or not all(_SEGMENT.fullmatch(part) for part in parts):
        raise UnsafePath(f"refusing store path {str(path)[:200]!r}: only plain names joined by "
                         f"'/' are allowed (nothing absolute, no '..', no hidden names); the store "
                         f"may have been tampered with")
    return str(path)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Stored:
    """An object's last modification (seconds since the epoch) and size in bytes."""

    modified: float
    size: int


@dataclass(frozen=True)
class Stray:
    """Something under the store's root that raysweep did not write and never reads."""

    where: str
    reason: str
    # True when it could only be tampering (a link, a key that climbs out with `..`).
    unsafe: bool


@dataclass(frozen=True)
class Leftover:
    """What an interrupted write left behind: a temp file or folder, an unfinished upload."""

    where: str  # as shown to the user
    modified: float
    size: int
    handle: tuple  # what the backend's `remove_leftover` needs


def umask() -> int:
    """This process's umask, read without changing it (os.umask would, for every thread)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:
        current = os.umask(0o022)
        os.umask(current)
    return current


def make_temp_dir(parent: Path, prefix: str) -> Path:
    """`tempfile.mkdtemp` in `parent`, with the mode a plain mkdir gives (mkdtemp's is 0700)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    tmp.chmod(0o777 & ~umask())
    return tmp


def create_backend(root: str | os.PathLike, cache_dir: str | os.PathLike | None = None):
    """A `S3Backend` for `s3://bucket/prefix`, a `LocalBackend` for a directory path; any other
    URL (`gs://…`, `S3://…`) is a UserError, never a local folder named after its scheme."""
    if str(root).startswith("s3://"):
        return S3Backend(str(root), cache_dir=cache_dir)
    if "://" in str(root):
        raise UserError(f"store {str(root)!r}: raysweep stores pools in a local directory or "
                        f"under s3://bucket/prefix only; use one of those")
    return LocalBackend(root)


def default_cache_dir() -> Path:
    """raysweep's local cache: `$XDG_CACHE_HOME/raysweep`, by default `~/.cache/raysweep`."""
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "raysweep"


class Listing:
    """What both backends answer from one scan of a prefix (`_scan`): the objects raysweep
    wrote, and the strays it did not."""

    def list(self, prefix: str) -> list[str]:
        """Paths of all objects under `prefix`, relative to the store root: names raysweep
        writes. Temp, lock and hidden files, links, folder markers and odd or hostile names are
        left out (`strays` and `leftovers` report them)."""
        return sorted(self.stat(prefix))

    def stat(self, prefix: str) -> dict[str, Stored]:
        """`list(prefix)` with each object's modification time and size."""
        return self._scan(prefix)[0]

    def strays(self, prefix: str) -> list[Stray]:
        """What lies under `prefix` that raysweep did not write (links, odd names); never
        used as paths."""
        return self._scan(prefix)[1]

    def _scan(self, prefix: str) -> tuple[dict[str, Stored], list[Stray]]:
        raise NotImplementedError


class LocalBackend(Listing):
    """Objects are files under a local directory; writes go through a temp file and a rename."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().resolve()
        self.url = str(self.root)

    def locate(self, path: str) -> Path:
        """The file of store path `path`: UnsafePath for an odd name, or when a folder or the
        file on the way is a symbolic link (a write would land, a read would come from, outside
        the store)."""
        current = self.root
        for part in check_path(path).split("/"):
            current = current / part
            if current.is_symlink():
                raise UnsafePath(f"refusing store path {path!r}: {current} is a symbolic link, "
                                 f"which raysweep never makes; remove the link")
        return current

    def read_bytes(self, path: str) -> bytes:
        """The object's bytes; FileNotFoundError when there is none."""
        return self.locate(path).read_bytes()

    def read_versioned(self, path: str) -> tuple[bytes | None, str | None]:
        """(bytes, version) of an object, (None, None) when there is none."""
        try:
            data = self.read_bytes(path)
        except FileNotFoundError:
            return None, None
        return data, sha256_bytes(data)

    def write_bytes(self, path: str, data: bytes) -> None:
        write_atomic(self.locate(path), data)

    def write_if(self, path: str, data: bytes, version: str | None) -> bool:
        """Write only if the object is still `version` (None: only if absent); True if written.

        Atomic against other writers only while the caller holds `lock()` on its directory.
        """
        if self.read_versioned(path)[1] != version:
            return False
        self.write_bytes(path, data)
        return True

    @contextlib.contextmanager
    def lock(self, directory: str):
        """An exclusive `fcntl` lock on a store directory, across threads and processes."""
        base = self.locate(directory)
        base.mkdir(parents=True, exist_ok=True)
        # O_NOFOLLOW: a planted `.lock` link must not make us create or open a file elsewhere.
        fd = os.open(base / LOCK_NAME, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def exists(self, path: str) -> bool:
        return self.locate(path).is_file()

    def _scan(self, prefix: str) -> tuple[dict[str, Stored], list[Stray]]:
        base = self.locate(prefix)
        found: dict[str, Stored] = {}
        strays: list[Stray] = []
        if not base.is_dir():
            return found, strays
        for dirpath, dirnames, filenames in os.walk(base):  # never follows links
            directory = Path(dirpath)
            for name in sorted(dirnames + filenames):
                entry = directory / name
                info = entry.lstat()
                if stat.S_ISLNK(info.st_mode):
                    strays.append(Stray(str(entry), "a symbolic link, which raysweep never "
                                                    "makes; remove it", unsafe=True))
                elif name.startswith("."):
                    continue  # the lock, temp files (see leftovers)
                elif not _SEGMENT.fullmatch(name):
                    strays.append(Stray(str(entry), "not a name raysweep writes; left alone",
                                        unsafe=False))
                elif stat.S_ISREG(info.st_mode):
                    found[entry.relative_to(self.root).as_posix()] = Stored(info.st_mtime,
                                                                            info.st_size)
            dirnames[:] = [d for d in dirnames if not d.startswith(".") and
                           _SEGMENT.fullmatch(d) and not (directory / d).is_symlink()]
        return found, strays

    def leftovers(self, prefix: str) -> list[Leftover]:
        """Temp files and folders under `prefix` that an interrupted write left behind."""
        base = self.locate(prefix)
        return _temp_leftovers(base) if base.is_dir() else []

    def remove_leftover(self, leftover: Leftover) -> None:
        _remove_local(Path(leftover.handle[0]))

    def delete(self, path: str) -> None:
        self.locate(path).unlink(missing_ok=True)

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
        return self.locate(path)

    def upload_dir(self, path: str) -> None:
        """Nothing to do: the mirror is the store."""

    def delete_dir(self, path: str) -> None:
        shutil.rmtree(self.locate(path), ignore_errors=True)

    def download_dir(self, path: str, files: dict[str, str]) -> Path:
        """The directory itself, each of `files` (relative path -> sha256, what it must hold)
        checked to be no link: the files are read from where they are."""
        for relative in files:
            self.locate(f"{path}/{relative}")
        return self.locate(path)

    def refetch_dir(self, path: str, files: dict[str, str]) -> Path | None:
        """None: a local store's directory is the only copy, there is nothing to fetch again."""
        return None

    @contextlib.contextmanager
    def stored_copy(self, path: str, files: dict[str, str]):
        """The stored directory itself, to check what the store holds."""
        yield self.download_dir(path, files)


class S3Backend(Listing):
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
        if parsed.scheme != "s3" or not _BUCKET.fullmatch(parsed.netloc) or ".." in parsed.netloc:
            raise UserError(f"store {url!r} is not an S3 URL with a valid bucket name; write it "
                            f"as s3://bucket/prefix")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        if self.prefix:
            try:  # the prefix becomes part of the local cache path: no `..` may climb out of it
                check_path(self.prefix)
            except UnsafePath:
                raise UserError(f"store {url!r}: the prefix must be plain names joined by '/' "
                                f"(no '.', '..' or empty parts); fix the URL") from None
        self.url = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.root = self.url
        cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self.cache = cache / "s3" / self.bucket / self.prefix
        self._client = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_client": None}

    @property
    def client(self):
        # One client per backend, made once even when threads (the synthesis service's
        # to_thread calls) ask together: each boto3 session has its own exception classes, so
        # a second client would raise errors that `except` clauses naming the first's miss.
        if self._client is None:
            with _CLIENT_LOCK:
                if self._client is None:
                    self._client = _make_client()
        return self._client

    def locate(self, path: str) -> str:
        return f"{self.url}/{check_path(path)}"

    def key(self, path: str) -> str:
        """The S3 object key of a store path."""
        check_path(path)
        return f"{self.prefix}/{path}" if self.prefix else path

    def read_bytes(self, path: str) -> bytes:
        """The object's bytes; FileNotFoundError when there is none."""
        data = self.read_versioned(path)[0]
        if data is None:
            raise FileNotFoundError(self.locate(path))
        return data

    def read_versioned(self, path: str) -> tuple[bytes | None, str | None]:
        """(bytes, ETag) of an object, (None, None) when there is none."""
        from botocore.exceptions import ClientError

        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self.key(path))
        except ClientError as error:
            if error.response["Error"]["Code"] in ("NoSuchKey", "404", "NotFound"):
                return None, None
            raise
        return answer["Body"].read(), answer["ETag"]

    def write_bytes(self, path: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.key(path), Body=data)

    def write_if(self, path: str, data: bytes, version: str | None) -> bool:
        """A conditional PUT: only if the ETag is still `version` (None: only if absent)."""
        from botocore.exceptions import ClientError

        condition = {"IfNoneMatch": "*"} if version is None else {"IfMatch": version}
        try:
            self.client.put_object(Bucket=self.bucket, Key=self.key(path), Body=data, **condition)
        except ClientError as error:
            # 412: another writer got there first; 409: a concurrent conditional PUT is in flight.
            if error.response["Error"]["Code"] in ("PreconditionFailed", "ConditionalRequestConflict",
                                                   "412", "409"):
                return False
            raise
        return True

    @contextlib.contextmanager
    def lock(self, directory: str):
        """Nothing to hold: S3 writers serialise through conditional PUTs (`write_if`)."""
        yield

    def exists(self, path: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self.key(path))
        except ClientError as error:
            if error.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def _scan(self, prefix: str) -> tuple[dict[str, Stored], list[Stray]]:
        start = len(self.prefix) + 1 if self.prefix else 0
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.key(prefix.rstrip("/")) + "/")
        found: dict[str, Stored] = {}
        strays: list[Stray] = []
        for item in (item for page in pages for item in page.get("Contents", [])):
            path, where = item["Key"][start:], f"s3://{self.bucket}/{item['Key']}"
            if path.endswith("/"):
                strays.append(Stray(where, "a folder marker (an S3 console's); left alone",
                                    unsafe=False))
            elif any(part in ("", ".", "..") for part in path.split("/")):
                strays.append(Stray(where, "a key that would climb out of the store (`..`); "
                                           "someone with write access to the bucket made it; "
                                           "delete it", unsafe=True))
            elif path.rsplit("/", 1)[-1].startswith("."):
                continue  # a probe of `check()` cut short; `leftovers` has it
            elif not all(_SEGMENT.fullmatch(part) for part in path.split("/")):
                strays.append(Stray(where, "not a name raysweep writes; left alone", unsafe=False))
            else:
                found[path] = Stored(item["LastModified"].timestamp(), item["Size"])
        return found, strays

    def leftovers(self, prefix: str) -> list[Leftover]:
        """Unfinished multipart uploads under `prefix` and temp folders in the local cache."""
        pages = self.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.bucket, Prefix=self.key(prefix.rstrip("/")) + "/")
        found = [Leftover(f"s3://{self.bucket}/{u['Key']} (unfinished upload {u['UploadId']})",
                          u["Initiated"].timestamp(), 0, ("upload", u["Key"], u["UploadId"]))
                 for page in pages for u in page.get("Uploads", [])]
        local = self.cache / prefix
        return found + (_temp_leftovers(local) if local.is_dir() else [])

    def remove_leftover(self, leftover: Leftover) -> None:
        if leftover.handle[0] == "upload":
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=leftover.handle[1],
                                               UploadId=leftover.handle[2])
        else:
            _remove_local(Path(leftover.handle[0]))

    def delete(self, path: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.key(path))

    def check(self) -> None:
        """Prove the prefix can be listed, written and deleted, and that the endpoint honours
        conditional writes (S3-compatible servers differ; without them two sweeps sharing the
        store could lose each other's images). A LIST under the prefix, not a HEAD of the
        bucket, so a policy that allows listing only under the prefix passes.

        Raises:
            UserError: one line naming the URL, the endpoint and the fix.
        """
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        client = _make_client(Config(**self.CHECK_CONFIG))
        where = f"store {self.url} (endpoint {client.meta.endpoint_url})"
        probe = "/".join(filter(None, (self.prefix, f".raysweep-check-{uuid.uuid4().hex}")))
        try:
            client.list_objects_v2(Bucket=self.bucket, MaxKeys=1,
                                   Prefix=f"{self.prefix}/" if self.prefix else "")
            client.put_object(Bucket=self.bucket, Key=probe, Body=b"", IfNoneMatch="*")
            try:
                honoured = [_refused(client.put_object, Bucket=self.bucket, Key=probe,
                                     Body=b"again", IfNoneMatch="*"),
                            _refused(client.put_object, Bucket=self.bucket, Key=probe,
                                     Body=b"again", IfMatch='"0123456789abcdef0123456789abcdef"')]
            finally:
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
        if not all(honoured):
            raise UserError(f"{where}: the endpoint ignores conditional writes (If-None-Match / "
                            f"If-Match), so two sweeps sharing this store could lose each "
                            f"other's images; use AWS S3 or a server that honours them")

    def mirror_dir(self, path: str) -> Path:
        """The local cache directory that mirrors `path`."""
        return self.cache / path

    def upload_dir(self, path: str) -> None:
        """Upload the local mirror of `path` (a fresh, never reused directory name)."""
        local = self.mirror_dir(path)
        for file in sorted(p for p in local.rglob("*") if p.is_file()):
            relative = check_path(file.relative_to(local).as_posix())
            self.client.upload_file(str(file), self.bucket, self.key(f"{path}/{relative}"))

    def delete_dir(self, path: str) -> None:
        for name in self.list(path):
            self.delete(name)
        shutil.rmtree(self.mirror_dir(path), ignore_errors=True)

    def download_dir(self, path: str, files: dict[str, str]) -> Path:
        """The local mirror of `path`, downloaded (into a temp folder, then renamed) unless the
        cache already holds it. `files` (relative path -> sha256) names what to fetch: only
        those, each checked as a path first. Directories are immutable once stored, so a cached
        copy is never replaced under a reader.
        """
        local = self.mirror_dir(path)
        if local.is_dir():
            return local
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = make_temp_dir(local.parent, f"{TEMP_PREFIX}{local.name}-")
        try:
            for relative in sorted(files):
                (tmp / check_path(relative)).parent.mkdir(parents=True, exist_ok=True)
                self.client.download_file(self.bucket, self.key(f"{path}/{relative}"),
                                          str(tmp / relative))
            os.replace(tmp, local)
        except OSError:
            if not local.is_dir():  # not another process on this machine finishing first
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return local

    @contextlib.contextmanager
    def stored_copy(self, path: str, files: dict[str, str]):
        """A fresh download of `path` into a temp folder, removed afterwards: what the bucket
        holds, which the local cache (checked when a generator is loaded) may not be."""
        self.cache.mkdir(parents=True, exist_ok=True)
        tmp = make_temp_dir(self.cache, f"{TEMP_PREFIX}verify-")
        try:
            for relative in sorted(files):
                (tmp / check_path(relative)).parent.mkdir(parents=True, exist_ok=True)
                self.client.download_file(self.bucket, self.key(f"{path}/{relative}"),
                                          str(tmp / relative))
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def refetch_dir(self, path: str, files: dict[str, str]) -> Path:
        """Download `path` again over a local copy found damaged (the stored one may be fine).
        The damaged copy is moved aside first, so no reader sees a half-replaced folder."""
        local = self.mirror_dir(path)
        if local.is_dir():
            aside = local.parent / f"{TEMP_PREFIX}damaged-{local.name}-{uuid.uuid4().hex[:8]}"
            with contextlib.suppress(FileNotFoundError):  # another process moved it first
                os.replace(local, aside)
            shutil.rmtree(aside, ignore_errors=True)
        return self.download_dir(path, files)


def _refused(put, **request) -> bool:
    """Whether a conditional PUT that must fail was refused (412 or 409), as S3 does."""
    from botocore.exceptions import ClientError

    try:
        put(**request)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("PreconditionFailed",
                                                           "ConditionalRequestConflict",
                                                           "412", "409"):
            return True
        raise
    return False


def _temp_leftovers(base: Path) -> list[Leftover]:
    """Temp files and folders (`.tmp-…`) below a local directory, not following links."""
    found = []
    for dirpath, dirnames, filenames in os.walk(base):
        for name in dirnames + filenames:
            if name.startswith(TEMP_PREFIX):
                entry = Path(dirpath) / name
                info = entry.lstat()
                found.append(Leftover(str(entry), info.st_mtime, _size(entry), (str(entry),)))
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
    return sorted(found, key=lambda leftover: leftover.where)


def _size(path: Path) -> int:
    if path.is_symlink() or not path.is_dir():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if not p.is_dir())


def _remove_local(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temp file in the same directory, fsync, then rename over `path`; the temp
    file is removed if anything fails (a full disk, an interrupt)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            # mkstemp's 0600 would lock the store's other users out of the renamed file.
            os.fchmod(handle.fileno(), 0o666 & ~umask())
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_CLIENT_LOCK = threading.Lock()
_UMASK_LOCK = threading.Lock()


def _make_client(config=None):
    import boto3

    return boto3.session.Session().client("s3", config=config)
