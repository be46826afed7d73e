"""The Dask worker's side of `--executor dask` (see `dask.py` for the runner's side).

`Kernels`, a Dask WorkerPlugin the executor registers once per cluster, lives in every worker process:
it keeps the process's kernel pool (papermill imported once, one spare kernel per worker thread) and
hears, through the plugin's `transition` hook, when the scheduler releases a task that still runs
(the runner cancelled its future), which stops that task's kernel. `run_on_worker` runs one task.
"""
from __future__ import annotations

import contextlib
import os
import threading

from distributed import WorkerPlugin, get_worker

from jupyter_flow.errors import FlowError
from jupyter_flow.execution.control import TaskControl
from jupyter_flow.execution.kernel_pool import KernelPool, warmup_code
from jupyter_flow.execution.task import run_task, warm_imports
from jupyter_flow.executors.base import ended
from jupyter_flow.store import open_store
from jupyter_flow.store.layout import run_file, task_json

PLUGIN = "jupyter-flow-kernels"
POLL = 1.0  # seconds between looks at the run's cancel marker
LET_GO = ("released", "cancelled", "forgotten")  # a task's states once the scheduler no longer wants it


def dask_key(spec: dict) -> str:
    """The Dask key of a task attempt: the runner submits under it, the worker finds the task by it."""
    return f"{spec['run_id']}-{spec['step']}-{spec['index']}-{spec['attempt']}"


class Kernels(WorkerPlugin):
    """One per worker process: its kernel pool, and the controls of the tasks it runs."""

    idempotent = True  # a second run on the cluster keeps the pool (and the running tasks) of the first

    def setup(self, worker) -> None:
        self.spares = worker.identity()["nthreads"]  # each worker thread's next task finds its kernel ready
        self.lock = threading.Lock()
        self.pool: KernelPool | None = None
        self.controls: dict[str, TaskControl] = {}
        self.let_go: set[str] = set()  # released while running, before run_on_worker registered its control

    def teardown(self, worker) -> None:
        if self.pool is not None:
            self.pool.close()

    def transition(self, key, start, finish, **kwargs) -> None:
        """The scheduler let go of a running task (the runner cancelled it): stop it."""
        if finish not in LET_GO:
            return
        with self.lock:
            control = self.controls.get(key)
            if finish == "forgotten":
                self.let_go.discard(key)
            elif control is None and start in ("executing", "long-running"):
                self.let_go.add(key)
        if control is not None:
            control.stop("cancelled")

    @contextlib.contextmanager
    def running(self, spec: dict, control: TaskControl):
        """While the task runs: stopped when the scheduler lets go of it or the run's cancel marker appears."""
        key = dask_key(spec)
        with self.lock:
            self.controls[key] = control
            let_go = key in self.let_go
        if let_go:
            control.stop("cancelled")
        done = threading.Event()
        watcher = threading.Thread(target=_watch_marker, args=(spec, control, done), name="jupyter-flow-cancel",
                                   daemon=True)
        watcher.start()
        try:
            yield
        finally:
            done.set()
            with self.lock:
                self.controls.pop(key, None)

    def ready_for(self, spec: dict) -> Kernels:
        """The pool, made once per process (papermill imported then), told what the task's kernels preload."""
        with self.lock:
            if self.pool is None:
                warm_imports()
                self.pool = KernelPool()
        self.pool.warmup = warmup_code(spec["store"])  # spare kernels import the store's driver while they boot
        self.pool.preload = spec.get("preload", [])  # and the notebook's imports
        return self

    # what run_task asks of a pool: a kernel, then it back
    def acquire(self, kernel_name: str, cwd: str, preload=()):
        km = self.pool.acquire(kernel_name, cwd, preload)
        self.pool.set_demand(kernel_name, cwd, self.spares)
        return km

    def release(self, km) -> None:
        self.pool.release(km)


def run_on_worker(spec: dict) -> dict:
    """Run one task in this Dask worker; returns its record (also written to the store)."""
    worker = get_worker()
    kernels: Kernels = worker.plugins[PLUGIN]
    spec = dict(spec, worker=worker.address)
    lost = _lost_attempt(spec)
    if lost:
        return lost
    if not os.path.isdir(spec["cwd"]):  # the notebook's folder is not mounted here: run where we can
        spec = dict(spec, cwd=worker.local_directory)
    control = TaskControl(spec.get("timeout"))
    with kernels.running(spec, control):
        return run_task(spec, kernels.ready_for(spec), control)


def _lost_attempt(spec: dict) -> dict | None:
    """The failed record of this attempt if a worker started it already: Dask hands a task whose
    worker died to another worker, but a step may not run twice behind the runner's back (its `retry:`
    decides). That worker's kernel died with it, so there is no failure snapshot."""
    try:
        old = open_store(spec["store"]).read_json(task_json(spec["flow"], spec["run_id"], spec["step"], spec["index"]))
    except (FlowError, ValueError):
        return None
    if old.get("attempt") != spec["attempt"] or not old.get("worker"):
        return None  # no worker started this attempt yet (a worker restarted at the same address counts too)
    return ended(spec, "failed", worker_lost(old["worker"]), kind="WorkerLost", worker=old["worker"],
                 host=old.get("host"), started=old.get("started"))


def worker_lost(worker: str | None) -> str:
    who = f"the Dask worker {worker}" if worker else "every Dask worker that tried it"
    return (f"{who} died running this task (killed, out of memory, or its machine went away); tag the step "
            "retry:N to run it again on another worker, or `jupyter flow resume` the run")


def _watch_marker(spec: dict, control: TaskControl, done: threading.Event) -> None:
    store = open_store(spec["store"])
    marker = run_file(spec["flow"], spec["run_id"], "cancel")
    while not done.wait(POLL):
        try:
            if store.exists(marker):
                control.stop("cancelled")
                return
        except Exception:  # noqa: BLE001 - a flaky store must not kill the task; try again
            continue
