"""Blobs: content-addressed, verified before unpickling, healed by a rewrite; both backends."""
import os
import pickle
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jupyter_flow.errors import CorruptBlob, NotFound
from jupyter_flow.store import layout, open_store


class Boom:
    """A pickle that runs code when loaded: it creates the file named `path`."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(params=["local", "memory"])
def any_store(request, tmp_path):
    if request.param == "local":
        return open_store(str(tmp_path / "store"))
    return open_store(f"memory://jf-test-{time.monotonic_ns()}")


def blob_bytes(store, digest):
    return store.read_bytes(layout.blob(digest))


def test_values_round_trip_and_are_stored_once(any_store):
    d1, size = any_store.save_value({"a": [1, 2, 3]})
    d2, _ = any_store.save_value({"a": [1, 2, 3]})
    assert d1 == d2 and size == len(blob_bytes(any_store, d1))
    assert any_store.load_value(d1) == {"a": [1, 2, 3]}
    assert any_store.glob("blobs/??/*") == [layout.blob(d1)]


def test_a_tampered_blob_is_refused_before_it_is_unpickled(any_store, tmp_path):
    digest, _ = any_store.save_value([1, 2, 3])
    marker = tmp_path / "pwned"
    any_store.write_bytes(layout.blob(digest), pickle.dumps(Boom(str(marker))))
    with pytest.raises(CorruptBlob, match=digest):
        any_store.load_value(digest, "x")
    assert not marker.exists()


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.one_of(st.binary(max_size=300), st.lists(st.integers()), st.text(),
                       st.dictionaries(st.text(), st.floats())),
       flip=st.integers(0, 10_000), bit=st.integers(0, 7))
def test_every_bit_flip_is_reported_naming_the_blob_and_the_value(tmp_path, value, flip, bit):
    store = open_store(str(tmp_path / "flips"))
    digest, _ = store.save_value(value)
    data = bytearray(blob_bytes(store, digest))
    data[flip % len(data)] ^= 1 << bit
    store.write_bytes(layout.blob(digest), bytes(data))
    with pytest.raises(CorruptBlob) as e:
        store.load_value(digest, "my_var")
    assert digest in str(e.value) and "'my_var'" in str(e.value)


def test_a_value_produced_again_replaces_a_bad_blob(any_store):
    digest, _ = any_store.save_value(list(range(100)))
    any_store.write_bytes(layout.blob(digest), b"garbage")
    assert not any_store.blob_ok(digest)
    any_store.save_value(list(range(100)))
    assert any_store.blob_ok(digest) and any_store.load_value(digest) == list(range(100))


def test_saving_an_existing_value_refreshes_its_date(tmp_path):
    store = open_store(str(tmp_path / "store"))
    digest, _ = store.save_value("same")
    path = os.path.join(store.url, *layout.blob(digest).split("/"))
    os.utime(path, (time.time() - 7200, time.time() - 7200))
    store.save_value("same")
    assert time.time() - store.info(layout.blob(digest))[1] < 600


def test_a_missing_blob_names_itself(any_store):
    with pytest.raises(NotFound, match="0" * 32):
        any_store.load_value("0" * 32, "x")


def test_an_empty_blob_is_corrupt_not_a_crash(tmp_path):
    store = open_store(str(tmp_path / "store"))
    digest, _ = store.save_value(1)
    store.write_bytes(layout.blob(digest), b"")
    with pytest.raises(CorruptBlob, match=digest):
        store.load_value(digest)


def test_stale_temp_files_are_listed_but_live_ones_are_not(tmp_path):
    store = open_store(str(tmp_path / "store"))
    store.save_value(1)  # creates blobs/tmp
    tmp_dir = tmp_path / "store" / "blobs" / "tmp"
    (tmp_dir / "blob-dead").write_bytes(b"x" * 100)
    (tmp_dir / "blob-live").write_bytes(b"x")
    os.utime(tmp_dir / "blob-dead", (time.time() - 7200, time.time() - 7200))
    assert store.stale_temp_files(3600) == ["blobs/tmp/blob-dead"]
