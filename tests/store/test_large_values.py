"""Large values: buffers written out of band and loaded as copy-on-write views of the blob file.

Every promise of small values holds: one blob per value (the hash covers every buffer), verified
before unpickling, readers that change a loaded array never change the store; both backends."""
import mmap
import os
import pickle
import time

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from jupyter_flow.errors import CorruptBlob
from jupyter_flow.store import blobs, gc, layout, open_store
from jupyter_flow.store.blobs import hash_value

MB = 2**20


@pytest.fixture(params=["local", "memory"])
def any_store(request, tmp_path):
    if request.param == "local":
        return open_store(str(tmp_path / "store"))
    return open_store(f"memory://jf-large-{time.monotonic_ns()}")


def several_buffers():
    rng = np.random.default_rng(1)
    return {
        "c": rng.random((300, 200)),
        "f": np.asfortranarray(rng.integers(0, 1000, (256, 300), dtype=np.int32)),
        "strided": rng.random(100_000)[::3],  # not contiguous: pickled in band
        "frame": pd.DataFrame({"x": rng.random(50_000), "y": rng.integers(0, 9, 50_000), "s": ["a", "b"] * 25_000}),
        "buffer": pickle.PickleBuffer(bytearray(rng.bytes(MB))),
        "small": np.arange(10),
        "same twice": [np.ones(20_000)] * 2,
    }


def assert_same(loaded, value):
    for key in value:
        a, b = loaded[key], value[key]
        if isinstance(b, pd.DataFrame):
            pd.testing.assert_frame_equal(a, b)
        elif isinstance(b, pickle.PickleBuffer):
            assert bytes(a) == bytes(b.raw())
        elif isinstance(b, list):
            assert all(np.array_equal(x, y) for x, y in zip(a, b)) and a[0] is a[1]
        else:
            assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
            assert not b.flags.forc or a.flags.f_contiguous == b.flags.f_contiguous  # layout kept


def test_values_holding_several_buffers_round_trip_and_are_stored_once(any_store):
    value = several_buffers()
    digest, size = any_store.save_value(value)
    assert any_store.save_value(several_buffers()) == (digest, size)
    assert hash_value(value) == digest
    assert any_store.glob(layout.ALL_BLOBS) == [layout.blob(digest)]
    assert any_store.read_bytes(layout.blob(digest)).endswith(blobs.MAGIC)
    assert_same(any_store.load_value(digest), value)


