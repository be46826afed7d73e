"""Fast units for cache and reuse (runtime/reuse.py), without a kernel or papermill: flows built from small
notebooks, a real local store in the test's folder, and earlier tasks' records written through
store.records as a run writes them. What a user notices: the same step with the same inputs is reused,
anything it depended on that changed makes it run again, and the reason says what changed."""
from __future__ import annotations

import os
from pathlib import Path

import nbformat  # noqa: F401 - imported once at collection: its first import (jsonschema) takes seconds
import pytest
from conftest import tagged_notebook

from jupyter_flow.execution.files import fingerprint
from jupyter_flow.flow.dag import build_flow
from jupyter_flow.runtime import reuse
from jupyter_flow.runtime.reuse import Cache, cache_key, cache_parts
from jupyter_flow.store import layout, open_store, records
from jupyter_flow.store.status import Status

FIRST, SECOND = "20261207T100000.000-aaaa", "20261207T110000.000-bbbb"  # sorted as they ran

READER = [
    (["parameters"], "lr = 0.1"),
    (["step:load"], "text = open('data.txt').read()"),
    (["step:count"], "n = len(text)\nm = n * 2"),
    (["step:other"], "z = lr * 2"),
]


@pytest.fixture
def folder(tmp_path) -> Path:
    """The notebook's folder, with the file its `load` step reads."""
    here = tmp_path / "nb"
    here.mkdir()
    (here / "data.txt").write_text("hello")
    return here


@pytest.fixture
def local_store(tmp_path):
    return open_store(tmp_path / "store")


def flow_of(folder: Path, cells=READER):
    return build_flow(tagged_notebook(folder, cells))


READ_NOTHING = {"read": {}, "written": {}}


def record_task(store, flow, run_id: str, step: str, parts: dict, *, index: int = 0, status: str = "succeeded",
                files: dict | None = READ_NOTHING, outputs: dict | None = None, cached: bool = True, **more) -> dict:
    """Write the task record an earlier run would have written (and its cache entry, as the runtime does
    for a succeeded task, unless `cached` is False: e.g. gc removed it since)."""
    key = cache_key(parts)
    record = {"run_id": run_id, "flow": flow.name, "step": step, "index": index, "status": status, "attempt": 1,
              "cache_key": key, "cache_parts": parts, "outputs": outputs or {},
              "files": files, **more}
    assert records.write_task(store, record)
    if cached:
        reuse.remember(store, flow.name, run_id, step, index, key)
    return record


def decide(store, flow, folder: Path, step: str, refs: dict | None = None, parameters: dict | None = None,
           run_id: str = SECOND, **options) -> reuse.Decision:
    parts = cache_parts(flow, parameters or {}, step, 0, refs or {})
    return Cache(store, flow, run_id, str(folder), **options).decide(step, 0, parts, cache_key(parts))


def decide_after_editing_count(folder: Path, store, source: str) -> reuse.Decision:
    """Run 1 finished step count; then its cell says `source`: what does run 2 decide?"""
    flow = flow_of(folder)
    record_task(store, flow, FIRST, "count", cache_parts(flow, {}, "count", 0, {"text": "h1"}))
    edited = list(READER)
    edited[2] = (["step:count"], source)
    return decide(store, flow_of(folder, edited), folder, "count", {"text": "h1"})


def read_files(folder: Path, *names: str) -> dict:
    return {"read": {name: fingerprint(str(folder / name)) for name in names}, "written": {}}


# -- the key ---------------------------------------------------------------------------------------
def test_the_same_step_and_inputs_give_the_same_key(folder):
    flow = flow_of(folder)
    one = cache_parts(flow, {"lr": 0.2}, "count", 0, {"text": "h1"})
    two = cache_parts(flow_of(folder), {"lr": 0.2}, "count", 0, {"text": "h1"})
    assert one == two and cache_key(one) == cache_key(two)
    assert len(cache_key(one)) == 32


def test_the_parts_say_what_the_key_is_made_of(folder):
    parts = cache_parts(flow_of(folder), {}, "other", 0, {})
    assert parts["cells"] == [{"cell": 4, "shared": False, "code": "z = lr * 2"}]
    assert parts["params"] == {"lr": {"default": "0.1"}}  # the default as written: editing it changes the key
    assert parts["kernel"] == "python3" and parts["foreach"] is None and parts["inputs"] == {}
    assert "pip" not in parts
    assert cache_parts(flow_of(folder), {}, "other", 0, {}, packages=["six==1.16.0"])["pip"] == ["six==1.16.0"]


