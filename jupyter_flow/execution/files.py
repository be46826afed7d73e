"""Files a step reads and writes, seen from the runner: fingerprints, what changed since, putting files back.

A task's record lists the files its step read (`files.read`: PATH -> fingerprint at its first read)
and wrote (`files.written`: RELPATH -> the blob holding its final bytes, or, for a file that held a
secret, its fingerprint and `withheld`: why its bytes were not stored); see execution/in_kernel.py, which
records them. PATH is POSIX, relative to the notebook's folder when inside it, else absolute.
A fingerprint is {"size", "mtime", "hash"} (the store's content hash of the bytes); a folder's
(a step that listed it) hashes its sorted listing and counts its entries as its size; a file that
was not there when the step looked has None for all three. Imports stay light: this runs in every
task and in the cache check.
"""
from __future__ import annotations

import os
import stat

from jupyter_flow.errors import FlowError
from jupyter_flow.execution import secrets
from jupyter_flow.store import open_store
from jupyter_flow.store.blobs import digest_of, new_hash

CHUNK = 1 << 20
ABSENT = {"size": None, "mtime": None, "hash": None}


def full_path(path: str, cwd: str) -> str:
    return path if os.path.isabs(path) else os.path.join(cwd, *path.split("/"))


def fingerprint(path: str) -> dict:
    """{"size", "mtime", "hash"} of the file (or folder) at `path`; ABSENT if there is none."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return dict(ABSENT)
    if stat.S_ISDIR(st.st_mode):
        names = sorted(os.listdir(path))
        return {"size": len(names), "mtime": st.st_mtime, "hash": _hash_bytes("\n".join(names).encode()), "dir": True}
    if not stat.S_ISREG(st.st_mode):  # a pipe or a device: reading it would consume it, or never end
        return {"size": st.st_size, "mtime": st.st_mtime, "hash": ""}
    return {"size": st.st_size, "mtime": st.st_mtime, "hash": file_hash(path)}


def file_hash(path: str) -> str:
    """The store's content hash (see store.blobs.new_hash) of the file's bytes."""

    h = new_hash()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _hash_bytes(data: bytes) -> str:

    return digest_of(data)


def same(path: str, old: dict) -> bool:
    """Whether the file at `path` still has the content of fingerprint `old`: size and mtime equal
    means unchanged without reading it; otherwise its hash decides."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return old.get("hash") is None
    if old.get("hash") is None:
        return False
    if st.st_size == old.get("size") and st.st_mtime == old.get("mtime"):
        return True
    if stat.S_ISDIR(st.st_mode) != bool(old.get("dir")):
        return False
    if not old.get("dir") and st.st_size != old.get("size"):
        return False
    return fingerprint(path)["hash"] == old["hash"]


def _starts_with(path: str, meta: dict) -> bool:
    """Whether the file at `path` is the recorded content followed by more."""

    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size < meta["size"]:
                return False
            h, left = new_hash(), meta["size"]
            while left and (chunk := f.read(min(CHUNK, left))):
                h.update(chunk)
                left -= len(chunk)
    except OSError:
        return False
    return h.hexdigest() == meta["hash"]


def changes(read: dict, cwd: str) -> list[str]:
    """One short line per file of a recorded `files.read` whose content differs now."""
    out = []
    for path, old in (read or {}).items():
        full = full_path(path, cwd)
        if same(full, old):
            continue
        new = fingerprint(full)
        unit = "entries" if old.get("dir") or new.get("dir") else "bytes"
        if new["hash"] is None:
            out.append(f"{path} is gone")
        elif old.get("hash") is None:
            out.append(f"{path} appeared ({new['size']} {unit})")
        else:
            out.append(f"{path} changed ({old['size']} -> {new['size']} {unit})")
    return out


