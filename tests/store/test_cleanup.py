"""gc never deletes what a kept, running or damaged run may need (fast: synthetic stores, real files)."""
import os
import time
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jupyter_flow.errors import FlowError
from jupyter_flow.store import layout, open_store, records
from jupyter_flow.store.gc import collect
from jupyter_flow.store.records import RunRecord, TaskRecord
from jupyter_flow.store.status import Status

HOUR = 3600


@pytest.fixture
def store(tmp_path):
    return open_store(str(tmp_path / "store"))


def age(store, key, seconds=2 * HOUR):
    path = os.path.join(store.url, *key.split("/"))
    os.utime(path, (time.time() - seconds, time.time() - seconds))


def old_blob(store, value):
    digest, _ = store.save_value(value)
    age(store, layout.blob(digest))
    return digest


def add_run(store, run_id, status="succeeded", outputs=(), origin=None, task_status="succeeded", user=None,
            origin_run=None, flow="f"):
    now = datetime.now(timezone.utc).isoformat()
    records.write_run(store, RunRecord(id=run_id, flow=flow, status=Status(status), created=now, heartbeat=now,
                                       host="elsewhere", steps=[{"name": "a"}], user=user or records.current_user(),
                                       origin_run=origin_run))
    records.write_task(store, TaskRecord(run_id=run_id, flow=flow, step="a", status=Status(task_status), origin=origin,
                                         outputs={f"v{i}": {"hash": h} for i, h in enumerate(outputs)}))


def blobs(store):
    return {layout.parse_blob(k) for k in store.glob(layout.ALL_BLOBS)}


def test_unreferenced_old_blobs_and_old_runs_go(store):
    kept, gone = old_blob(store, "kept"), old_blob(store, "gone")
    add_run(store, "20250101T000000-000001", outputs=[gone])
    add_run(store, "20250102T000000-000002", outputs=[kept])
    report = collect(store, keep=1)
    assert report["runs"] == ["20250101T000000-000001"] and blobs(store) == {kept}


def test_a_blob_a_running_run_just_produced_again_survives(store):
    """Item 1: the value existed (an hour old); a running step saves it again before its task.json."""
    digest = old_blob(store, "value")
    store.save_value("value")  # the step of a running run produces the same value
    add_run(store, "20250101T000000-000001", status="running")  # its task.json does not list it yet
    collect(store, keep=0)
    assert digest in blobs(store)
    assert store.load_value(digest) == "value"


def test_a_damaged_run_is_kept_with_its_blobs(store):
    """Item 4: a truncated run.json; its task records still name its blobs."""
    digest = old_blob(store, "mine")
    add_run(store, "20250101T000000-000001", outputs=[digest])
    add_run(store, "20250102T000000-000002")
    key = layout.run_json("f", "20250101T000000-000001")
    store.write_bytes(key, store.read_bytes(key)[:10])
    report = collect(store, keep=0)
    assert "20250101T000000-000001" not in report["runs"] and digest in blobs(store)


def test_no_blob_is_collected_while_a_kept_task_record_is_unreadable(store):
    digest = old_blob(store, "whose?")
    add_run(store, "20250101T000000-000001", outputs=[digest])
    store.write_bytes(layout.task_json("f", "20250101T000000-000001", "a", 0), b"{")
    report = collect(store, keep=5)
    assert report["unknown"] and digest in blobs(store)


def test_a_run_kept_as_a_resume_origin_keeps_its_failure_snapshot(store):
    """Item 5: the origin run failed (snapshot blob); a newer resume reused one of its tasks."""
    snap = old_blob(store, {"x": 1})
    add_run(store, "20250101T000000-000001", status="failed", task_status="failed")
    store.write_json(layout.task_key("f", "20250101T000000-000001", "a", 0) + "/failure.json",
                     {"variables": {"x": {"hash": snap}}, "unpicklable": {}, "modules": {}})
    origin = {"run_id": "20250101T000000-000001", "flow": "f", "step": "a", "index": 0,
              "key": layout.task_key("f", "20250101T000000-000001", "a", 0)}
    add_run(store, "20250102T000000-000002", origin=origin, task_status="reused")
    report = collect(store, keep=1)
    assert report["runs"] == [] and snap in blobs(store)


