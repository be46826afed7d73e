"""Hashing for blobs: values are hashed while they are written, and their bytes are hashed again
(xxh3, several GB/s) before anything unpickles them.

Values are pickled with cloudpickle protocol 5 straight into the file: large buffers (numpy
arrays, bytes) go to the file without an intermediate copy.
"""
from __future__ import annotations

import xxhash


def new_hash():
    return xxhash.xxh3_128()


def digest_of(data) -> str:
    """The content hash of a bytes-like object (bytes, mmap)."""
    h = new_hash()
    with memoryview(data) as view:
        h.update(view)
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
