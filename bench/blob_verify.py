"""What checking a blob's hash before unpickling it costs, on a 500 MB numpy array.

Compares, with the page cache warm, the median of N loads (taken in turns) of:
  plain     map the blob and unpickle it (arrays as views of the mapping), no check at all (the floor)
  verified  Store.load_value: map the blob, xxh3 its bytes, then unpickle them
Run: python bench/blob_verify.py [MB] [N]
"""
import statistics
import sys
import tempfile
import time

import numpy as np

from jupyter_flow.store import blobs, layout, open_store


def medians(fns, n: int) -> list[float]:
    """Median seconds of each function, run in turns (so a busy machine slows all of them alike)."""
    times = [[] for _ in fns]
    for _ in range(n):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return [statistics.median(ts) for ts in times]


def main(mb: int = 500, n: int = 7) -> None:
    store = open_store(tempfile.mkdtemp(prefix="jf-bench-"))
    digest, size = store.save_value(np.random.default_rng(0).random(mb * 1_000_000 // 8))
    path = store.backend.path(layout.blob(digest))

    def plain():
        with open(path, "rb") as f:
            blobs.loads(blobs.read_buffer(f))

    def verified():
        store.load_value(digest)

    plain(), verified()  # warm the page cache
    a, b = medians([plain, verified], n)
    print(f"{size / 1e6:.0f} MB blob, median of {n}: plain load {a:.3f} s, verified load {b:.3f} s, "
          f"ratio {b / a:.3f}")
    store.delete("blobs")


if __name__ == "__main__":
    main(*map(int, sys.argv[1:]))