def test_stale_temporary_files_go_and_live_ones_stay(store):
    """Item 8: a killed blob write left a partial file in blobs/tmp."""
    store.save_value(0)
    tmp = os.path.join(store.url, "blobs", "tmp")
    for name in ("blob-dead", "blob-live"):
        with open(os.path.join(tmp, name), "wb") as f:
            f.write(b"partial")
    age(store, "blobs/tmp/blob-dead")
    report = collect(store, keep=10)
    assert report["temps"] == ["blobs/tmp/blob-dead"] and os.listdir(tmp) == ["blob-live"]


def test_dry_run_deletes_nothing(store):
    digest = old_blob(store, "x")
    collect(store, keep=0, dry_run=True)
    assert digest in blobs(store)


def test_negative_keep_is_refused(store):
    """Item 7."""
    add_run(store, "20250101T000000-000001")
    with pytest.raises(FlowError, match="--keep"):
        collect(store, keep=-1)
    assert records.list_runs(store)


# -- a store a team shares: whose runs, pins, resumed-from runs ---------------------------------------
def test_gc_collects_only_the_callers_runs_and_keeps_n_per_user(store, monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_USER", "ann")
    add_run(store, "20250101T000000-000001", user="bob")
    add_run(store, "20250102T000000-000002", user="ann")
    add_run(store, "20250103T000000-000003", user="ann")
    report = collect(store, keep=1)
    assert report["runs"] == ["20250102T000000-000002"]
    assert report["by_user"] == {"ann": [{"id": "20250102T000000-000002", "flow": "f", "status": "succeeded",
                                          "created": report["by_user"]["ann"][0]["created"]}]}
    add_run(store, "20250104T000000-000004", user="bob")
    report = collect(store, keep=1, all_users=True)  # bob's newest is kept, his older one goes
    assert report["runs"] == ["20250101T000000-000001"]
    assert [r.id for r in records.list_runs(store)] == ["20250104T000000-000004", "20250103T000000-000003"]


def test_runs_without_a_user_go_only_with_all_users(store):
    add_run(store, "20250101T000000-000001")
    key = layout.run_json("f", "20250101T000000-000001")
    store.write_json(key, {k: v for k, v in store.read_json(key).items() if k != "user"})  # recorded no user
    assert collect(store, keep=0)["runs"] == []
    assert collect(store, keep=0, all_users=True)["runs"] == ["20250101T000000-000001"]


def test_a_pinned_run_keeps_its_values_and_snapshot_until_unpinned(store):
    out, snap = old_blob(store, "out"), old_blob(store, {"x": 1})
    add_run(store, "20250101T000000-000001", status="failed", task_status="failed", outputs=[out])
    store.write_json(layout.task_key("f", "20250101T000000-000001", "a", 0) + "/failure.json",
                     {"variables": {"x": {"hash": snap}}, "unpicklable": {}, "modules": {}})
    pin = records.pin(store, "20250101T000000-0", note="ann is debugging it")
    assert pin["run_id"] == "20250101T000000-000001" and pin["by"] == records.current_user()
    assert collect(store, keep=0, all_users=True)["runs"] == [] and {out, snap} <= blobs(store)
    records.unpin(store, "20250101T000000-000001")
    assert collect(store, keep=0, all_users=True)["runs"] == ["20250101T000000-000001"]
    assert not {out, snap} & blobs(store)


def test_unpinning_a_run_that_is_not_pinned_or_does_not_exist_says_so(store):
    add_run(store, "20250101T000000-000001")
    with pytest.raises(FlowError, match="is not pinned"):
        records.unpin(store, "20250101T000000-000001")
    with pytest.raises(FlowError, match="no run"):
        records.pin(store, "20990101T000000-000009")
    assert not store.glob("pins/*")


def test_a_run_someone_resumed_from_is_kept_with_what_it_needs(store, monkeypatch):
    """bob resumed ann's failed run; ann's gc (and anyone's --all-users) keeps it, and the run it
    itself was resumed from, as long as bob's resume is kept."""
    monkeypatch.setenv("JUPYTERHUB_USER", "ann")
    snap = old_blob(store, {"x": 1})
    add_run(store, "20250101T000000-000001", status="failed", task_status="failed", user="ann")
    add_run(store, "20250102T000000-000002", status="failed", task_status="failed", user="ann",
            origin_run="20250101T000000-000001")
    store.write_json(layout.task_key("f", "20250102T000000-000002", "a", 0) + "/failure.json",
                     {"variables": {"x": {"hash": snap}}, "unpicklable": {}, "modules": {}})
    add_run(store, "20250103T000000-000003", user="bob", origin_run="20250102T000000-000002")
    add_run(store, "20250104T000000-000004", user="ann")
    assert collect(store, keep=0)["runs"] == ["20250104T000000-000004"]
    assert collect(store, keep=1, all_users=True)["runs"] == [] and snap in blobs(store)
    assert collect(store, keep=0, all_users=True)["runs"] == ["20250103T000000-000003", "20250102T000000-000002",
                                                             "20250101T000000-000001"]


def test_dry_run_lists_by_user_and_deletes_nothing(store):
    digest = old_blob(store, "x")
    add_run(store, "20250101T000000-000001", user="bob", outputs=[digest])
    add_run(store, "20250102T000000-000002", user="ann")
    report = collect(store, keep=0, all_users=True, dry_run=True)
    assert {u: [r["id"] for r in runs] for u, runs in report["by_user"].items()} == {
        "ann": ["20250102T000000-000002"], "bob": ["20250101T000000-000001"]}
    assert report["blobs"] == [layout.blob(digest)] and report["bytes"] > 0
    assert len(records.list_runs(store)) == 2 and digest in blobs(store)


# -- the promise, over generated team stores --------------------------------------------------------
USERS = ["ann", "bob", None]


@st.composite
def team_stores(draw):
    """Runs (oldest first) of several users and flows; some resumed from, or reusing a task of, an
    earlier run; some pinned; some still running."""
    runs = []
    for i in range(draw(st.integers(1, 7))):
        earlier = [r["id"] for r in runs]
        runs.append({"id": f"2025010{i + 1}T000000-00000{i}", "user": draw(st.sampled_from(USERS)),
                     "flow": draw(st.sampled_from(["f", "g"])),
                     "status": draw(st.sampled_from(["succeeded", "failed", "running"])),
                     "origin_run": draw(st.sampled_from([None] + earlier)),
                     "reuses": draw(st.sampled_from([None] + earlier)),
                     "pinned": draw(st.booleans())})
    return runs, draw(st.sampled_from(["ann", "bob"])), draw(st.booleans()), draw(st.integers(0, 2))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=team_stores())