@pytest.mark.parametrize("change", ["cell", "parameter", "default", "input"])
def test_a_changed_cell_parameter_or_input_changes_the_key(folder, change):
    step = "other" if change in ("parameter", "default") else "count"  # `other` reads lr, `count` reads text
    base = cache_key(cache_parts(flow_of(folder), {}, step, 0, {"text": "h1"} if step == "count" else {}))
    cells, params, refs = list(READER), {}, {"text": "h1"} if step == "count" else {}
    if change == "cell":
        cells[2] = (["step:count"], "n = len(text)\nm = n * 3")
    elif change == "parameter":
        params = {"lr": 0.3}
    elif change == "default":
        cells[0] = (["parameters"], "lr = 0.5")
    elif change == "input":
        refs = {"text": "h2"}
    assert cache_key(cache_parts(flow_of(folder, cells), params, step, 0, refs)) != base


def test_a_parameter_given_its_default_value_keeps_the_key(folder):
    """`-p lr 0.1` where the cell says `lr = 0.1` is the default: nothing reruns for it; 0.1 given as
    another type (the string '0.1') is another value."""
    base = cache_key(cache_parts(flow_of(folder), {}, "other", 0, {}))
    assert cache_key(cache_parts(flow_of(folder), {"lr": 0.1}, "other", 0, {})) == base
    assert cache_key(cache_parts(flow_of(folder), {"lr": "0.1"}, "other", 0, {})) != base


def test_a_parameter_or_input_a_step_does_not_read_leaves_its_key(folder):
    base = cache_key(cache_parts(flow_of(folder), {}, "count", 0, {"text": "h1"}))
    assert cache_key(cache_parts(flow_of(folder), {"lr": 0.3}, "count", 0, {"text": "h1"})) == base
    edited = [(["parameters"], "lr = 0.5"), *READER[1:]]
    assert cache_key(cache_parts(flow_of(folder, edited), {}, "count", 0, {"text": "h1"})) == base


def test_comments_and_formatting_do_not_change_the_key_but_code_does(folder):
    base = cache_key(cache_parts(flow_of(folder), {}, "count", 0, {"text": "h1"}))
    cosmetic = list(READER)
    cosmetic[2] = (["step:count"], "# count it\nn = len( text )  # a comment\n\nm = n*2\n")
    assert cache_key(cache_parts(flow_of(folder, cosmetic), {}, "count", 0, {"text": "h1"})) == base
    quoted = list(READER)
    quoted[1] = (["step:load"], 'text = open("data.txt").read()')  # the same code: quotes are formatting
    assert cache_key(cache_parts(flow_of(folder, quoted), {}, "load", 0, {})) == cache_key(
        cache_parts(flow_of(folder), {}, "load", 0, {}))
    string = list(READER)
    string[1] = (["step:load"], "text = open('data.txt ').read()")  # inside a string: not formatting
    assert cache_key(cache_parts(flow_of(folder, string), {}, "load", 0, {})) != cache_key(
        cache_parts(flow_of(folder), {}, "load", 0, {}))


def test_moving_a_step_keeps_its_key(folder):
    before = cache_key(cache_parts(flow_of(folder), {}, "other", 0, {}))
    moved = [READER[0], (["step:first"], "q = 1"), *READER[1:]]  # `other` is now cell 5, not 4
    parts = cache_parts(flow_of(folder, moved), {}, "other", 0, {})
    assert parts["cells"][0]["cell"] == 5
    assert cache_key(parts) == before


# -- Cache.decide: reuse ------------------------------------------------------------------------------
def test_a_finished_task_with_the_same_key_is_reused(folder, local_store):
    flow = flow_of(folder)
    digest, _ = local_store.save_value("hello")
    parts = cache_parts(flow, {}, "load", 0, {})
    record_task(local_store, flow, FIRST, "load", parts, files=read_files(folder, "data.txt"),
                outputs={"text": {"hash": digest}})
    decision = decide(local_store, flow, folder, "load")
    assert decision.old is not None and decision.old["run_id"] == FIRST
    assert decision.status == Status.CACHED
    assert decision.origin == FIRST
    assert decision.reason == f"reused from run {FIRST} (nothing it depends on changed)"


def test_a_cosmetic_edit_is_still_reused(folder, local_store):
    decision = decide_after_editing_count(folder, local_store, "n = len(text)  # a comment changes nothing\nm = n * 2")
    assert decision.old is not None, decision.reason


def test_reusing_restores_the_files_it_wrote_and_records_where_it_came_from(folder, local_store, tmp_path):
    flow = flow_of(folder)
    (tmp_path / "out.txt").write_text("fresh")
    digest, size = local_store.save_file(str(tmp_path / "out.txt"))
    parts = cache_parts(flow, {}, "other", 0, {})
    record_task(local_store, flow, FIRST, "other", parts,
                files={"read": {}, "written": {"out.txt": {"hash": digest, "size": size}}})
    cache = Cache(local_store, flow, SECOND, str(folder))
    decision = cache.decide("other", 0, parts, cache_key(parts))
    assert decision.old is not None, decision.reason
    record = cache.take(SECOND, "other", 0, decision, parts, cache_key(parts))
    assert (folder / "out.txt").read_text() == "fresh"
    assert record["status"] == Status.CACHED and record["origin"]["run_id"] == FIRST
    stored = local_store.read_json(layout.task_json(flow.name, SECOND, "other", 0))
    assert stored["status"] == "cached" and stored["reason"] == decision.reason


