"""Streams that hash what passes through them, so a blob is hashed while it is written or read.

Values are pickled with cloudpickle protocol 5 straight into the file: large buffers (numpy
arrays, bytes) go to the file without an intermediate copy, and come back with `readinto`.
"""
from __future__ import annotations

import xxhash

from ..errors import CorruptBlob


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


class HashingReader:
    """A file reader for `pickle.load` that checks the content hash once the value is read."""

    def __init__(self, raw, expected: str):
        self.raw = raw
        self.expected = expected
        self.hash = new_hash()

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.hash.update(data)
        return data

    def readinto(self, buffer) -> int:
        n = self.raw.readinto(buffer)
        self.hash.update(memoryview(buffer)[:n])
        return n

    def readline(self) -> bytes:
        data = self.raw.readline()
        self.hash.update(data)
        return data

    def verify(self) -> None:
        self.read()  # anything left over counts too
        if self.hash.hexdigest() != self.expected:
            raise CorruptBlob(f"blob {self.expected} is corrupt (its bytes do not match its hash); "
                              "re-run the step that produced it (jupyter flow resume --from STEP)")
