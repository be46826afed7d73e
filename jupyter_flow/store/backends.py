"""Two backends behind one interface, chosen by the store URL's scheme: plain local files, and
fsspec for everything else (s3://, gs://, memory://...). Keys are `/`-separated and relative to
the store root; callers never learn which backend they have.

Local writes go to a temporary name beside the target, then are renamed (a reader sees the old
or the new file, never half of one); object stores PUT whole objects, which is atomic already.

`write_if(key, data, allow)` writes only if `allow(current bytes or None)`, with no other write_if
of that key in between: under an exclusive lock of `<key>.lock` locally (flock; a shared mount
with locks, such as NFSv4, works too); on S3 as a conditional PUT (If-Match the ETag of what was
read, If-None-Match: * when there was nothing), retried from the read when another writer came
first. The ETag of a small object PUT whole is the MD5 of its bytes, so one GET is enough; where it
is not (SSE-KMS), the first PUT fails and the retries HEAD for it before they read. Other fsspec
stores, and mounts without locks, check, then write (a stale writer that wakes up later is still
refused; two writes in the same instant are not ordered).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import fnmatch
import glob as globmod
import hashlib
import io
import os
import shutil
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

TMP_SUFFIX = ".tmp"
LOCK_SUFFIX = ".lock"
# An object this large is read from an object store in RANGES parallel ranges (on S3 the first range's
# reply gives the size, so no HEAD comes first). On S3 one GET is the default: moto on loopback serves
# 100 MB in one streamed GET in 0.80 s and as 4 ranges in 2.19 s (medians of 5, load 11; it copies the
# whole object for each range); on AWS, where one connection carries ~90 MB/s, RANGES = 4 is the faster.
RANGED_READ = 32 << 20
RANGES = 4
S3_RANGES = 1
CHUNK = 1 << 20  # a download is copied into its one buffer this many bytes at a time


def backend_for(url: str):
    if "://" not in url or url.startswith(("file://", "local://")):
        return LocalBackend(url.split("://", 1)[-1])
    if url.startswith("s3://") and not _fsspec_s3_options():
        return S3Backend(url)
    return FsspecBackend(url)


class Whole(io.RawIOBase):
    """An object read whole into one bytearray, as a file; `data` is that bytearray (blobs.read_buffer
    takes it as it is: no copy)."""

    def __init__(self, data: bytearray):
        super().__init__()
        self.data = data
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = min(len(b), len(self.data) - self._pos)
        memoryview(b).cast("B")[:n] = memoryview(self.data)[self._pos:self._pos + n]
        self._pos += n
        return n


class LocalBackend:
    """Plain files (no fsspec on the hot path: it takes 0.3 s to import)."""

    def __init__(self, path: str):
        self.root = os.path.abspath(path)
        self.url = self.root

    def path(self, key: str) -> str:
        return os.path.join(self.root, *key.split("/"))

    def write(self, key: str, data: bytes) -> None:
        target = self.path(key)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        tmp = f"{target}.{uuid.uuid4().hex[:8]}{TMP_SUFFIX}"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    def write_if(self, key: str, data: bytes, allow) -> bool:
        target = self.path(key)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target + LOCK_SUFFIX, "ab") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed, or its process dies
            except OSError as e:  # a mount without locks: check, then write, as on other stores
                if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
            try:
                current = self.read(key)
            except FileNotFoundError:
                current = None
            if not allow(current):
                return False
            self.write(key, data)
            return True

    def read(self, key: str) -> bytes:
        with open(self.path(key), "rb") as f:
            return f.read()

    def open(self, key: str):
        """A binary file object to read `key` from."""
        return open(self.path(key), "rb")

    def exists(self, key: str) -> bool:
        return os.path.exists(self.path(key))

    def glob(self, pattern: str) -> list[str]:
        prefix = len(self.root) + 1
        return sorted(p[prefix:].replace(os.sep, "/")
                      for p in globmod.glob(os.path.join(globmod.escape(self.root), pattern)))

    def children(self, key: str, after: str | None = None) -> list[str]:
        """The names in the folder `key`, all of them (`after` is the Store's to apply)."""
        try:
            return os.listdir(self.path(key))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def info(self, key: str) -> tuple[int, float]:
        """(size in bytes, modification time as a POSIX timestamp)."""
        st = os.stat(self.path(key))
        return st.st_size, st.st_mtime

    def put_file(self, local_path: str, key: str) -> None:
        """Move a finished local file to `key`, replacing what is there (this refreshes its date)."""
        target = self.path(key)
        if os.path.abspath(local_path) == target:
            return
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.replace(local_path, target)

    def move(self, src: str, dst: str) -> None:
        if self.exists(src):
            os.makedirs(os.path.dirname(self.path(dst)), exist_ok=True)
            os.replace(self.path(src), self.path(dst))

    def delete(self, key: str) -> None:
        path = self.path(key)
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.exists(path):
            os.remove(path)

    def denied(self, action: str) -> str:
        """What a refused `action` (write, delete) lacked, as the user would grant it."""
        return f"write access to {self.root}"

    def local_dir(self, key: str) -> str | None:
        os.makedirs(self.path(key), exist_ok=True)
        return self.path(key)

    def temp_dir(self) -> str | None:
        """Where blob writes start (inside the store, so the final rename stays on one file system)."""
        path = self.path("blobs/tmp")
        os.makedirs(path, exist_ok=True)
        return path

    def stale_temp_files(self, age: float) -> list[str]:
        """Keys of temporary files no write has touched for `age` seconds (a live write keeps its
        file's date fresh, so these belong to writers that died)."""
        cutoff = time.time() - age
        folders = ("flows/*/runs/*/*", "flows/*/runs/*/*/*/*", "flows/*/runs/*/*/*/attempts/*/*", "flows/*/index/*",
                   "cache/*", "pins/*")
        found = self.glob("blobs/tmp/*") + [k for pattern in folders for k in self.glob(pattern + TMP_SUFFIX)]
        stale = []
        for key in found:
            try:
                if self.info(key)[1] < cutoff:
                    stale.append(key)
            except FileNotFoundError:
                continue  # finished meanwhile
        return stale


class FsspecBackend:
    """Any fsspec file system, through its public API only."""

    def __init__(self, url: str):
        import fsspec  # lazy: 0.3 s; only a store on s3:// (or another fsspec URL) needs it

        self.url = url
        self.fs, root = _url_to_fs(fsspec, url)
        self.root = root.rstrip("/")

    def path(self, key: str) -> str:
        return f"{self.root}/{key}"

    def write(self, key: str, data: bytes) -> None:
        self.fs.pipe_file(self.path(key), data)

    def write_if(self, key: str, data: bytes, allow) -> bool:
        path = self.path(key)
        conditional = "s3" in self.fs.protocol
        ask = False  # first guess the ETag: the MD5 of the bytes, for an object PUT whole without KMS
        while True:
            try:
                tag = self.fs.info(path).get("ETag") if conditional and ask else None
                current = self.fs.cat_file(path)  # as new as `tag` or newer: a newer one fails the PUT below
            except FileNotFoundError:
                tag, current = None, None
            if not allow(current):
                return False
            if not conditional:
                self.fs.pipe_file(path, data)
                return True
            try:
                if current is None:
                    self.fs.pipe_file(path, data, mode="create")  # If-None-Match: *
                else:
                    tag = tag or f'"{hashlib.md5(current, usedforsecurity=False).hexdigest()}"'
                    self.fs.pipe_file(path, data, IfMatch=tag)
                return True
            except FileExistsError:
                continue  # written meanwhile: decide again on what is there now
            except OSError as e:
                if _s3_error_code(e) not in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
                    raise
                ask = True  # written meanwhile, or ETags here are not MD5s: read the ETag, then the bytes

    def read(self, key: str) -> bytes:
        return self.fs.cat_file(self.path(key))

    def open(self, key: str):
        """The object as a file, read whole into memory: a large one (RANGED_READ or more, a blob) as
        RANGES byte ranges fetched at once (fsspec's cat_ranges: concurrent on gcsfs, adlfs...)."""
        path = self.path(key)
        size = self.fs.size(path) if self.fs.async_impl else None
        if size is None or size < RANGED_READ:
            return Whole(bytearray(self.read(key)))
        bounds = [size * i // RANGES for i in range(RANGES + 1)]
        parts = self.fs.cat_ranges([path] * RANGES, bounds[:-1], bounds[1:])
        if [len(p) for p in parts] != [b - a for a, b in zip(bounds, bounds[1:])]:
            raise OSError(f"{key} changed while it was read")  # a blob never does; whatever it is, no half of it
        return Whole(bytearray(b"".join(parts)))

    def exists(self, key: str) -> bool:
        return self.fs.exists(self.path(key))

    def glob(self, pattern: str) -> list[str]:
        try:
            found = self.fs.glob(self.path(pattern))
        except FileNotFoundError:
            return []
        prefix = len(self.root) + 1
        return sorted(p[prefix:] for p in found if p.startswith(self.root + "/"))

    def children(self, key: str, after: str | None = None) -> list[str]:
        """The names in the folder `key`, all of them (`after` is the Store's to apply)."""
        try:
            found = self.fs.ls(self.path(key), detail=False)
        except FileNotFoundError:
            return []
        return [p.rstrip("/").rsplit("/", 1)[-1] for p in found if p.rstrip("/") != self.path(key)]

    def info(self, key: str) -> tuple[int, float]:
        info = self.fs.info(self.path(key))
        mtime = info.get("mtime") or info.get("LastModified") or info.get("updated") or info.get("created") or 0
        if hasattr(mtime, "timestamp"):
            mtime = mtime.timestamp()
        elif isinstance(mtime, str):
            mtime = datetime.fromisoformat(mtime.replace("Z", "+00:00")).timestamp()
        return int(info.get("size") or 0), float(mtime)

    def put_file(self, local_path: str, key: str) -> None:
        self.fs.put_file(local_path, self.path(key))

    def move(self, src: str, dst: str) -> None:
        if self.exists(src):
            self.fs.mv(self.path(src), self.path(dst))

    def delete(self, key: str) -> None:
        try:
            self.fs.rm(self.path(key), recursive=True)
        except FileNotFoundError:
            pass

    def denied(self, action: str) -> str:
        """The permission a PermissionError of `action` (write, delete) lacked: S3's action names."""
        if "s3" in self.fs.protocol:
            return {"write": "PutObject", "delete": "DeleteObject"}[action]
        return f"{action} permission"

    def local_dir(self, key: str) -> None:
        return None

    def temp_dir(self) -> None:
        return None

    def stale_temp_files(self, age: float) -> list[str]:
        return []  # whole-object PUTs leave no temporary objects behind


class S3Backend(FsspecBackend):
    """s3:// stores: everything a reader does (read, open, exists, info, children, glob) goes through one
    botocore client; writes, deletes and moves go through s3fs, as on FsspecBackend (its conditional
    PUTs, multipart uploads and error names), made only when first needed. A colleague who only reads
    never imports s3fs (1.2 s cold), and a 100 MB blob streams into the one buffer it is unpickled from
    instead of s3fs's parts joined and copied (bench/team.py, README "A store a team shares").

    The client is botocore's default one, from the same configuration s3fs's default uses (AWS_* variables,
    the shared config and credentials files, a profile, an instance role), so credentials, endpoint and
    region are the same as for the writes. A store configured through fsspec's own s3 options is opened
    with FsspecBackend instead (backend_for). botocore's response checksums are switched off where S3 does
    not require them: a blob is checked against its content hash before it is unpickled anyway."""

    def __init__(self, url: str):
        self.url = url
        self.root = url.split("://", 1)[1].rstrip("/")
        self.bucket, _, prefix = self.root.partition("/")
        self.prefix = prefix + "/" if prefix else ""
        self._fs = None
        self.client = _s3_client()

    @property
    def fs(self):
        """The s3fs file system, for writes (made on first use)."""
        if self._fs is None:
            import fsspec  # 0.1 s, and s3fs 1.2 s cold: a reader never needs them

            self._fs = _url_to_fs(fsspec, self.url)[0]
        return self._fs

    def _get(self, key: str, **kwargs):
        with _s3_errors(key):
            return self.client.get_object(Bucket=self.bucket, Key=self.prefix + key, **kwargs)

    def read(self, key: str) -> bytes:
        reply = self._get(key)
        with _s3_errors(key):
            return reply["Body"].read()

    def open(self, key: str):
        """The object as a file, read whole into one buffer, written as it streams in. With S3_RANGES = 1
        (the default) in one GET; else the first RANGED_READ bytes in one GET, whose reply gives the size,
        and the rest, if any, as S3_RANGES - 1 ranges fetched at once, each only if the object is still
        the one the first came from (If-Match its ETag)."""
        count = S3_RANGES
        try:
            first = self._get(key, **({"Range": f"bytes=0-{RANGED_READ - 1}"} if count > 1 else {}))
        except OSError as e:
            if _s3_error_code(e) != "InvalidRange":
                raise
            return Whole(bytearray())  # an empty object: it has no byte 0
        size = int(first.get("ContentRange", "").rpartition("/")[2] or first["ContentLength"])
        data = bytearray(size)
        head = min(size, RANGED_READ) if "ContentRange" in first else size  # a server may send it all
        bounds = [head + (size - head) * i // (count - 1) for i in range(count)] if size > head else [head]
        ranges = [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]

        def fetch(a: int, b: int) -> None:
            reply = self._get(key, Range=f"bytes={a}-{b - 1}", IfMatch=first["ETag"])
            self._fill(key, reply["Body"], data, a, b)

        with ThreadPoolExecutor(max(len(ranges), 1)) as pool:
            rest = [pool.submit(fetch, a, b) for a, b in ranges]
            self._fill(key, first["Body"], data, 0, head)
            for done in rest:
                done.result()
        return Whole(data)

    @staticmethod
    def _fill(key: str, body, data: bytearray, start: int, end: int) -> None:
        """Copy a reply's body into data[start:end], a chunk at a time; no more and no less."""
        view = memoryview(data)
        at = start
        with _s3_errors(key):
            for chunk in body.iter_chunks(CHUNK):
                if at + len(chunk) > end:
                    break
                view[at:at + len(chunk)] = chunk
                at += len(chunk)
        if at != end:
            raise OSError(f"{key} changed while it was read")  # a blob never does; whatever it is, no half of it

    def exists(self, key: str) -> bool:
        try:
            self.info(key)
            return True
        except FileNotFoundError:
            return bool(self._list(key + "/", max_keys=1))  # a folder

    def info(self, key: str) -> tuple[int, float]:
        with _s3_errors(key):
            head = self.client.head_object(Bucket=self.bucket, Key=self.prefix + key)
        return int(head["ContentLength"]), head["LastModified"].timestamp()

    def children(self, key: str, after: str | None = None) -> list[str]:
        """The names in the folder `key`; with `after`, S3 lists only those that sort after it
        (ListObjectsV2's StartAfter: a listing of the runs newer than the run ledger, not of all)."""
        folder = key.strip("/") + "/" if key.strip("/") else ""  # "" is the store's root
        try:
            return [name.rstrip("/")[len(folder):] for name in self._list(folder, after=after)]
        except FileNotFoundError:  # no bucket
            return []

    def glob(self, pattern: str) -> list[str]:
        """Keys (and folders) matching `pattern`, `*`, `?` and `[...]` matching within one `/`-segment (as
        fsspec's glob): one delimited listing per folder a wildcard segment looks into, the folders of one
        level listed at once. `**` goes to s3fs's glob."""
        if "**" in pattern:
            return super().glob(pattern)
        try:
            return self._glob(pattern.strip("/").split("/"))
        except FileNotFoundError:  # no bucket
            return []

    def _glob(self, parts: list[str]) -> list[str]:
        found = [""]  # keys matched so far (folders, ending in "/", until the last segment)
        with ThreadPoolExecutor(8) as pool:
            for i, part in enumerate(parts):
                last = i == len(parts) - 1
                if not last and not _has_wildcard(part):
                    found = [f + part + "/" for f in found]
                    continue
                literal = part if not _has_wildcard(part) else part[:min(part.find(c) for c in "*?[" if c in part)]
                listings = pool.map(self._list, [f + literal for f in found])
                found = [name if last else name.rstrip("/") + "/"
                         for f, names in zip(found, listings) for name in names
                         if fnmatch.fnmatchcase(name.rstrip("/")[len(f):], part) and (last or name.endswith("/"))]
                if not found:
                    return []
        return sorted({f.rstrip("/") for f in found})

    def _list(self, prefix: str, max_keys: int | None = None, after: str | None = None) -> list[str]:
        """Keys and folders (ending in "/") directly under `prefix` (relative to the store root); with
        `after`, from the first key after prefix + after on."""
        names: list[str] = []
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix + prefix, Delimiter="/",
            **({"StartAfter": self.prefix + prefix + after} if after else {}),
            **({"PaginationConfig": {"MaxItems": max_keys}} if max_keys else {}))
        cut = len(self.prefix)
        with _s3_errors(prefix):
            for page in pages:
                names += [p["Prefix"][cut:] for p in page.get("CommonPrefixes", [])]
                names += [o["Key"][cut:] for o in page.get("Contents", [])]
        return names


def _has_wildcard(part: str) -> bool:
    return any(c in part for c in "*?[")


_CLIENTS: dict = {}
_CLIENTS_LOCK = threading.Lock()


def _s3_client():
    """One S3 client per process and AWS configuration (clients are thread-safe; making one takes 0.3 s),
    with connections for the ranges of a few blobs at once. botocore's own session, which boto3's wraps
    (the same credentials, region and endpoint): without boto3's import, 1.11 s instead of 1.22 s from
    nothing to a client (median of 7 fresh processes, load 11)."""
    import botocore.session  # 0.4-0.6 s: only S3 stores need it
    from botocore.config import Config

    config = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_")))
    with _CLIENTS_LOCK:
        key = (os.getpid(), config)
        if key not in _CLIENTS:
            _CLIENTS[key] = botocore.session.Session().create_client("s3", config=Config(
                response_checksum_validation="when_required", max_pool_connections=4 * RANGES))
        return _CLIENTS[key]


@contextlib.contextmanager
def _s3_errors(key: str):
    """botocore's errors as the OSErrors s3fs raises for them: FileNotFoundError for a missing key or
    bucket, PermissionError for a denied one (Store names the store and the permission), else OSError;
    the botocore error stays the cause (_s3_error_code reads it)."""
    from botocore.exceptions import BotoCoreError, ClientError  # lazy: only the S3 backend needs botocore

    try:
        yield
    except ClientError as e:
        code = (e.response.get("Error") or {}).get("Code")
        status = (e.response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        if code in ("NoSuchKey", "NoSuchBucket", "NotFound", "404") or status == 404:
            raise FileNotFoundError(errno.ENOENT, f"{key}: {code}") from e
        if code in ("AccessDenied", "403") or status == 403:
            raise PermissionError(errno.EACCES, f"{key}: {code}") from e
        raise OSError(f"{key}: {e}") from e
    except BotoCoreError as e:  # the endpoint cannot be reached, credentials are missing...
        raise OSError(f"{key}: {e}") from e


def _fsspec_s3_options() -> bool:
    """Whether fsspec's configuration (FSSPEC_S3_* variables, its config folder) gives s3 options, which
    only s3fs would apply."""
    if not any(k.startswith("FSSPEC_") for k in os.environ) and not os.path.isdir(
            os.path.join(os.path.expanduser("~"), ".config", "fsspec")):
        return False
    import fsspec.config  # only then: the config it reads

    return bool(fsspec.config.conf.get("s3"))


def _s3_error_code(e: OSError) -> str | None:
    """The S3 error code behind an s3fs error (s3fs keeps botocore's error as the cause)."""
    response = getattr(e.__cause__, "response", None) or {}
    return (response.get("Error") or {}).get("Code")


def _url_to_fs(fsspec, url: str):
    """Object stores without their listings cache: runs, task records and cancel markers are written
    by other processes (workers, other users), and a cached listing would hide them from this one."""
    try:
        return fsspec.core.url_to_fs(url, use_listings_cache=False)
    except TypeError:  # a driver that takes no such option
        return fsspec.core.url_to_fs(url)
