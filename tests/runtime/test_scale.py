"""The runner's own work per task stays constant as a foreach widens: a 1,000-task foreach makes it
write the run record, list the store and scan its tasks no more often than a 10-task one, and it reads
and writes the store a bounded number of times per task. Kernels are left out (an executor that ends
each task at once), so these are the runner's costs alone, counted, not timed."""
from __future__ import annotations

from collections import Counter
from concurrent.futures import Future

import nbformat
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jupyter_flow.executors.base import Executor
from jupyter_flow.flow.dag import build_flow
from jupyter_flow.flow.params import resolve
from jupyter_flow.runtime.loop import HEARTBEAT_ENV, Runner
from jupyter_flow.store import Store, layout


class CountingStore(Store):
    """The local store, counting what the runner asks of it, by kind of key."""

    def __init__(self, url: str):
        super().__init__(url)
        self.calls: Counter = Counter()

    def _count(self, op: str, key: str) -> None:
        kind = key.rsplit("/", 1)[-1] if key.endswith(".json") else "other"
        self.calls[op, kind if kind in (layout.RUN_RECORD, layout.TASK_RECORD) else "other"] += 1

    def write_bytes(self, key, data):  # write_json's too
        self._count("write", key)
        return super().write_bytes(key, data)

    def write_json_if(self, key, obj, allow):
        self._count("write", key)
        return super().write_json_if(key, obj, allow)

    def read_bytes(self, key):  # read_json's too
        self._count("read", key)
        return super().read_bytes(key)

    def glob(self, pattern):
        self.calls["list", "any"] += 1
        return super().glob(pattern)

    def children(self, key, after=None):
        self.calls["list", "any"] += 1
        return super().children(key, after)

    def exists(self, key):
        self._count("exists", key)
        return super().exists(key)


class InstantExecutor(Executor):
    """Ends every task at once, succeeded, with a made-up value for each name it writes."""

    name = "instant"

    def submit(self, spec, control):
        outputs = {name: {"hash": "0" * 32, "size": 1, "type": "int", "preview": "1"}
                   for name in spec["kernel_spec"]["writes"]}
        future: Future = Future()
        future.set_result({"status": "succeeded", "run_id": spec["run_id"], "flow": spec["flow"], "step": spec["step"],
                           "index": spec["index"], "outputs": outputs, "metrics": {}, "duration": 0.0,
                           "cache_key": spec["cache_key"], "error": None})
        return future


def foreach_notebook(folder, width: int):
    cell = nbformat.v4.new_code_cell
    nb = nbformat.v4.new_notebook(cells=[
        cell(f"items = {list(range(width))!r}", metadata={"tags": ["parameters"]}),
        cell("y = item * item", metadata={"tags": ["step:work", "foreach:items"]}),
        cell("total = sum(y)", metadata={"tags": ["step:join"]}),
    ], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    path = folder / f"foreach{width}.ipynb"
    nbformat.write(nb, path)
    return path


def run_counted(folder, width: int, no_cache: bool) -> tuple[str, Counter, int]:
    path = foreach_notebook(folder, width)
    store = CountingStore(str(folder / f"store{width}-{no_cache}"))
    flow = build_flow(path)
    events: Counter = Counter()
    runner = Runner(flow, resolve(flow), store, InstantExecutor(), no_cache=no_cache,
                    on_event=lambda e: events.update([e["type"]]))
    status = runner.run()
    return status, store.calls, events["task"]


@pytest.mark.parametrize("no_cache", [True, pytest.param(False, marks=pytest.mark.slow)], ids=["no-cache", "cache"])
def test_a_wide_foreach_costs_the_runner_the_same_per_task(tmp_path, monkeypatch, no_cache):
    monkeypatch.setenv(HEARTBEAT_ENV, "3600")  # no heartbeat write however long the machine takes
    status, narrow, _ = run_counted(tmp_path, 10, no_cache)
    assert status == "succeeded"
    status, wide, task_events = run_counted(tmp_path, 1000, no_cache)
    assert status == "succeeded"
    assert task_events == 2 * 1001  # running and ended, for each task of `work` and `join`
    # run.json: begin, end, and nothing per task; listings: none per task
    assert wide["write", layout.RUN_RECORD] == narrow["write", layout.RUN_RECORD] == 2
    assert wide["list", "any"] == narrow["list", "any"]
    # what grows, grows linearly: per task, a bounded number of reads, writes and checks
    for op in ("read", "write", "exists"):
        for kind in (layout.TASK_RECORD, "other"):
            per_task = (wide[op, kind] - narrow[op, kind]) / (1000 - 10)
            assert per_task <= 3, (op, kind, dict(wide), dict(narrow))


@settings(max_examples=5, deadline=None)
@given(width=st.integers(1, 60))
def test_every_task_of_a_foreach_ends_and_is_reported_once(tmp_path_factory, width):
    status, _, task_events = run_counted(tmp_path_factory.mktemp("scale"), width, True)
    assert status == "succeeded"
    assert task_events == 2 * (width + 1)
