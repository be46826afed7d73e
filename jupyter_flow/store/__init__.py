"""The store: one fsspec URL holding content-addressed blobs and run/task records as JSON.

Layout (readable without jupyter_flow):
  blobs/<h[:2]>/<h>                                  pickled values, named by the hash of their bytes
  flows/<flow>/runs/<run>/run.json                   the run record
  flows/<flow>/runs/<run>/<step>/<index>/task.json   a task record; output.ipynb, log.txt beside it
  cache/<key>.json                                   cross-run cache index -> the task that made it
Writes are atomic: a temporary name then a rename (local), or one whole PUT (object stores).
"""
from __future__ import annotations

import json
import os
import tempfile
import uuid

from ..errors import NotFound, StoreError
from .blobs import HashingReader, HashingWriter

ENV = "JUPYTER_FLOW_STORE"


def default_url() -> str:
    from jupyter_core.paths import jupyter_data_dir

    return os.path.join(jupyter_data_dir(), "flow")


def open_store(url: str | os.PathLike | None = None) -> "Store":
    """The store at `url`, else $JUPYTER_FLOW_STORE, else the per-user default folder."""
    if isinstance(url, Store):
        return url
    return Store(str(url or os.environ.get(ENV) or default_url()))


class Store:
    def __init__(self, url: str):
        self.url = url
        self.local = "://" not in url or url.startswith(("file://", "local://"))
        if self.local:  # plain files: fsspec (0.3 s to import) is loaded only if a listing needs it
            self.root = os.path.abspath(url.split("://", 1)[-1])
            self.url = self.root
            self._fs = None
            return
        import fsspec

        try:
            self._fs, self.root = _url_to_fs(fsspec, url)
        except (ImportError, ValueError) as e:
            raise StoreError(f"cannot open store {url!r}: {e}; install the fsspec driver for it "
                             "(pip install s3fs / gcsfs) or check the URL") from None
        self.root = self.root.rstrip("/")

    @property
    def fs(self):
        if self._fs is None:
            from fsspec.implementations.local import LocalFileSystem

            self._fs = LocalFileSystem()
        return self._fs

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    def path(self, key: str) -> str:
        return f"{self.root}/{key}"

    # -- checks ----------------------------------------------------------------------------
    def check_writable(self) -> None:
        """Fail early, with a fix, when runs could not be recorded here."""
        probe = f".probe-{uuid.uuid4().hex}"
        try:
            self.fs.makedirs(self.root, exist_ok=True)
            self.fs.pipe_file(self.path(probe), b"ok")
            self.fs.rm_file(self.path(probe))
        except Exception as e:  # noqa: BLE001 - any driver error means the same to the user
            raise StoreError(f"store {self.url} is not writable ({e.__class__.__name__}: {_short(e)}); "
                             f"pass a writable --store URL or set {ENV}") from None

    # -- records -----------------------------------------------------------------------------
    def write_bytes(self, key: str, data: bytes) -> None:
        target = self.path(key)
        try:
            if self.local:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                tmp = f"{target}.{uuid.uuid4().hex[:8]}.tmp"
                with open(tmp, "wb") as f:
                    f.write(data)
                os.replace(tmp, target)
            else:
                self.fs.pipe_file(target, data)
        except OSError as e:
            raise StoreError(f"cannot write {key} to store {self.url}: {_short(e)}") from None

    def write_json(self, key: str, obj) -> None:
        self.write_bytes(key, json.dumps(obj, indent=1, default=str).encode())

    def read_bytes(self, key: str) -> bytes:
        try:
            if self.local:
                with open(self.path(key), "rb") as f:
                    return f.read()
            return self.fs.cat_file(self.path(key))
        except FileNotFoundError:
            raise NotFound(f"{key} is not in store {self.url}") from None
        except OSError as e:
            raise StoreError(f"cannot read {key} from store {self.url}: {_short(e)}") from None

    def read_json(self, key: str):
        return json.loads(self.read_bytes(key))

    def exists(self, key: str) -> bool:
        return os.path.exists(self.path(key)) if self.local else self.fs.exists(self.path(key))

    def glob(self, pattern: str) -> list[str]:
        """Keys matching `pattern` (relative to the store root)."""
        try:
            found = self.fs.glob(self.path(pattern))
        except FileNotFoundError:
            return []
        except OSError as e:
            raise StoreError(f"cannot list store {self.url}: {_short(e)}") from None
        root = self.fs._strip_protocol(self.root) if not self.local else self.root
        return sorted(p[len(root) + 1:] for p in found)

    def put_file(self, local_path: str, key: str) -> None:
        if self.local and os.path.abspath(local_path) == self.path(key):
            return
        if self.local:
            os.makedirs(os.path.dirname(self.path(key)), exist_ok=True)
        self.fs.put_file(local_path, self.path(key))

    def delete(self, key: str) -> None:
        try:
            self.fs.rm(self.path(key), recursive=True)
        except FileNotFoundError:
            pass

    def local_dir(self, key: str) -> str | None:
        """A local folder for `key` to be written in place, or None for object stores."""
        if not self.local:
            return None
        os.makedirs(self.path(key), exist_ok=True)
        return self.path(key)

    # -- blobs -------------------------------------------------------------------------------
    @staticmethod
    def blob_key(digest: str) -> str:
        return f"blobs/{digest[:2]}/{digest}"

    def has_blob(self, digest: str) -> bool:
        return self.exists(self.blob_key(digest))

    def save_value(self, value) -> tuple[str, int]:
        """Pickle `value` into the store; returns (content hash, size in bytes)."""
        import cloudpickle

        tmp_dir = self.path("blobs/tmp") if self.local else None
        if tmp_dir:
            os.makedirs(tmp_dir, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=tmp_dir, prefix="blob-")
        try:
            with os.fdopen(fd, "wb") as f:
                writer = HashingWriter(f)
                cloudpickle.dump(value, writer, protocol=5)
            digest = writer.hash.hexdigest()
            key = self.blob_key(digest)
            if self.local:
                os.makedirs(os.path.dirname(self.path(key)), exist_ok=True)
                if os.path.exists(self.path(key)):
                    os.remove(tmp)
                else:
                    os.replace(tmp, self.path(key))
            elif not self.fs.exists(self.path(key)):
                self.fs.put_file(tmp, self.path(key))
            return digest, writer.size
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    def load_value(self, digest: str):
        """The value stored under `digest`, its bytes checked against the hash."""
        import cloudpickle

        try:
            path = self.path(self.blob_key(digest))
            f = open(path, "rb") if self.local else self.fs.open(path, "rb")
        except FileNotFoundError:
            raise NotFound(f"blob {digest} is missing from store {self.url} (deleted by gc?); re-run the step "
                           "that produced it") from None
        with f:
            reader = HashingReader(f, digest)
            value = cloudpickle.load(reader)
            reader.verify()
        return value


def _url_to_fs(fsspec, url: str):
    """Object stores without their listings cache: runs, task records and cancel markers are written
    by other processes (workers, other users), and a cached listing would hide them from this one."""
    if fsspec.utils.get_protocol(url) in ("file", "local"):
        return fsspec.core.url_to_fs(url)
    try:
        return fsspec.core.url_to_fs(url, use_listings_cache=False)
    except TypeError:  # a driver that takes no such option
        return fsspec.core.url_to_fs(url)


def _short(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else e.__class__.__name__


__all__ = ["Store", "open_store", "default_url", "ENV"]
