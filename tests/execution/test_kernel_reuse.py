"""A kernel that serves several tasks of a contained step (flow/containment.py, KernelPool.recycle) is, to the
next task and to the user, a fresh kernel: the same namespace and execution count, the same records and
executed notebooks, failures snapshot and load as before, and a runner killed with -9 mid-foreach loses nothing.
"""
import glob
import json
import os
import subprocess
import time

import pytest
from conftest import cli, tagged_notebook
from jupyter_core.utils import run_sync
from support.services import kill_tree

from jupyter_flow.execution import kernel_pool
from jupyter_flow.readers.client import task_artifacts
from jupyter_flow.readers.into_kernel import load
from jupyter_flow.store import open_store, records
from jupyter_flow.store.fsck import check

pytestmark = pytest.mark.slow

PROBE = "print(sorted((k, type(v).__name__, v if isinstance(v, str) else '') for k, v in globals().items()))"


def _run(km, code: str) -> tuple[int, list]:
    """Execute `code` through the kernel's own client as nbclient does (stored in history); its execution
    count and what it sent (a second client would share the first's identity, and take its replies)."""
    out = []
    reply = run_sync(km.ready_client.execute_interactive)(code, timeout=60, output_hook=lambda m: out.append(
        (m["msg_type"], m["content"].get("execution_count"), m["content"].get("text"),
         (m["content"].get("data") or {}).get("text/plain"))))
    return reply["content"]["execution_count"], [o for o in out if o[0] != "status"]


def test_a_reset_kernel_has_a_fresh_kernels_namespace_and_count(tmp_path):
    store = str(tmp_path / "store")
    pool = kernel_pool.KernelPool(warmup=kernel_pool.warmup_code(store))
    fresh, used = (kernel_pool.start_kernel("python3", str(tmp_path), warmup=pool.warmup) for _ in range(2))
    try:
        _run(used, "a = [1, 2]\na.append(3)\nprint(a)")
        _run(used, "a")  # an Out entry and `_`
        assert pool.recycle(used, ("key",), store)
        assert pool.acquire("python3", str(tmp_path), reuse=("key",)) is used
        seen = []
        for km in (fresh, used):
            seen.append([_run(km, PROBE), _run(km, "b = 1\nb")])
        assert seen[0] == seen[1]
        assert seen[0][0][0] == 1 and seen[0][1][0] == 2  # execution counts from 1
    finally:
        for km in (fresh, used):
            kernel_pool.kill_kernel(km)
        pool.close()


def _flow(folder, width: int, code: str):
    return tagged_notebook(folder, [(["step:start"], f"items = list(range({width}))"),
                                    (["step:work", "foreach:items"], code),
                                    (["step:join"], "total = sum(y)")])


def test_a_run_on_reused_kernels_looks_the_same_to_the_user(tmp_path, store):
    """Tasks 0-3 share a kernel; task 3 fails (its snapshot taken in that kernel, which is then killed), and
    tasks 4-5 share a new one. Every record, notebook, `show` and the failure's loading are as with fresh kernels."""
    path = _flow(tmp_path, 6, "x = item + 1\ny = 12 // (item - 3)\nprint(x, y)")
    proc = cli("run", path, "--no-cache", "--max-workers", "1", "--quiet", "--store", store, cwd=tmp_path, check=1)
    run = records.list_runs(open_store(store), limit=1)[0]
    tasks = sorted((t for t in records.list_tasks(open_store(store), run) if t.step == "work"), key=lambda t: t.index)
    assert [t.status for t in tasks] == ["succeeded"] * 3 + ["failed"] + ["succeeded"] * 2, proc.stderr
    pids = [t.kernel_pid for t in tasks]
    assert len(set(pids[:4])) == 1 and pids[4] == pids[5] != pids[3], pids
    for task in tasks:
        nb = json.load(open(os.path.join(store, task.notebook)))
        counts = [c["execution_count"] for c in nb["cells"] if c.get("execution_count") is not None]
        assert counts == list(range(1, len(counts) + 1)), (task.index, counts)
        printed = "".join("".join(o["text"]) for c in nb["cells"] for o in c.get("outputs", [])
                          if o["output_type"] == "stream")
        if task.status == "succeeded":
            assert printed == f"{task.index + 1} {12 // (task.index - 3)}\n"
    assert tasks[3].error["type"] == "ZeroDivisionError"
    assert set(task_artifacts(store, run.id, "work", 3)["failure"]["variables"]) >= {"item", "x"}
    assert load(run.id, "work", store=store, index=3, quiet=True, into={})["x"] == 4
    shown = cli("show", run.id, "--step", "work", "--index", "3", "--store", store, check=0)
    assert "ZeroDivisionError" in shown.stdout
    assert open_store(store).load_value(tasks[5].outputs["y"]["hash"]) == 12 // 2


def test_a_step_that_is_not_contained_gets_a_fresh_kernel_per_task(tmp_path, store, monkeypatch, run_flow):
    path = _flow(tmp_path, 4, "import math\ny = math.floor(item)")
    run = run_flow(path, max_workers=1, no_cache=True)
    assert len({t.record["kernel_pid"] for t in run.tasks if t.step == "work"}) == 4
    monkeypatch.setenv("JUPYTER_FLOW_REUSE_KERNELS", "0")  # turned off: the same for a contained step
    run = run_flow(_flow(tmp_path, 4, "y = item * item"), max_workers=1, no_cache=True)
    assert len({t.record["kernel_pid"] for t in run.tasks if t.step == "work"}) == 4


def _succeeded(store: str) -> int:
    done = 0
    for path in glob.glob(os.path.join(store, "flows", "*", "runs", "*", "work", "*", "task.json")):
        try:
            done += json.load(open(path))["status"] == "succeeded"
        except (OSError, ValueError):
            pass
    return done


def test_kill_9_of_the_runner_mid_foreach_on_reused_kernels_loses_nothing(tmp_path, store):
    width = 150
    path = _flow(tmp_path, width, "y = item * item")
    proc = subprocess.Popen(["jupyter", "flow", "run", str(path), "--no-cache", "--quiet", "--max-workers", "2",
                             "--store", store], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while _succeeded(store) < 20 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before it was killed"
    finally:
        kill_tree(proc)
    opened = open_store(store)
    report = check(opened, dry_run=True)
    assert report["corrupt"] == [] and report["damaged"] == []
    run = records.list_runs(opened, limit=1)[0]
    tasks = [t for t in records.list_tasks(opened, run) if t.step == "work"]
    done = [t for t in tasks if t.status == "succeeded"]
    assert len(done) >= 20 and len({t.kernel_pid for t in done}) < len(done)  # kernels served several tasks
    for task in done:
        assert opened.load_value(task.outputs["y"]["hash"]) == task.index ** 2
    resumed = cli("resume", run.id, "--quiet", "--store", store, cwd=tmp_path, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    final = records.list_runs(opened, limit=1)[0]
    assert final.status == "succeeded"
    join = records.read_task(opened, final, "join")
    assert opened.load_value(join.outputs["total"]["hash"]) == sum(i * i for i in range(width))
