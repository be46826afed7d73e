"""The key layout: built and parsed in one place."""
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jupyter_flow.errors import FlowError
from jupyter_flow.store import layout

flows = st.from_regex(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,20}", fullmatch=True)
run_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,30}", fullmatch=True)
steps = st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True)


@given(flows, run_ids, steps, st.integers(0, 10_000))
def test_keys_parse_back_to_what_built_them(flow, run_id, step, index):
    assert layout.parse_run_json(layout.run_json(flow, run_id)) == (flow, run_id)
    assert layout.parse_task_json(layout.task_json(flow, run_id, step, index)) == (flow, run_id, step, index)


def test_blob_keys():
    digest = "0123456789abcdef0123456789abcdef"
    assert layout.blob(digest) == f"blobs/01/{digest}"
    assert layout.parse_blob(layout.blob(digest)) == digest
    assert layout.parse_blob("blobs/tmp/blob-abc") is None


@pytest.mark.parametrize("name", [".", "..", "", "a/b", "x y"])
def test_bad_flow_names_are_refused(name):
    with pytest.raises(FlowError, match="flow name"):
        layout.check_flow_name(name)


@pytest.mark.parametrize("run_id", ["*444b81", "?", "a/b", "../x", "", "[ab]"])
def test_globs_and_paths_are_not_run_ids(run_id):
    with pytest.raises(FlowError, match="not a run id"):
        layout.check_run_id(run_id)
