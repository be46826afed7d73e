"""Pinning a run through the REST API (the sidebar's Pin button), and the history's filters and pages."""
import sys
from pathlib import Path

from jupyter_flow.readers import client
from jupyter_flow.store import open_store, records

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "store"))
from store.test_run_index import record, write_mixed_runs


async def test_pin_and_unpin_a_run(api, store):
    s = open_store(store)
    records.write_run(s, record(1, "failed", 0))
    run_id = record(1, "failed", 0)["id"]

    code, pin, _ = await api(f"runs/{run_id}/pin", "POST", {"note": "figure 3"})
    assert code == 200 and pin["run_id"] == run_id and pin["note"] == "figure 3" and pin["by"]
    assert client.list_runs(s, user=None)[0]["pinned"]["note"] == "figure 3"  # what gc reads
    code, run, _ = await api(f"runs/{run_id}")
    assert run["pinned"]["note"] == "figure 3"
    code, listed, _ = await api("runs")
    assert [r["pinned"]["note"] for r in listed["runs"] if r["id"] == run_id] == ["figure 3"]

    code, old, _ = await api(f"runs/{run_id}/pin", "DELETE")
    assert code == 200 and old["note"] == "figure 3"
    assert (await api(f"runs/{run_id}"))[1]["pinned"] is None
    code, error, _ = await api(f"runs/{run_id}/pin", "DELETE")
    assert code == 404 and "is not pinned" in error["message"]


async def test_bad_pin_requests_are_4xx_json(api, store):
    s = open_store(store)
    records.write_run(s, record(1, "failed", 0))
    run_id = record(1, "failed", 0)["id"]
    for route, method, body, status, says in [
        (f"runs/{run_id}/pin", "POST", {"note": 5}, 400, "'note' must be a str"),
        (f"runs/{run_id}/pin", "POST", "[1]", 400, "must be a JSON object"),
        (f"runs/{run_id}/pin", "POST", "{", 400, "UTF-8 encoded JSON"),
        ("runs/20990101T000000-nope/pin", "POST", {}, 404, "no run"),
        ("runs/20990101T000000-nope/pin", "DELETE", None, 404, "no run"),
        ("runs/..%2Fx/pin", "POST", {}, 404, "no such jupyter-flow API route"),
    ]:
        code, error, _ = await api(route, method, body)
        assert code == status and says in error["message"], (route, method, body, code, error)
    assert records.pins(s) == {}


async def test_the_history_is_filtered_by_user_and_status_and_paged(api, store):
    s = open_store(store)
    write_mixed_runs(s)
    everything = client.list_runs(s, user=None)
    for query in ({}, {"user": "bob"}, {"status": "succeeded"}, {"flow": "f", "user": "bob", "status": "failed"}):
        truth = [r["id"] for r in client.list_runs(s, user=query.get("user"), flow=query.get("flow"),
                                                    status=query.get("status"))]
        pages, offset = [], 0
        while True:
            code, page, _ = await api("runs", params={**query, "limit": "4", "offset": str(offset)})
            assert code == 200, page
            pages += [r["id"] for r in page["runs"]]
            offset += 4
            if not page["more"]:
                break
        assert pages == truth and truth, query
    assert len(everything) > 8
    code, error, _ = await api("runs", params={"offset": "-1"})
    assert code == 400 and "'offset' must be a whole number >= 0" in error["message"]
    code, error, _ = await api("runs", params={"status": "sleeping"})
    assert code == 400 and "unknown status" in error["message"]
