"""An S3 store, against a real S3 API: `moto_server` on a loopback port, reached through s3fs.

Every process (the CLI, the kernels it starts) finds the server through AWS_ENDPOINT_URL alone.
"""
from __future__ import annotations

import json
import uuid

import pytest
from conftest import SCENARIOS as NOTEBOOKS
from conftest import cli, one_line_error
from support.services import free_port, s3_bucket

import jupyter_flow
from jupyter_flow.readers import client
from jupyter_flow.store import open_store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """The environment of an S3 server with an empty bucket; also set in this process."""
    with s3_bucket(tmp_path_factory.mktemp("moto"), "flows") as (env, _):
        yield env


@pytest.fixture
def s3_store(s3):
    return f"s3://flows/{uuid.uuid4().hex[:8]}"


def runs(s3_store, env) -> list[dict]:
    result = cli("runs", "--store", s3_store, "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def blobs(s3_store) -> list[str]:
    return open_store(s3_store).glob("blobs/*/*")


def test_cli_run_and_read_back(s3, s3_store):
    first = jupyter_flow.run(NOTEBOOKS / "linear.ipynb", store=s3_store)
    assert first.status == "succeeded" and first["e"].data.e == 69
    assert [r["id"] for r in client.list_runs(s3_store)] == [first.id]  # same process, after its own run
    before = blobs(s3_store)
    assert before

    result = cli("run", NOTEBOOKS / "linear.ipynb", "--store", s3_store, "--no-cache", "--quiet", env=s3)
    assert result.returncode == 0, result.stdout + result.stderr
    listed = runs(s3_store, s3)  # a fresh process lists both
    assert [r["status"] for r in listed] == ["succeeded", "succeeded"]
    # this process listed the store before the other one wrote its run: it must not serve a stale listing
    assert [r["id"] for r in client.list_runs(s3_store)] == [r["id"] for r in listed]
    second = next(r["id"] for r in listed if r["id"] != first.id)
    shown = cli("show", second, "--store", s3_store, env=s3)
    assert shown.returncode == 0, shown.stderr
    assert second in shown.stdout and "succeeded" in shown.stdout
    r = jupyter_flow.Run(second, store=s3_store)
    assert r["e"].data.e == 69 and r["a"].data.a == 2
    assert {t.status for t in r.tasks} == {"succeeded"}  # really ran, not served from cache
    assert r["e"].notebook.cells and isinstance(r["e"].log, str)  # executed notebook and log were uploaded
    assert blobs(s3_store) == before  # values are content-addressed: an identical rerun adds no blob


def test_the_stores_own_traffic_is_not_the_steps_network_use(s3, s3_store):
    """Loading inputs from and saving outputs to an S3 store connects to it from the step's kernel: that
    is not network use of the step's code, so an unchanged rerun is served from the cache."""
    first = jupyter_flow.run(NOTEBOOKS / "linear.ipynb", store=s3_store)
    assert first.status == "succeeded"
    assert all(not (t.record.get("files") or {}).get("network") for t in first.tasks), \
        {t.step: t.record.get("files") for t in first.tasks}
    again = jupyter_flow.run(NOTEBOOKS / "linear.ipynb", store=s3_store)
    assert {t.status for t in again.tasks} == {"cached"}, {t.step: t.record.get("reason") for t in again.tasks}


def test_failure_snapshot_loads_from_s3(s3, s3_store):
    result = cli("run", NOTEBOOKS / "error_notebook.ipynb", "--store", s3_store, "--quiet", env=s3)
    assert result.returncode == 1
    [run] = runs(s3_store, s3)
    assert run["status"] == "failed" and run["error"]["step"] == "second"
    namespace: dict = {}
    jupyter_flow.load(run["id"], "second", store=s3_store, into=namespace, quiet=True)
    assert namespace["a"] == 2 and namespace["b"] == 0 and namespace["x"] == 1
    task = jupyter_flow.Run(run["id"], store=s3_store)["second"]
    outputs = json.dumps(task.notebook.cells[-1].outputs)
    assert "ZeroDivisionError" in outputs or task.error["type"] == "ZeroDivisionError"


def test_same_value_is_stored_once(s3, s3_store):
    s = open_store(s3_store)
    value = {"numbers": list(range(1000)), "name": "x"}
    first, size = s.save_value(value)
    second, _ = s.save_value(dict(value))
    assert first == second and size > 0
    assert s.glob("blobs/*/*") == [s.blob_key(first)]
    assert s.load_value(first) == value


def test_large_arrays_round_trip_through_s3_and_a_corrupt_one_is_refused(s3, s3_store):
    import numpy as np
    import pandas as pd

    from jupyter_flow.errors import CorruptBlob

    s = open_store(s3_store)
    value = {"a": np.random.default_rng(0).random(2**18), "frame": pd.DataFrame({"x": np.arange(2**17)})}
    digest, size = s.save_value(value)
    loaded = s.load_value(digest)
    assert np.array_equal(loaded["a"], value["a"]) and loaded["frame"].equals(value["frame"])
    loaded["a"][:] = 0  # a writable copy: the stored object is unchanged
    assert s.blob_ok(digest) and np.array_equal(s.load_value(digest)["a"], value["a"])
    data = bytearray(s.read_bytes(s.blob_key(digest)))
    data[size // 2] ^= 1
    s.write_bytes(s.blob_key(digest), bytes(data))
    with pytest.raises(CorruptBlob, match="'big'"):
        s.load_value(digest, "big")


def test_unreachable_endpoint_is_one_line(s3):
    dead = {**s3, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
            "AWS_MAX_ATTEMPTS": "1"}  # the SDK's default retries take ~30 s to give up
    result = cli("run", NOTEBOOKS / "linear.ipynb", "--store", "s3://flows/nowhere", env=dead)
    assert result.returncode == 2
    assert "s3://flows/nowhere" in one_line_error(result)


def test_listing_through_the_run_index_on_s3(s3, s3_store):
    """On S3 the index is whole objects (no append): the first listing writes it, the next ones read
    it and show the same; a run finished since is picked up; fsck rebuilds it."""
    from jupyter_flow.store import fsck, layout, records

    from .test_run_index import record, write_mixed_runs

    store = open_store(s3_store)
    write_mixed_runs(store, 12)
    listing = ("runs", "--all-users", "--store", s3_store, "--format", "json")
    first = cli(*listing, env=s3, check=0).stdout
    assert len(json.loads(first)) == 13 and store.glob(layout.index_chunks()), "the first listing wrote the index"
    assert cli(*listing, env=s3, check=0).stdout == first
    records.write_run(store, record(12, "succeeded", 0))  # a run that ended since
    listed = client.list_runs(s3_store, user="ann", limit=3)
    assert [r["id"] for r in listed][:1] == [record(12, "succeeded", 0)["id"]]
    for key in store.glob(layout.index_chunks()):
        store.write_bytes(key, b"damaged")
    assert not fsck.check(s3_store)["corrupt"]
    assert [r.id for r in records.list_runs(store)] == [r.id for r in records.rebuild_index(store, write=False)]


@pytest.mark.parametrize("ranges", [1, 4])
def test_a_large_blob_is_read_whole_and_checked(s3_store, monkeypatch, ranges):
    """A blob of RANGED_READ bytes or more comes from S3 in one GET (the default) or in parallel ranges:
    the value is whole, and a changed byte in any range is still caught by the hash check before
    anything is unpickled."""
    import numpy as np

    from jupyter_flow.errors import CorruptBlob
    from jupyter_flow.store import backends, layout

    monkeypatch.setattr(backends, "S3_RANGES", ranges)
    store = open_store(s3_store)
    value = np.arange((backends.RANGED_READ + 12345) // 8, dtype=np.int64)
    digest, size = store.save_value(value)
    assert size >= backends.RANGED_READ
    assert np.array_equal(store.load_value(digest), value)
    data = bytearray(store.backend.read(layout.blob(digest)))
    data[size * 3 // 4] ^= 0xFF  # a byte in the last range
    store.backend.write(layout.blob(digest), bytes(data))
    with pytest.raises(CorruptBlob, match=digest):
        store.load_value(digest)