def test_a_large_array_loads_without_a_copy_from_a_local_store(tmp_path):
    store = open_store(str(tmp_path / "store"))
    digest, _ = store.save_value(np.random.default_rng(0).random(8 * MB // 8))
    loaded = store.load_value(digest)
    assert not loaded.flags.owndata and loaded.flags.writeable  # a view of the mapped file
    assert loaded.ctypes.data % blobs.ALIGN == 0


def mapped_by(array):
    """What an array's memory finally belongs to (an mmap for a view of a mapped blob)."""
    while isinstance(array, np.ndarray) and array.base is not None:
        array = array.base
    return array.obj if isinstance(array, memoryview) else array


def mixed_frame(rows: int) -> pd.DataFrame:
    """Columns of the kinds bench/bigvalue.py moves: floats, ints, datetimes, bools, a category."""
    rng = np.random.default_rng(3)
    return pd.DataFrame({"x": rng.random(rows), "n": rng.integers(0, 1 << 40, rows),
                         "t": pd.to_datetime(rng.integers(0, 1 << 60, rows)), "f": rng.random(rows, dtype=np.float32),
                         "ok": rng.random(rows) < 0.5,
                         "kind": pd.Categorical.from_codes(rng.integers(0, 16, rows), list("abcdefghijklmnop"))})


def test_a_mixed_column_frame_round_trips_and_its_columns_load_without_a_copy(tmp_path):
    store = open_store(str(tmp_path / "store"))
    frame = mixed_frame(300_000)
    digest, size = store.save_value(frame)
    assert size < frame.memory_usage(deep=True).sum() * 1.01  # one copy of the data, nothing more
    loaded = store.load_value(digest)
    pd.testing.assert_frame_equal(loaded, frame)
    for column in ("x", "n", "f"):  # views of the mapped blob, not copies (numpy pickles datetimes in band)
        assert isinstance(mapped_by(loaded[column].to_numpy()), mmap.mmap), column
    loaded.loc[0, "x"] = -1.0  # a private page: the store keeps the saved bytes
    pd.testing.assert_frame_equal(store.load_value(digest), frame)


def test_changing_a_loaded_array_never_changes_the_store(any_store):
    value = {"a": np.random.default_rng(2).random(MB), "frame": pd.DataFrame({"x": np.zeros(MB // 8)})}
    digest, _ = any_store.save_value(value)
    stored = any_store.read_bytes(layout.blob(digest))
    loaded = any_store.load_value(digest)
    loaded["a"][:] = -1.0
    loaded["a"].sort()
    loaded["frame"].loc[0, "x"] = 5.0
    assert any_store.read_bytes(layout.blob(digest)) == stored and any_store.blob_ok(digest)
    again = any_store.load_value(digest)
    assert np.array_equal(again["a"], value["a"]) and again["frame"].loc[0, "x"] == 0.0


@pytest.mark.parametrize("where", ["pickle stream", "a buffer", "padding", "index"])
def test_a_corrupted_part_is_refused_naming_the_value(any_store, where):
    digest, size = any_store.save_value({"name": "x" * 100, "a": np.ones(MB // 8), "b": np.zeros(MB // 8)})
    data = bytearray(any_store.read_bytes(layout.blob(digest)))
    at = {"pickle stream": 20, "a buffer": size // 2, "padding": data.index(b"\x00" * 8, 200) + 1,
          "index": size - len(blobs.MAGIC) - 12}[where]
    data[at] ^= 0x40
    any_store.write_bytes(layout.blob(digest), bytes(data))
    with pytest.raises(CorruptBlob, match=f"{digest}.*'arrays'"):
        any_store.load_value(digest, "arrays")


def test_blobs_written_before_out_of_band_buffers_still_load(any_store):
    """A store written by an older version: plain protocol-5 pickles with the buffers in band."""
    import cloudpickle

    value = {"a": np.arange(MB)}
    data = cloudpickle.dumps(value, protocol=5)
    digest = blobs.digest_of(data)
    any_store.write_bytes(layout.blob(digest), data)
    assert np.array_equal(any_store.load_value(digest)["a"], value["a"])


def test_gc_deletes_a_large_value_with_all_its_buffers_and_keeps_referenced_ones(tmp_path):
    store = open_store(str(tmp_path / "store"))
    kept, _ = store.save_value(np.ones(MB))
    doomed, _ = store.save_value(np.zeros(MB))
    old = time.time() - 2 * gc.FRESH_SECONDS
    os.utime(store.backend.path(layout.blob(doomed)), (old, old))
    os.utime(store.backend.path(layout.blob(kept)), (old, old))
    found, _ = gc._unreferenced_blobs(store, {kept})
    assert found == [layout.blob(doomed)]


dtypes = st.one_of(hnp.integer_dtypes(), hnp.unsigned_integer_dtypes(), hnp.floating_dtypes(),
                   hnp.complex_number_dtypes(), hnp.boolean_dtypes(), hnp.datetime64_dtypes(),
                   hnp.byte_string_dtypes(), hnp.unicode_string_dtypes())
arrays = hnp.arrays(dtypes, hnp.array_shapes(min_dims=0, max_dims=3, max_side=40)).flatmap(
    lambda a: st.sampled_from([a, np.asfortranarray(a), a.T, a[..., ::2] if a.ndim else a]))
nested = st.recursive(arrays, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                      st.dictionaries(st.text(max_size=3), inner, max_size=3),
                                                      st.tuples(inner, st.integers())), max_leaves=6)


def same(a, b) -> bool:
    if isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape
                and (not b.flags.forc or a.flags.f_contiguous == b.flags.f_contiguous)
                and a.tobytes(order="A") == b.tobytes(order="A"))  # bit for bit (NaN, NaT too)
    if isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in b)
    if isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=nested)
def test_any_nesting_of_arrays_round_trips_and_hashes_the_same(tmp_path, monkeypatch, value):
    monkeypatch.setattr(blobs, "OUT_OF_BAND_MIN", 1)  # every contiguous buffer out of band
    store = open_store(str(tmp_path / "store"))
    digest, _ = store.save_value(value)
    assert hash_value(value) == digest
    assert same(store.load_value(digest), pickle.loads(pickle.dumps(value, protocol=5)))  # as in band


@pytest.mark.slow
def test_a_step_changing_a_large_input_in_place_leaves_the_producers_value_intact(run_flow, tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    for tags, source in [(["imports"], "import numpy as np"),
                         (["step:make"], "arr = np.arange(2**18, dtype=float)"),
                         (["step:change"], "arr[:] = -1.0\nchanged = float(arr.sum())"),
                         (["step:check"], "seen = float(arr.sum())")]:
        nb.cells.append(nbformat.v4.new_code_cell(source, metadata={"tags": tags}))
    path = tmp_path / "inplace.ipynb"
    nbformat.write(nb, path)
    result = run_flow(path)
    n = 2**18
    assert result["change"].data.changed == -n and result["check"].data.seen == -n  # as top to bottom
    assert np.array_equal(result["make"].data.arr, np.arange(n, dtype=float))  # its blob is untouched


@pytest.mark.parametrize("code", ['total = float(df["x"].sum()) + len(df)', "m = df.x.mean()", "s = arr[0].sum()"])
def test_reading_a_part_of_a_large_value_does_not_make_the_step_hash_it_again(code):
    """A step that only reads a column of a value does not list it as maybe changed, so its end does not
    pickle and hash it again (a 300 MB DataFrame: 0.9 s of the step's end, bench/bigvalue.py)."""
    from jupyter_flow.flow import analysis

    assert analysis.analyze([code]).maybe == []