def recorded(store, cwd: str, read: dict, written: dict, removed=(), network=(), found=None) -> dict:
    """The task record's `files` from what a step did, by absolute normalised path: `read` {path: its
    fingerprint at the first read}, `written` {path: whether the step only appended to it}, `removed`.
    The files written under `cwd` are stored as blobs, checked for the secrets of `found` (see
    secrets.save_file): one that holds a secret is listed with its fingerprint and why, not stored."""

    cwd = os.path.normpath(cwd)
    inside = cwd.rstrip("/") + "/"

    def name(p: str) -> str:
        return "." if p == cwd else p.removeprefix(inside)

    stored = {}
    for p, append in written.items():
        if p.startswith(inside) and os.path.isfile(p):
            st = os.stat(p)
            try:
                digest, size = secrets.save_file(store, p, found)
                stored[name(p)] = {"hash": digest, "size": size, "mtime": st.st_mtime}
            except secrets.Withheld as e:  # listed (its content hash tells a change), its bytes not stored
                stored[name(p)] = {"hash": file_hash(p), "size": st.st_size, "mtime": st.st_mtime, "withheld": str(e)}
            if append:
                stored[name(p)]["append"] = True
    return {"read": {name(p): fp for p, fp in read.items()}, "written": stored,
            "removed": [name(p) for p in removed if p.startswith(inside) and not os.path.exists(p)],
            "network": list(network)}


class SecretFile(FlowError):
    """A file a step needs held a secret when the step before wrote it, so it is not in the store."""


def restore(store, written: dict, cwd: str) -> list[str]:
    """Write each recorded file (`files.written`: RELPATH -> {"hash", "size"[, "mtime", "append",
    "only_missing"]}) from its blob into `cwd` where the local content differs (size first, then
    hash), or, marked only_missing, where there is none; the paths restored.
    A file the step only appended to (a log) is left alone where it starts with the recorded content:
    it is never rewound. Each is written to a temporary name beside it, then renamed: a reader sees
    the old file or the new one. A file that held a secret (`withheld`) was not stored: SecretFile
    where it is needed and not here as it was written."""
    restored = []
    for rel, meta in (written or {}).items():
        full = full_path(rel, cwd)
        if os.path.isabs(rel) or os.path.normpath(rel).startswith(".."):
            continue  # only files under the notebook's folder travel
        if same(full, meta) or (meta.get("append") and _starts_with(full, meta)) or (
                meta.get("only_missing") and os.path.lexists(full)):
            continue
        if meta.get("withheld"):
            if meta.get("only_missing"):
                continue  # the step may not read it: it fails on its own if it does
            var = meta["withheld"].partition("$")[2]
            raise SecretFile(f"file {rel} was not stored: it {meta['withheld']} (secrets never are), and "
                             f"{'the copy here differs' if os.path.lexists(full) else 'it is not here'}; write it in "
                             f"the step that reads it, from that step's environment "
                             f"({f'os.environ[{var!r}]' if var else 'os.environ'}), instead of passing it as a file")
        buf = store.blob_bytes(meta["hash"], rel)
        os.makedirs(os.path.dirname(full) or ".", exist_ok=True)
        tmp = f"{full}.jf-{os.getpid()}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(buf)
            if meta.get("mtime") is not None:  # as it was written: a later size+mtime check needs no hash
                os.utime(tmp, (meta["mtime"], meta["mtime"]))
            os.replace(tmp, full)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
            if hasattr(buf, "close"):
                buf.close()
        restored.append(rel)
    return restored


# -- a step in another language (in_kernel.R) ----------------------------------------------------------
def _as_read(path: str, seen: dict) -> dict:
    """The fingerprint of a file read by a step in another language, which noted its size and time
    (`seen`) when it first read it: its hash is taken now if it has not changed since, else unknown ("")."""
    if seen.get("size") is None:
        return dict(ABSENT)  # not there when the step looked
    now, then = fingerprint(path), float(seen["mtime"])  # (R writes the time as text, see in_kernel.R)
    if now["size"] == seen["size"] and now["mtime"] is not None and abs(now["mtime"] - then) < 1e-6:
        return now
    return {"size": seen["size"], "mtime": then, "hash": ""}


def from_notes(notes: dict, found) -> dict:
    """The record's `files` (see `recorded`) of the notes a step in another language took of the
    files it read and wrote (in_kernel.R; see execution/crossing.py), checked for the secrets `found`."""

    def entries(key: str) -> dict:  # R writes an empty list for an empty map
        found = notes.get(key) or {}
        return {os.path.normpath(p): v for p, v in found.items()} if isinstance(found, dict) else {}

    read = {p: _as_read(p, seen) for p, seen in entries("read").items()}
    written = {p: bool(append) for p, append in entries("written").items()}
    return recorded(open_store(notes["store"]), notes["cwd"], read, written, found=found)
