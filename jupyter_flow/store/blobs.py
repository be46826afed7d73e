"""The blob format: how a value becomes the bytes of one blob, how it is hashed, and how it is read
back without copying its large buffers.

A value is pickled with cloudpickle protocol 5. Buffers of 64 KiB or more that support it (numpy
arrays, pandas columns, `pickle.PickleBuffer`s) are written out of band, after the pickle stream,
each aligned to 64 bytes, followed by a footer indexing them:

    pickle stream | pad | buffer 0 | pad | buffer 1 ... | index (uint64s) | index length | MAGIC

A value without such buffers is a plain pickle (ending in the STOP opcode `.`, never in MAGIC).
Either way the blob is one file, written once through `HashingWriter` (hashed with xxh3 while it is
written: no second pass), so content addressing, atomic rename, gc and fsck see one key per value.

Reading: `read_buffer` gives the blob's bytes as one writable buffer: a copy-on-write mmap of a
local file of 1 MiB or more (mmap.ACCESS_COPY: nothing is read until touched, and a reader that
changes a loaded array changes its private pages, never the file), else a bytearray (small files;
on object stores the one the download was written into). The buffer is hashed and compared BEFORE
`loads` unpickles it; `loads` then hands numpy views into that buffer (`pickle.loads(..., buffers=...)`),
so a 500 MB array loads without a copy.
"""
from __future__ import annotations

import io
import mmap
import os
import pickle
import struct

import xxhash

MAGIC = b"JFOOB\x00\x01\n"  # ends every blob with out-of-band buffers; a plain pickle ends in b"."
OUT_OF_BAND_MIN = 64 * 1024  # smaller buffers stay in the pickle stream
ALIGN = 64


def new_hash():
    return xxhash.xxh3_128()


def dump(value, writer: HashingWriter) -> None:
    """Write `value` in the blob format to `writer` (which counts the bytes written)."""
    import cloudpickle  # lazy: 40 ms; a run served from the cache stores no value

    buffers: list[memoryview] = []

    def out_of_band(buf: pickle.PickleBuffer) -> bool:
        try:
            raw = buf.raw()
        except BufferError:  # not contiguous: in band
            return True
        if raw.nbytes < OUT_OF_BAND_MIN:
            return True
        buffers.append(raw)
        return False

    cloudpickle.dump(value, writer, protocol=5, buffer_callback=out_of_band)
    if not buffers:
        return
    index = [writer.size]
    for raw in buffers:
        writer.write(bytes(-writer.size % ALIGN))
        index += [writer.size, raw.nbytes]
        writer.write(raw)
    writer.write(struct.pack(f"<{len(index) + 1}Q", *index, len(index)) + MAGIC)


def loads(buf):
    """The value in blob bytes `buf` (already verified); out-of-band buffers become views into `buf`."""
    view = memoryview(buf)
    if view.nbytes < 16 or view[-len(MAGIC):] != MAGIC:
        return pickle.loads(view)
    (count,) = struct.unpack_from("<Q", view, view.nbytes - 16)
    index = struct.unpack_from(f"<{count}Q", view, view.nbytes - 16 - 8 * count)
    pickle_end, spans = index[0], index[1:]
    parts = [view[spans[i]:spans[i] + spans[i + 1]] for i in range(0, len(spans), 2)]
    return pickle.loads(view[:pickle_end], buffers=parts)


def hash_value(value) -> str:
    """The hash `Store.save_value` would give `value`, without writing it anywhere."""
    writer = HashingWriter(_Discard())
    dump(value, writer)
    return writer.hash.hexdigest()


class _Discard:
    def write(self, data) -> int:
        return len(memoryview(data).cast("B"))


MAP_MIN = 1 << 20  # smaller files are read: a mapping holds a file descriptor while values use it


def read_buffer(f):
    """The whole binary file object `f` as one writable buffer: a copy-on-write mmap of a real file
    of MAP_MIN bytes or more (no read, no copy), the bytearray an object store's download filled
    (`f.data`, see backends.Whole: no copy), else a bytearray read in one go."""
    if isinstance(getattr(f, "data", None), bytearray):
        return f.data
    try:
        fd = f.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        fd = None
    if fd is not None and os.fstat(fd).st_size >= MAP_MIN:
        return mmap.mmap(fd, 0, access=mmap.ACCESS_COPY)
    return bytearray(f.read())


def digest_of(buf) -> str:
    """The content hash of blob bytes (500 MB in about 0.1 s once in the page cache)."""
    h = new_hash()
    h.update(buf)
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
