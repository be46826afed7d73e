"""Run and task records: typed, one status rule, damaged records shown instead of lost."""
import os
import socket
from datetime import datetime, timedelta, timezone

import pytest

from jupyter_flow.errors import FlowError, NotFound, StoreError
from jupyter_flow.store import layout, open_store, records
from jupyter_flow.store.records import RunRecord, TaskRecord
from jupyter_flow.store.status import Status, combine


def now(delta=0):
    return (datetime.now(timezone.utc) + timedelta(seconds=delta)).isoformat()


def make_run(store, run_id, flow="f", **fields):
    fields = {"user": "ann", "created": now(), "heartbeat": now(), "status": Status.SUCCEEDED,
              "steps": [{"name": "a"}, {"name": "b"}], **fields}
    run = RunRecord(id=run_id, flow=flow, **fields)
    records.write_run(store, run)
    return run


@pytest.fixture
def store(tmp_path):
    return open_store(str(tmp_path / "store"))


def test_records_round_trip_and_keep_fields_they_do_not_know(store):
    make_run(store, "20250101T000000-aaaaaa", extra={"added_by_newer_code": 1})
    run = records.find_run(store, "20250101T000000")
    assert run.status == Status.SUCCEEDED and run.user == "ann"
    assert store.read_json(layout.run_json("f", run.id))["added_by_newer_code"] == 1


def test_a_truncated_run_record_is_listed_as_damaged(store):
    make_run(store, "20250101T000000-aaaaaa")
    make_run(store, "20250102T000000-bbbbbb")
    key = layout.run_json("f", "20250101T000000-aaaaaa")
    store.write_bytes(key, store.read_bytes(key)[:25])
    runs = records.list_runs(store)
    assert [(r.id, r.status) for r in runs] == [("20250102T000000-bbbbbb", "succeeded"),
                                                ("20250101T000000-aaaaaa", "damaged")]
    assert "not valid JSON" in runs[1].damaged
    assert records.find_run(store, "20250101T000000-aaaaaa").status == Status.DAMAGED


def test_a_truncated_task_record_is_damaged_not_missing(store):
    run = make_run(store, "20250101T000000-aaaaaa")
    records.write_task(store, TaskRecord(run_id=run.id, flow="f", step="a", status=Status.SUCCEEDED))
    store.write_bytes(layout.task_json("f", run.id, "a", 0), b'{"run_id": ')
    (task,) = records.list_tasks(store, run)
    assert (task.step, task.index, task.status) == ("a", 0, Status.DAMAGED)
    with pytest.raises(StoreError, match="damaged"):
        records.read_task(store, run, "a", 0)


def test_a_running_run_whose_process_is_gone_is_crashed():
    dead = RunRecord(id="x", flow="f", status=Status.RUNNING, host=socket.gethostname(), pid=2 ** 22 + 12345,
                     heartbeat=now())
    alive = RunRecord(id="y", flow="f", status=Status.RUNNING, host=socket.gethostname(), pid=os.getpid(),
                      heartbeat=now())
    stale = RunRecord(id="z", flow="f", status=Status.RUNNING, host="elsewhere", heartbeat=now(-3600))
    assert dead.effective_status() == Status.CRASHED
    assert alive.effective_status() == Status.RUNNING
    assert stale.effective_status() == Status.CRASHED


def test_one_precedence_for_a_step_of_many_tasks():
    assert combine(["succeeded", "cached", "failed", "running"]) == Status.FAILED
    assert combine(["succeeded", "reused"]) == Status.SUCCEEDED
    assert combine(["succeeded", "damaged", "crashed"]) == Status.DAMAGED
    assert combine([]) == Status.QUEUED


def test_find_run_by_unique_prefix_only(store):
    make_run(store, "20250101T000000-aaaaaa")
    make_run(store, "20250101T000000-aaaabb")
    with pytest.raises(FlowError, match="ambiguous"):
        records.find_run(store, "20250101T000000-aaaa")
    assert records.find_run(store, "20250101T000000-aaaab").id == "20250101T000000-aaaabb"
    with pytest.raises(NotFound):
        records.find_run(store, "2024")
    with pytest.raises(FlowError, match="not a run id"):
        records.find_run(store, "*aaaabb")


def test_list_runs_refuses_unknown_statuses(store):
    with pytest.raises(FlowError, match="unknown status"):
        records.list_runs(store, status="nonsense")


def test_current_user_is_the_hub_user_on_jupyterhub(monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_USER", "hubber")
    assert records.current_user() == "hubber"
    monkeypatch.delenv("JUPYTERHUB_USER")
    assert records.current_user() != "hubber"


def test_writers_refuse_records_with_an_unknown_status(store):
    with pytest.raises(ValueError):
        records.write_task(store, {"run_id": "r", "flow": "f", "step": "a", "status": "exploded"})
