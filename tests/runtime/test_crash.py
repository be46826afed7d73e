"""Kill the runner, a kernel or a blob write at moments hypothesis chooses, with a `gc` running at the
same time, over at least 50 runs. After every kill: no corrupt blob, no damaged record, every run
in a final state, every value a kept run references still stored, and `resume` completes the run.
"""
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import SCENARIOS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.services import kill_tree

from jupyter_flow.store import open_store, records
from jupyter_flow.store.fsck import check
from jupyter_flow.store.gc import collect

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]
FINAL = {"succeeded", "failed", "crashed"}
FIGURES: dict = {"runs": 0, "killed": 0, "interrupted": 0, "resumed": 0, "corrupt": 0, "lost": 0,
                 "gc_deleted_blobs": 0}


STEPS = ["make", "measure", "pause", "tail"]


def start_run(store: str, size: int) -> subprocess.Popen:
    return subprocess.Popen(["jupyter", "flow", "run", str(SCENARIOS / "crash.ipynb"), "-p", "size", str(size),
                             "--no-cache", "--quiet", "--store", store],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def wait_for(predicate, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return False


def running_kernel(store, step: str) -> int | None:
    """The kernel pid of `step` while it runs in the current run."""
    for run in records.list_runs(store, status="running"):
        for task in records.list_tasks(store, run):
            if task.step == step and task.status == "running" and task.kernel_pid:
                return task.kernel_pid
    return None


def temp_blobs(store_dir: str) -> set:
    tmp = Path(store_dir, "blobs", "tmp")
    return set(tmp.iterdir()) if tmp.exists() else set()


def age_blobs(store_dir: str) -> None:
    """Make every blob two hours old: the values a new run produces again are then gc's candidates."""
    old = time.time() - 7200
    for path in Path(store_dir, "blobs").glob("??/*"):
        os.utime(path, (old, old))


@pytest.fixture(scope="module")
def crash_store(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("crash") / "store")
    yield path
    print("\ncrash test figures:", FIGURES)


@settings(max_examples=int(os.environ.get("CRASH_EXAMPLES", "50")), deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(target=st.sampled_from(["runner", "kernel", "blob"]), step=st.sampled_from(STEPS), delay=st.floats(0, 0.9),
       gc_delay=st.floats(0, 3), size=st.sampled_from([10_000_000, 20_000_000, 40_000_000]))
def test_kills_at_random_points_lose_nothing(crash_store, target, step, delay, gc_delay, size):
    """Kill `target` `delay` s after `step` starts (or, for "blob", while a blob is being written)."""
    store = open_store(crash_store)
    age_blobs(crash_store)
    leftovers = temp_blobs(crash_store)  # partial files of earlier kills (gc removes them after an hour)
    proc = start_run(crash_store, size)
    FIGURES["runs"] += 1
    FIGURES[target] = FIGURES.get(target, 0) + 1
    gc_report = {}
    gc = threading.Timer(gc_delay, lambda: gc_report.update(collect(store, keep=2)))
    gc.start()
    try:
        if target == "blob":
            wait_for(lambda: temp_blobs(crash_store) - leftovers or proc.poll() is not None)
        else:
            wait_for(lambda: running_kernel(store, step) is not None or proc.poll() is not None)
            time.sleep(delay)
        if target == "kernel":
            pid = running_kernel(store, step)
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                    FIGURES["killed"] += 1
                except ProcessLookupError:
                    pass
            proc.wait(180)
        elif proc.poll() is None:
            FIGURES["killed"] += 1
            kill_tree(proc)
    finally:
        if proc.poll() is None:
            kill_tree(proc)
        gc.join()
    FIGURES["gc_deleted_blobs"] += len(gc_report.get("blobs", []))

    report = check(store, dry_run=True)
    FIGURES["corrupt"] += len(report["corrupt"])
    assert report["corrupt"] == [] and report["damaged"] == []
    runs = records.list_runs(store)
    assert wait_for(lambda: all(r.status in FINAL for r in records.list_runs(store)), 60), \
        [(r.id, r.status) for r in records.list_runs(store)]
    for run in runs:
        for task in records.list_tasks(store, run):
            missing = [h for h in task.blob_refs() if not store.has_blob(h)]
            FIGURES["lost"] += len(missing)
            assert not missing, (run.id, task.step, missing)

    if not runs:
        return  # killed before the run was recorded: nothing to resume, and nothing was left behind
    latest = records.list_runs(store, limit=1)[0]
    if latest.status != "succeeded":
        FIGURES["interrupted"] += 1
        resumed = subprocess.run(["jupyter", "flow", "resume", latest.id, "--quiet", "--store", crash_store],
                                 capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stderr
        FIGURES["resumed"] += 1
    done = records.list_runs(store, limit=1)[0]
    assert done.status == "succeeded"
    tail = records.read_task(store, done, "tail")
    expected = (bytes(range(246, 256)), done.parameters["size"] // 256 * 256 + 1)
    assert store.load_value(tail.outputs["tail"]["hash"]) == expected
