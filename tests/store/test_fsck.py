"""`jupyter flow fsck`: corrupt blobs moved aside, damaged records reported, stale temp files removed."""
import os
import time

from conftest import cli

from jupyter_flow.store import layout, open_store, records
from jupyter_flow.store.records import RunRecord, TaskRecord
from jupyter_flow.store.status import Status


def test_fsck_finds_moves_aside_and_reports(store):
    s = open_store(store)
    good, _ = s.save_value("good")
    bad, _ = s.save_value("bad")
    s.write_bytes(layout.blob(bad), b"flipped")
    records.write_run(s, RunRecord(id="20250101T000000-000001", flow="f", status=Status.SUCCEEDED, steps=[]))
    records.write_task(s, TaskRecord(run_id="20250101T000000-000001", flow="f", step="a", status=Status.SUCCEEDED))
    s.write_bytes(layout.task_json("f", "20250101T000000-000001", "a", 0), b"{")
    dead = os.path.join(store, "blobs", "tmp", "blob-dead")
    with open(dead, "wb") as f:
        f.write(b"x")
    os.utime(dead, (time.time() - 7200, time.time() - 7200))

    proc = cli("fsck", "--dry-run", check=1)
    assert bad in proc.stdout and s.exists(layout.blob(bad)) and os.path.exists(dead)

    proc = cli("fsck", check=1)
    assert f"corrupt blob {bad}" in proc.stdout and "a/0/task.json" in proc.stdout
    assert not s.exists(layout.blob(bad)) and s.exists(layout.quarantined(bad)) and not os.path.exists(dead)
    assert s.load_value(good) == "good"
    s.save_value("bad")  # produced again: stored again
    assert s.load_value(bad) == "bad"


def test_fsck_of_a_clean_store_exits_0(store):
    open_store(store).save_value(1)
    assert "0 corrupt" in cli("fsck", check=0).stdout
