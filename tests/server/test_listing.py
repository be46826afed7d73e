"""The sidebar's run listing (GET runs) reads the run index (and its summary) once it exists, and shows the same."""
import sys
from pathlib import Path

from jupyter_flow.store import layout, open_store

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "store"))
from store.test_run_index import write_mixed_runs


async def test_listing_is_the_same_from_the_index_as_from_the_run_records(api, store):
    s = open_store(store)
    write_mixed_runs(s)
    queries = [{"flow": "f", "limit": "50"}, {"flow": "g", "user": "bob", "limit": "5"}, {},
               {"user": "bob", "status": "failed", "limit": "3", "offset": "2"}, {"status": "cancelled"}]
    for query in queries:
        for key in s.glob(layout.index_chunks()) + s.glob(layout.index_summaries()):
            s.delete(key)
        code, first, _ = await api("runs", params=query)
        assert code == 200 and first["runs"], query
        assert s.glob(layout.index_chunks()), "the first listing wrote the index"
        code, again, _ = await api("runs", params=query)
        assert code == 200 and again == first, query
    runs = (await api("runs"))[1]["runs"]
    assert {r["status"] for r in runs} == {"succeeded", "failed", "cancelled", "running", "damaged"}
    assert [r["id"] for r in runs] == sorted((r["id"] for r in runs), reverse=True)