def test_nobody_loses_what_a_kept_or_pinned_run_needs(tmp_path_factory, monkeypatch, case):
    runs, caller, all_users, keep = case
    monkeypatch.setenv("JUPYTERHUB_USER", caller)
    store = open_store(str(tmp_path_factory.mktemp("team")))
    blob_of = {}
    for r in runs:
        blob_of[r["id"]] = old_blob(store, r["id"])
        origin = r["reuses"] and {"run_id": r["reuses"], "flow": "f", "step": "a", "index": 0,
                                  "key": layout.task_key("f", r["reuses"], "a", 0)}
        add_run(store, r["id"], status=r["status"], outputs=[blob_of[r["id"]]], origin=origin,
                task_status="reused" if origin else "succeeded", user=r["user"] or "nobody",
                origin_run=r["origin_run"], flow=r["flow"])
        if r["user"] is None:  # recorded no user
            key = layout.run_json(r["flow"], r["id"])
            store.write_json(key, {k: v for k, v in store.read_json(key).items() if k != "user"})
        if r["pinned"]:
            records.pin(store, r["id"])
    collect(store, keep=keep, all_users=all_users)
    left = {r.id for r in records.list_runs(store)}
    for r in runs:
        if r["id"] not in left:  # deleted: it was the caller's (or anyone's, with all_users), unprotected
            assert (all_users or r["user"] == caller) and not r["pinned"] and r["status"] != "running"
            newer = [o for o in runs if (o["user"], o["flow"]) == (r["user"], r["flow"]) and o["id"] > r["id"]]
            assert len(newer) >= keep
        else:  # kept: so is everything it needs
            assert {r["origin_run"], r["reuses"]} - {None} <= left
            assert store.load_value(blob_of[r["id"]]) == r["id"]
            if r["reuses"]:
                assert store.load_value(blob_of[r["reuses"]]) == r["reuses"]
