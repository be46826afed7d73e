"""The REST run list tells which runs belong to a batch, so the sidebar can group them."""
import pytest

from jupyter_flow.runtime.batches import run_batch

pytestmark = pytest.mark.slow


async def test_runs_of_a_batch_carry_its_id(api, root, store):
    batch = run_batch(root / "linear.ipynb", {"start": [1, 2]}, store=store, max_parallel_runs=2)
    code, listed, _ = await api("runs", params={"batch": batch.id})
    assert code == 200
    assert sorted((r["batch"]["id"], r["batch"]["index"], r["parameters"]["start"]) for r in listed["runs"]) == [
        (batch.id, 0, 1), (batch.id, 1, 2)]
    code, everything, _ = await api("runs")
    assert {r["id"]: r["batch"]["id"] for r in everything["runs"]} == {r.id: batch.id for r in batch.runs}
