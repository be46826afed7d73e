"""Hashing for blobs: values are hashed while they are written, and their bytes are hashed again
(xxh3, several GB/s) before anything unpickles them.

Values are pickled with cloudpickle protocol 5 straight into the file: large buffers (numpy
arrays, bytes) go to the file without an intermediate copy.
"""
from __future__ import annotations

import io
import mmap
import os

import xxhash


def new_hash():
    return xxhash.xxh3_128()


def hash_value(value) -> str:
    """The hash `Store.save_value` would give `value`, without writing it anywhere."""
    import cloudpickle

    writer = HashingWriter(_Discard())
    cloudpickle.dump(value, writer, protocol=5)
    return writer.hash.hexdigest()


class _Discard:
    def write(self, data) -> int:
        return len(memoryview(data).cast("B"))


def digest_of_file(f) -> str:
    """The content hash of a whole binary file object, which is left at its start. A real file is
    hashed through an mmap (no copy: 500 MB in under 0.1 s once cached), anything else in chunks."""
    h = new_hash()
    try:
        fd = f.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        fd = None
    if fd is not None:
        if os.fstat(fd).st_size:
            with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as view:
                h.update(view)
    else:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    f.seek(0)
    return h.hexdigest()


class HashingWriter:
    def __init__(self, raw):
        self.raw = raw
        self.hash = new_hash()
        self.size = 0

    def write(self, data) -> int:
        self.hash.update(data)
        n = self.raw.write(data)
        self.size += len(memoryview(data).cast("B"))
        return n
