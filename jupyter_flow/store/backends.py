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

import errno
import fcntl
import glob as globmod
import hashlib
import io
import os
import shutil
import time
import uuid
from datetime import datetime

TMP_SUFFIX = ".tmp"
LOCK_SUFFIX = ".lock"
# An object this large is read from an object store in RANGES parallel ranges: s3fs reads one stream
# of 100 MB from moto in 5-9 s where 4 ranges at once take 4.4-5.6 s (bench/team.py, README).
RANGED_READ = 32 << 20
RANGES = 4


def backend_for(url: str):
    if "://" not in url or url.startswith(("file://", "local://")):
        return LocalBackend(url.split("://", 1)[-1])
    return FsspecBackend(url)


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

    def children(self, key: str) -> list[str]:
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
        RANGES byte ranges fetched at once (fsspec's cat_ranges: concurrent on s3fs, gcsfs...)."""
        path = self.path(key)
        size = self.fs.size(path) if self.fs.async_impl else None
        if size is None or size < RANGED_READ:
            return io.BytesIO(self.read(key))
        bounds = [size * i // RANGES for i in range(RANGES + 1)]
        parts = self.fs.cat_ranges([path] * RANGES, bounds[:-1], bounds[1:])
        if [len(p) for p in parts] != [b - a for a, b in zip(bounds, bounds[1:])]:
            raise OSError(f"{key} changed while it was read")  # a blob never does; whatever it is, no half of it
        return io.BytesIO(b"".join(parts))

    def exists(self, key: str) -> bool:
        return self.fs.exists(self.path(key))

    def glob(self, pattern: str) -> list[str]:
        try:
            found = self.fs.glob(self.path(pattern))
        except FileNotFoundError:
            return []
        prefix = len(self.root) + 1
        return sorted(p[prefix:] for p in found if p.startswith(self.root + "/"))

    def children(self, key: str) -> list[str]:
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
