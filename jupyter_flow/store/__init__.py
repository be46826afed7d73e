"""The store: one URL holding content-addressed blobs and run/task records as JSON.

`Store` is the backend (chosen by the URL's scheme, see backends.py) plus blobs: values pickled
with cloudpickle (large buffers out of band, see blobs.py), named by the xxh3 hash of their bytes,
and checked against that hash BEFORE they are unpickled. The key layout lives in layout.py; run
and task records in records.py.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
import uuid

from jupyter_flow.errors import CorruptBlob, FlowError, NotFound, StoreError
from jupyter_flow.store import blobs, layout
from jupyter_flow.store.backends import backend_for

ENV = "JUPYTER_FLOW_STORE"


class ReadOnly(StoreError):
    """The store may be read but not written (or not deleted from) with these credentials."""


def default_url() -> str:
    from jupyter_core.paths import jupyter_data_dir  # lazy: 45 ms (platformdirs); only when no store is named

    return os.path.join(jupyter_data_dir(), "flow")


def open_store(url: str | os.PathLike | None = None) -> Store:
    """The store at `url`, else $JUPYTER_FLOW_STORE, else the per-user default folder."""
    if isinstance(url, Store):
        return url
    return Store(str(url or os.environ.get(ENV) or default_url()))


class Store:
    def __init__(self, url: str):
        try:
            self.backend = backend_for(url)
        except (ImportError, ValueError) as e:
            raise StoreError(f"cannot open store {url!r}: {e}; install the fsspec driver for it "
                             "(pip install s3fs / gcsfs) or check the URL") from None
        self.url = self.backend.url

    def __repr__(self) -> str:
        return f"Store({self.url!r})"


    # -- checks ----------------------------------------------------------------------------
    def check_writable(self) -> None:
        """Fail early, in one line, when runs could not be recorded here: a tiny probe key is
        PUT under the temporary prefix, then deleted (one request each, on any store). ReadOnly if
        the credentials may not write or delete; StoreError if the store cannot be reached."""
        probe = layout.probe(uuid.uuid4().hex)
        try:
            with self._writing("write"):
                self.backend.write(probe, b"ok")
            with self._writing("delete"):
                self.backend.delete(probe)
        except ReadOnly:
            raise
        except Exception as e:  # noqa: BLE001 - any driver error means the same to the user
            raise StoreError(f"store {self.url} is not writable ({e.__class__.__name__}: {_short(e)}); "
                             f"check that it can be reached, or pass another --store URL or set {ENV}") from None

    @contextlib.contextmanager
    def _writing(self, action: str = "write", key: str | None = None):
        """A write (or delete) refused for want of permission, or on a read-only file system, raises
        ReadOnly: the one message naming the store and what is denied. With `key`, any other OSError
        becomes a StoreError naming the key; without, it goes on as it is."""
        try:
            yield
        except OSError as e:
            if isinstance(e, PermissionError) or e.errno == errno.EROFS:
                raise ReadOnly(f"the store {self.url} is read-only for these credentials "
                               f"({self.backend.denied(action)} denied); ask for write access or use another "
                               "--store") from None
            if key is None:
                raise
            raise StoreError(f"cannot {action} {key} in store {self.url}: {_short(e)}") from None

    # -- keys ------------------------------------------------------------------------------
    def write_bytes(self, key: str, data: bytes) -> None:
        with self._writing("write", key):
            self.backend.write(key, data)

    def write_json(self, key: str, obj) -> None:
        self.write_bytes(key, json.dumps(obj, indent=1, default=str).encode())

    def write_json_if(self, key: str, obj, allow) -> bool:
        """Write `obj` at `key` only if `allow(the bytes there now, or None)`; whether it was written.
        No other `write_json_if` of `key` comes between the check and the write (backends' write_if)."""
        return self.write_bytes_if(key, json.dumps(obj, indent=1, default=str).encode(), allow)

    def write_bytes_if(self, key: str, data: bytes, allow) -> bool:
        """`write_json_if` for bytes."""
        with self._writing("write", key):
            return self.backend.write_if(key, data, allow)

    def read_bytes(self, key: str) -> bytes:
        try:
            return self.backend.read(key)
        except FileNotFoundError:
            raise NotFound(f"{key} is not in store {self.url}") from None
        except OSError as e:
            raise StoreError(f"cannot read {key} from store {self.url}: {_short(e)}") from None

    def read_json(self, key: str):
        """The JSON at `key`; NotFound if absent, StoreError (naming the key) if unreadable."""
        data = self.read_bytes(key)
        try:
            return json.loads(data)
        except (ValueError, RecursionError) as e:
            raise StoreError(f"{key} in store {self.url} is damaged (not valid JSON: {_short(e)})") from None

    def exists(self, key: str) -> bool:
        return self.backend.exists(key)

    def glob(self, pattern: str) -> list[str]:
        """Keys matching `pattern` (relative to the store root)."""
        try:
            return self.backend.glob(pattern)
        except OSError as e:
            raise StoreError(f"cannot list store {self.url}: {_short(e)}") from None

    def children(self, key: str, after: str | None = None) -> list[str]:
        """The names of what is directly inside the folder `key` (none if it does not exist); with
        `after`, only the names that sort after it (on S3 only those are listed)."""
        try:
            names = self.backend.children(key, after)
        except OSError as e:
            raise StoreError(f"cannot list store {self.url}: {_short(e)}") from None
        return names if after is None else [n for n in names if n > after]

    def info(self, key: str) -> tuple[int, float]:
        """(size, mtime) of `key`."""
        return self.backend.info(key)

    def put_file(self, local_path: str, key: str) -> None:
        with self._writing("write"):
            self.backend.put_file(local_path, key)

    def move(self, src: str, dst: str) -> None:
        with self._writing("write"):
            self.backend.move(src, dst)

    def delete(self, key: str) -> None:
        with self._writing("delete"):
            self.backend.delete(key)

    def local_dir(self, key: str) -> str | None:
        """A local folder for `key` to be written in place, or None for object stores."""
        return self.backend.local_dir(key)

    def stale_temp_files(self, age: float) -> list[str]:
        return self.backend.stale_temp_files(age)

    # -- blobs -------------------------------------------------------------------------------
    blob_key = staticmethod(layout.blob)

    def has_blob(self, digest: str) -> bool:
        return self.exists(layout.blob(digest))

    def save_value(self, value) -> tuple[str, int]:
        """Pickle `value` into the store; returns (content hash, size in bytes).

        The blob is always (re)written, even when one of that name exists: that heals a corrupt
        blob, and refreshes the date `gc` uses to spare blobs a running run has just produced."""
        return self.save_blob(lambda writer: blobs.dump(value, writer))

    def save_file(self, path: str) -> tuple[str, int]:
        """Store the bytes of the file at `path` as a blob (a file a step wrote); (content hash, size)."""
        with open(path, "rb") as f:
            return self.save_blob(lambda writer: shutil.copyfileobj(f, writer, 1 << 20))

    def save_blob(self, fill) -> tuple[str, int]:
        """`fill(writer)` writes the blob's bytes; they are hashed as they are written, then renamed
        (local) or PUT whole under their hash."""
        fd, tmp = tempfile.mkstemp(dir=self.backend.temp_dir(), prefix="blob-")
        try:
            with os.fdopen(fd, "wb") as f:
                writer = blobs.HashingWriter(f)
                fill(writer)
            self.put_file(tmp, layout.blob(writer.hash.hexdigest()))
            return writer.hash.hexdigest(), writer.size
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    def verify_blob(self, digest: str) -> None:
        """NotFound if the blob is missing, CorruptBlob if its bytes do not match its hash."""
        self._verified(digest, None)

    def blob_ok(self, digest: str) -> bool:
        try:
            self.verify_blob(digest)
            return True
        except FlowError:
            return False

    def _verified(self, digest: str, name: str | None):
        """The blob's bytes (see blobs.read_buffer), once they match the hash."""
        what = f"blob {digest}" + (f" (value {name!r})" if name else "")
        try:
            with self.backend.open(layout.blob(digest)) as f:
                buf = blobs.read_buffer(f)
            actual = blobs.digest_of(buf)
        except FileNotFoundError:
            raise NotFound(f"{what} is missing from store {self.url} (deleted by gc, or moved aside by fsck?); "
                           "re-run the step that produced it (jupyter flow resume RUN --from STEP)") from None
        except (OSError, ValueError) as e:
            raise StoreError(f"cannot read {what} from store {self.url}: {_short(e)}") from None
        if actual != digest:
            raise CorruptBlob(f"{what} is corrupt (its bytes do not match its hash); run `jupyter flow fsck`, "
                              "then re-run the step that produced it (jupyter flow resume RUN --from STEP)")
        return buf

    def blob_bytes(self, digest: str, name: str | None = None):
        """The bytes of blob `digest` as one buffer (see blobs.read_buffer), checked against its hash."""
        return self._verified(digest, name)

    def load_value(self, digest: str, name: str | None = None):
        """The value stored under `digest`. Its bytes are checked against the hash before anything
        is unpickled, so a tampered or damaged blob never runs code. Large arrays come back as
        writable copy-on-write views of the blob file: changing them never changes the store."""
        import cloudpickle  # noqa: F401 - registers what cloudpickled values need

        buf = self._verified(digest, name)
        try:
            return blobs.loads(buf)
        except Exception as e:
            what = f"blob {digest}" + (f" (value {name!r})" if name else "")
            raise StoreError(f"cannot load {what}: {e.__class__.__name__}: {_short(e)}; install what it "
                             "needs in this environment") from e  # the cause names the missing module


def _short(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else e.__class__.__name__


__all__ = ["ENV", "ReadOnly", "Store", "default_url", "open_store"]