# -- Cache.decide: why it runs -------------------------------------------------------------------------
def test_a_changed_file_it_read_reruns_it_naming_the_file(folder, local_store):
    flow = flow_of(folder)
    parts = cache_parts(flow, {}, "load", 0, {})
    record_task(local_store, flow, FIRST, "load", parts, files=read_files(folder, "data.txt"))
    (folder / "data.txt").write_text("hello world")
    decision = decide(local_store, flow, folder, "load")
    assert decision.old is None
    assert decision.reason == "file data.txt changed (5 -> 11 bytes)"


def test_a_same_size_edit_of_a_file_it_read_reruns_it(folder, local_store):
    flow = flow_of(folder)
    parts = cache_parts(flow, {}, "load", 0, {})
    record_task(local_store, flow, FIRST, "load", parts, files=read_files(folder, "data.txt"))
    was = os.stat(folder / "data.txt").st_mtime
    (folder / "data.txt").write_text("HELLO")
    os.utime(folder / "data.txt", (was + 10, was + 10))  # a later save: the hash decides
    assert decide(local_store, flow, folder, "load").reason == "file data.txt changed (5 -> 5 bytes)"


def test_a_file_it_read_that_is_gone_reruns_it(folder, local_store):
    flow = flow_of(folder)
    parts = cache_parts(flow, {}, "load", 0, {})
    record_task(local_store, flow, FIRST, "load", parts, files=read_files(folder, "data.txt"))
    (folder / "data.txt").unlink()
    assert decide(local_store, flow, folder, "load").reason == "file data.txt is gone"


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_a_missing_or_damaged_blob_reruns_it(folder, local_store, damage):
    flow = flow_of(folder)
    if damage == "missing":
        digest = "0" * 32
    else:
        digest, _ = local_store.save_value("hello")
        local_store.write_bytes(layout.blob(digest), b"not what was stored")
    parts = cache_parts(flow, {}, "load", 0, {})
    record_task(local_store, flow, FIRST, "load", parts, files=read_files(folder, "data.txt"),
                outputs={"text": {"hash": digest}})
    decision = decide(local_store, flow, folder, "load")
    assert decision.old is None
    assert decision.reason == f"a value or file it stored in run {FIRST} is gone or damaged; it runs again to store it"


@pytest.mark.parametrize("trusted", [False, True])
def test_a_step_that_touched_the_network_reruns_unless_tagged_cache_trust(folder, local_store, trusted):
    cells = [(["step:fetch", *(["cache:trust"] if trusted else [])], "import urllib.request\ngot = 1")]
    flow = flow_of(folder, cells)
    parts = cache_parts(flow, {}, "fetch", 0, {})
    record_task(local_store, flow, FIRST, "fetch", parts, files={"read": {}, "written": {}, "network": ["example:80"]})
    decision = decide(local_store, flow, folder, "fetch")
    if trusted:
        assert decision.old is not None, decision.reason
    else:
        assert decision.old is None
        assert decision.reason == "touched the network (tag cache:trust to reuse)"


def test_a_changed_package_version_reruns_it(folder, local_store):
    from importlib import metadata

    flow = flow_of(folder)
    parts = cache_parts(flow, {}, "other", 0, {})
    record_task(local_store, flow, FIRST, "other", parts, packages={"pytest": "0.0.1"})
    decision = decide(local_store, flow, folder, "other")
    assert decision.reason == f"package pytest 0.0.1 -> {metadata.version('pytest')}"
    record_task(local_store, flow, FIRST, "other", parts, attempt=2, packages={"no-such-dist-here": "1.0"})
    assert decide(local_store, flow, folder, "other").reason == "package no-such-dist-here 1.0 -> not installed"


def test_a_record_that_does_not_say_which_files_it_read_runs_once(folder, local_store):
    flow = flow_of(folder)
    parts = cache_parts(flow, {}, "other", 0, {})
    record = record_task(local_store, flow, FIRST, "other", parts)
    record.pop("files")  # as an older jupyter_flow wrote it
    local_store.write_json(layout.task_json(flow.name, FIRST, "other", 0), record)
    assert decide(local_store, flow, folder, "other").reason.endswith("(an older jupyter_flow); it runs once")


# -- what changed ----------------------------------------------------------------------------------
def test_the_first_run_says_there_is_no_earlier_run(folder, local_store):
    assert decide(local_store, flow_of(folder), folder, "load").reason == "no earlier run"


