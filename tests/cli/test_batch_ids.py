"""Batch ids take a unique prefix, as run ids do, with or without their leading `batch-`."""
from __future__ import annotations

import json

import pytest
from conftest import SCENARIOS, cli, one_line_error
from hypothesis import given, settings
from hypothesis import strategies as st

from jupyter_flow.errors import FlowError, NotFound
from jupyter_flow.runtime.batches import find_batch
from jupyter_flow.store import layout, open_store

# ids as the batch command makes them: batch-, the UTC time to the millisecond, a random suffix
IDS = st.lists(st.builds("batch-2026{:02d}{:02d}T{:02d}{:02d}{:02d}.{:03d}-{}".format,
                         st.integers(1, 12), st.integers(1, 28), st.integers(0, 23), st.integers(0, 59),
                         st.integers(0, 59), st.integers(0, 999), st.text("0123456789abcdef", min_size=6,
                                                                          max_size=6)),
               min_size=1, max_size=6, unique=True)


@settings(max_examples=60, deadline=None)
@given(ids=IDS, data=st.data())
def test_a_prefix_names_the_one_batch_it_starts_or_says_why_not(tmp_path_factory, ids, data):
    store = open_store(str(tmp_path_factory.mktemp("store")))
    for batch_id in ids:
        store.write_json(layout.batch_json(batch_id), {"id": batch_id, "sets": []})
    chosen = data.draw(st.sampled_from(ids))
    prefix = chosen[:data.draw(st.integers(1, len(chosen)))]
    if prefix.startswith("batch-") and data.draw(st.booleans()):
        prefix = prefix.removeprefix("batch-") or prefix  # the time alone, as a user types it
    starting = [i for i in ids if i.startswith(prefix) or i.startswith("batch-" + prefix)]
    if chosen == prefix or len(starting) == 1:
        assert find_batch(store, prefix) == chosen
    else:
        with pytest.raises(FlowError, match=rf"batch id '{prefix}' is ambiguous \({len(starting)} batches"):
            find_batch(store, prefix)


def test_no_batch_is_one_line_naming_the_store(tmp_path):
    store = open_store(str(tmp_path / "store"))
    with pytest.raises(NotFound, match=r"no batch '2025' in store .*; `jupyter flow runs` shows batch ids"):
        find_batch(store, "2025")
    store.write_json(layout.batch_json("batch-20261207T120000.000-abcdef"), {"id": "x", "sets": []})
    with pytest.raises(NotFound, match="no batch '2025'"):
        find_batch(store, "2025")
    with pytest.raises(FlowError, match="is not a run id"):
        find_batch(store, "../x")


@pytest.mark.slow
def test_runs_and_resume_take_a_batch_id_prefix(store, tmp_path):
    (tmp_path / "grid.yaml").write_text("lr: [0.5]\ndepth: [2]\n")
    blocked = tmp_path / "blocked.txt"
    blocked.write_text("0.5 2")  # the one set fails until the file is emptied
    proc = cli("batch", SCENARIOS / "grid.ipynb", "-f", tmp_path / "grid.yaml", "-p", "blocked_path", blocked,
               "--quiet", check=1)
    batch_id = next(w for w in proc.stderr.split() if w.startswith("batch-")).rstrip(":")
    short = batch_id.removeprefix("batch-")[:15]  # the time to the second, as `runs` shows it

    listed = json.loads(cli("runs", "--batch", short, "--format", "json", check=0).stdout)
    assert [(r["batch"]["id"], r["status"]) for r in listed] == [(batch_id, "failed")]
    assert "no batch '1999'" in one_line_error(cli("runs", "--batch", "1999", check=2))

    blocked.write_text("")
    proc = cli("batch", "--resume", short, "--quiet", check=0)
    assert batch_id in proc.stderr and "1 parameter sets, 1 succeeded" in proc.stderr
    listed = json.loads(cli("runs", "--batch", batch_id[:12], "--format", "json", check=0).stdout)
    assert [r["status"] for r in listed] == ["succeeded", "failed"]  # newest first: the resumed run
    assert f"every run of batch {batch_id} succeeded" in one_line_error(cli("batch", "--resume", short, check=2))