def test_an_edited_cell_is_named_with_its_changed_line(folder, local_store):
    decision = decide_after_editing_count(folder, local_store, "n = len(text)  # a comment changes nothing\nm = n * 3")
    assert decision.old is None
    assert decision.reason == "code changed: cell 3, line 2 `m = n * 3`"


def test_a_changed_parameter_is_named_with_both_values(folder, local_store):
    flow = flow_of(folder)
    record_task(local_store, flow, FIRST, "other", cache_parts(flow, {"lr": 0.2}, "other", 0, {}))
    assert decide(local_store, flow, folder, "other", parameters={"lr": 0.3}).reason == \
        "parameter `lr` changed (0.2 -> 0.3)"
    assert decide(local_store, flow, folder, "other").reason == "parameter `lr` changed (0.2 -> default 0.1)"


def test_a_changed_input_names_the_step_it_came_from(folder, local_store):
    flow = flow_of(folder)
    record_task(local_store, flow, FIRST, "count", cache_parts(flow, {}, "count", 0, {"text": "h1"}))
    decision = decide(local_store, flow, folder, "count", {"text": "h2"})
    assert decision.reason == "input `text` changed (from step load)"


def test_the_latest_earlier_run_is_the_one_compared(folder, local_store):
    flow = flow_of(folder)
    record_task(local_store, flow, FIRST, "other", cache_parts(flow, {"lr": 0.2}, "other", 0, {}))
    record_task(local_store, flow, SECOND, "other", cache_parts(flow, {"lr": 0.3}, "other", 0, {}))
    decision = decide(local_store, flow, folder, "other", parameters={"lr": 0.4}, run_id="20261207T120000.000-cccc")
    assert decision.reason == "parameter `lr` changed (0.3 -> 0.4)"


def test_a_failed_earlier_task_is_not_reused_and_says_so(folder, local_store):
    flow = flow_of(folder)
    record_task(local_store, flow, FIRST, "other", cache_parts(flow, {}, "other", 0, {}), status="failed",
                cached=False)
    decision = decide(local_store, flow, folder, "other")
    assert decision.old is None
    assert decision.reason == f"it did not succeed in run {FIRST} (failed)"


def test_a_result_gone_from_the_cache_index_says_so(folder, local_store):
    flow = flow_of(folder)
    record_task(local_store, flow, FIRST, "other", cache_parts(flow, {}, "other", 0, {}), cached=False)
    decision = decide(local_store, flow, folder, "other")
    assert decision.old is None
    assert decision.reason == f"no stored result of it (run {FIRST}'s is no longer in the cache)"


def test_no_cache_runs_every_step(folder, local_store):
    flow = flow_of(folder)
    record_task(local_store, flow, FIRST, "other", cache_parts(flow, {}, "other", 0, {}))
    assert decide(local_store, flow, folder, "other", no_cache=True).reason == "--no-cache"
    disabled = flow_of(folder, [*READER[:3], (["step:other", "cache:disabled"], READER[3][1])])
    assert decide(local_store, disabled, folder, "other").reason == "cache:disabled"


def test_a_resumed_run_reuses_the_resumed_runs_task_and_reruns_from_the_step_asked(folder, local_store):
    flow = flow_of(folder)
    record_task(local_store, flow, FIRST, "load", cache_parts(flow, {}, "load", 0, {}),
                files=read_files(folder, "data.txt"), cached=False)  # not in the cache: only the resumed run has it
    resumed = decide(local_store, flow, folder, "load", origin={"id": FIRST})
    assert resumed.status == Status.REUSED and resumed.origin == FIRST
    again = decide(local_store, flow, folder, "count", {"text": "h1"}, origin={"id": FIRST}, from_step="count")
    assert again.old is None and again.reason == "rerun from step count (resume)"


def test_diff_says_nothing_for_the_same_parts_and_the_first_difference_otherwise(folder):
    flow = flow_of(folder)
    parts = cache_parts(flow, {}, "count", 0, {"text": "h1"})
    assert reuse.diff(flow, "count", parts, parts) is None
    assert reuse.diff(flow, "count", dict(parts, version="0.0.0"), parts) == f"jupyter_flow 0.0.0 -> {parts['version']}"
    assert reuse.diff(flow, "count", dict(parts, kernel="python2"), parts) == "kernel python2 -> python3"
    removed = dict(parts, cells=[{"cell": 9, "shared": False, "code": "x = 1"}, *parts["cells"]])
    assert reuse.diff(flow, "count", removed, parts) == "code changed: a cell was removed (cell 9 of that run, `x = 1`)"
    assert reuse.diff(flow, "count", dict(parts, cells=[]), parts) == "code changed: cell 3 is new (`n = len(text)`)"
