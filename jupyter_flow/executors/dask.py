"""Run tasks on a Dask distributed cluster (`--executor dask --scheduler tcp://host:8786`).

Each task is one call of `run_on_worker` in a worker thread: papermill in that worker process,
driving a fresh kernel. Every worker process keeps its own KernelPool with one spare kernel per
kernelspec, so the next task there does not wait for a cold kernel, and imports papermill once.
Workers read and write the store URL directly: it must be one they can all reach (an object store,
or a folder on a shared file system).

Resources: a step's `limit:` tags become Dask `resources=` (cpu -> "cpu", memory -> "memory" in
bytes, gpu -> "gpu"), but only for the resource names that some worker of the cluster declares
(`dask worker --resources "cpu=4,memory=16e9,gpu=1"`). A cluster that declares none runs every task
anywhere; a limit no worker can satisfy fails the task with a message instead of hanging.

A worker lost mid-task (kill -9, out of memory, a node gone) fails that attempt as `WorkerLost`. Dask
hands such a task to another worker; there it finds the task.json of the same attempt written by
the dead worker and returns that failure instead of running the step a second time, so `retry:`
alone decides whether the step runs again (as a new attempt), and resume completes a failed run.

Cancel: the worker watches the run's `cancel` marker in the store (every second while its task
runs) and whether the scheduler has released its task (the runner cancelled the Dask future); either
interrupts the kernel, so the task still leaves its failure snapshot.
"""
from __future__ import annotations

import os
import tempfile
import threading
import time
from concurrent.futures import Future

from jupyter_flow.errors import FlowError
from jupyter_flow.execution.kernel_pool import KernelPool, warmup_code
from jupyter_flow.store import open_store, records
from jupyter_flow.store.layout import run_file, task_json
from jupyter_flow.execution.task import TaskControl, new_record, now, run_task, warm_imports
from jupyter_flow.executors.base import Executor

CONNECT_TIMEOUT_ENV = "JUPYTER_FLOW_DASK_TIMEOUT"
RESOURCES = {"cpu": "cpu", "memory": "memory", "gpu": "gpu"}
POLL = 1.0


class DaskExecutor(Executor):
    name = "dask"

    def __init__(self, scheduler: str | None = None, timeout: float | None = None, **options):
        try:
            import dask
            from distributed import Client
        except ImportError:
            raise FlowError("--executor dask needs dask.distributed: pip install 'jupyter-flow[dask]'") from None
        address = scheduler or dask.config.get("scheduler-address", None)
        if not address:
            raise FlowError("--executor dask needs --scheduler ADDRESS (e.g. tcp://10.0.0.5:8786); "
                            "start a scheduler with `dask scheduler` and workers with `dask worker ADDRESS`")
        timeout = timeout if timeout is not None else float(os.environ.get(CONNECT_TIMEOUT_ENV, "10"))
        try:
            self.client = Client(address, timeout=timeout, set_as_default=False)
        except Exception as e:  # noqa: BLE001 - any failure to connect means the same to the user
            reason = (str(e).strip().splitlines() or [e.__class__.__name__])[0][:200]
            raise FlowError(f"cannot reach the Dask scheduler at {address} ({reason}); start one with "
                            "`dask scheduler` (and `dask worker ADDRESS`), or check --scheduler") from None
        self.address = address
        self._lock = threading.Lock()
        self._inflight: dict[str, tuple] = {}  # key -> (spec, control, dask future, result future)
        self._checked_stores: dict[str, str | None] = {}
        self._closed = threading.Event()
        self._monitor = threading.Thread(target=self._watch_controls, name="jupyter-flow-dask", daemon=True)
        self._monitor.start()

    @property
    def host(self) -> str:
        return self.address

    def submit(self, spec: dict, control: TaskControl) -> Future:
        result: Future = Future()
        key = f"{spec['run_id']}-{spec['step']}-{spec['index']}-{spec['attempt']}"
        if control.reason:  # cancelled before it was handed over
            result.set_result(_ended(spec, "cancelled", "cancelled before it started"))
            return result
        try:
            problem = self._check_store(spec["store"])
            if problem:
                raise FlowError(problem)
            resources = dask_resources(spec.get("limit") or {}, self._worker_resources(), spec["step"])
            future = self.client.submit(run_on_worker, spec, key=key, pure=False, resources=resources or None)
        except FlowError as e:
            result.set_result(_ended(spec, "failed", str(e)))
            return result
        except Exception as e:  # noqa: BLE001 - the scheduler went away: the runtime records a failed task
            result.set_exception(e)
            return result
        with self._lock:
            self._inflight[key] = (spec, control, future, result)
        future.add_done_callback(lambda f, k=key: self._done(k, f))
        return result

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            futures = [entry[2] for entry in self._inflight.values()]
        for future in futures:
            future.cancel()
        self.client.close()

    # -- the runner's side of a task -------------------------------------------------------------
    def _done(self, key: str, future) -> None:
        with self._lock:
            entry = self._inflight.pop(key, None)
        if entry is None:
            return
        spec, control, _, result = entry
        if future.status == "finished":
            result.set_result(future.result())
        elif future.status == "cancelled" or control.reason:
            # waits for the worker's record: not on Dask's single callback thread
            threading.Thread(target=lambda: result.set_result(self._record_after_cancel(spec, control)),
                             name="jupyter-flow-cancelled", daemon=True).start()
        elif _killed_worker(future.exception()):  # the scheduler gave up after workers died running it
            result.set_result(_ended(spec, "failed", worker_lost(None), kind="WorkerLost"))
        else:
            result.set_exception(future.exception())

    def _watch_controls(self) -> None:
        """Cancel the Dask future of a task whose control the runner stopped (cancel, Ctrl-C)."""
        while not self._closed.wait(0.2):
            with self._lock:
                stopped = [entry[2] for entry in self._inflight.values() if entry[1].reason]
            for future in stopped:
                if not future.done():
                    future.cancel()

    def _record_after_cancel(self, spec: dict, control: TaskControl) -> dict:
        """The worker's own record of a cancelled task once it wrote one (it stops the kernel and takes
        the snapshot within a few seconds); a plain `cancelled` record if the task never started."""
        store = open_store(spec["store"])
        key = _record_key(spec)
        deadline = time.monotonic() + control.grace + 25
        while True:
            try:
                record = store.read_json(key)
            except (FlowError, ValueError):
                record = None
            if record is None or record.get("attempt") != spec["attempt"]:
                return _ended(spec, "cancelled", "cancelled before it started")
            if record.get("status") != "running":
                return record
            if time.monotonic() > deadline:
                return _ended(spec, "cancelled", "cancelled; the worker did not confirm that it stopped", write=False)
            time.sleep(0.5)

    # -- checks against the cluster ----------------------------------------------------------------
    def _worker_resources(self) -> list[dict]:
        try:
            info = self.client.scheduler_info(n_workers=-1)  # all workers, not the first five
        except TypeError:  # distributed < 2025.4 always reports all
            info = self.client.scheduler_info()
        workers = info.get("workers", {})
        return [w.get("resources") or {} for w in workers.values()]

    def _check_store(self, url: str) -> str | None:
        """A local-folder store must be visible to every worker (a shared file system)."""
        if url not in self._checked_stores:
            store = open_store(url)
            problem = None
            folder = store.local_dir("")
            if folder:
                seen = self.client.run(os.path.isdir, folder)
                blind = sorted(addr for addr, ok in seen.items() if not ok)
                if blind:
                    problem = (f"store {store.url} is a folder that Dask worker {blind[0]} cannot see; use a "
                               "folder every worker mounts at the same path, or an object store (--store s3://...)")
            self._checked_stores[url] = problem
        return self._checked_stores[url]


def dask_resources(limit: dict, workers: list[dict], step: str = "step") -> dict:
    """Dask `resources=` for a step's `limit:` options, given the resources each worker declares.

    A limit matches a declared resource name whatever its case (`limit:gpu:1` asks for `GPU` if the
    workers say `--resources GPU=1`). Only names that at least one worker declares are passed
    (elsewhere they could never be met and the task would wait forever); a demand larger than any
    worker offers is a FlowError."""
    declared = {name.lower(): name for w in workers for name in w}
    wanted = {}
    for option, value in limit.items():
        name = declared.get(RESOURCES.get(option, ""))
        if name is None:
            continue
        amount = float(value)  # the tag parser gave cores, bytes, or a GPU count
        largest = max(w.get(name, 0) for w in workers)
        if amount > largest:
            raise FlowError(f"step {step!r} needs {name}={value} (limit:{option}:{value}), but no Dask worker "
                            f"offers that much (largest: {largest:g}); start workers with "
                            f"`dask worker ... --resources \"{name}={amount:g}\"` or lower the limit")
        wanted[name] = amount
    return wanted


def _ended(spec: dict, status: str, message: str, write: bool = True, kind: str | None = None, **fields) -> dict:
    """The record of a task that ended without running on a worker, written as its task.json."""
    kind = kind or ("FlowError" if status == "failed" else status)
    record = new_record(spec, status=status, ended=now(), executor="dask", error={"type": kind, "message": message})
    record.update(fields)
    if write:
        try:
            _write_record(spec, record)
        except FlowError:
            pass  # the runtime still gets the record; the store is what failed
    return record


def _record_key(spec: dict) -> str:
    return task_json(spec["flow"], spec["run_id"], spec["step"], spec["index"])


def _write_record(spec: dict, record: dict) -> None:
    records.write_task(open_store(spec["store"]), record)


# -- the worker's side: module level, so workers import it by name ------------------------------------
_pool: KernelPool | None = None
_pool_lock = threading.Lock()


def worker_pool() -> KernelPool:
    """This worker process's kernel pool (papermill and its kernel machinery imported once)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            import atexit
            from multiprocessing import util

            warm_imports()  # papermill once per worker process, not once per task
            _pool = KernelPool()
            atexit.register(_pool.close)
            util.Finalize(_pool, _pool.close, exitpriority=10)  # dask worker processes end via os._exit
        return _pool


def run_on_worker(spec: dict) -> dict:
    """Run one task in this Dask worker; returns its record (also written to the store)."""
    task = _this_task()
    if task:
        spec = dict(spec, worker=task[0].address)
        lost = _lost_attempt(spec)
        if lost:
            return lost
    pool = worker_pool()
    pool.warmup = warmup_code(spec["store"])  # spare kernels import the store's driver while they boot
    pool.preload = spec.get("preload", [])  # and the notebook's imports, once per worker
    if not os.path.isdir(spec["cwd"]):  # the notebook's folder is not mounted here: run where we can
        spec = dict(spec, cwd=task[0].local_directory if task else tempfile.gettempdir())
    control = TaskControl(spec.get("timeout"))
    stop = threading.Event()
    watcher = threading.Thread(target=_watch_cancel, args=(spec, control, stop, task),
                               name="jupyter-flow-cancel", daemon=True)
    watcher.start()
    try:
        return run_task(spec, _SparePool(pool, task[0].state.nthreads if task else 1), control)
    finally:
        stop.set()


def _lost_attempt(spec: dict) -> dict | None:
    """The failed record of this attempt if a worker started it already: Dask hands a task whose
    worker died to another worker, but a step may not run twice behind the runner's back (its `retry:`
    decides). That worker's kernel died with it, so there is no failure snapshot."""
    try:
        old = open_store(spec["store"]).read_json(_record_key(spec))
    except (FlowError, ValueError):
        return None
    if old.get("attempt") != spec["attempt"] or not old.get("worker"):
        return None  # no worker started this attempt yet (a worker restarted at the same address counts too)
    return _ended(spec, "failed", worker_lost(old["worker"]), kind="WorkerLost", worker=old["worker"],
                  host=old.get("host"), started=old.get("started"))


def worker_lost(worker: str | None) -> str:
    who = f"the Dask worker {worker}" if worker else "every Dask worker that tried it"
    return (f"{who} died running this task (killed, out of memory, or its machine went away); tag the step "
            "retry:N to run it again on another worker, or `jupyter flow resume` the run")


def _killed_worker(error) -> bool:
    from distributed.scheduler import KilledWorker

    return isinstance(error, KilledWorker)


class _SparePool:
    """Hands out kernels from the worker's pool and, as soon as one is taken, keeps one spare per
    worker thread starting (each thread's next task finds its kernel ready)."""

    def __init__(self, pool: KernelPool, spares: int):
        self.pool, self.spares = pool, spares

    def acquire(self, kernel_name: str, cwd: str):
        km = self.pool.acquire(kernel_name, cwd)
        self.pool.set_demand(kernel_name, cwd, self.spares)
        return km

    def release(self, km) -> None:
        self.pool.release(km)


def _watch_cancel(spec: dict, control: TaskControl, stop: threading.Event, task) -> None:
    store = open_store(spec["store"])
    marker = run_file(spec["flow"], spec["run_id"], "cancel")
    while not stop.wait(POLL):
        try:
            if _released(task) or store.exists(marker):
                control.stop("cancelled")
                return
        except Exception:  # noqa: BLE001 - a flaky store must not kill the task; try again
            continue


def _this_task() -> tuple | None:
    """(worker, key) of the task running in this thread; only a Dask task thread can ask."""
    try:
        from distributed import get_worker
        from distributed.worker import thread_state

        return get_worker(), thread_state.key
    except (ImportError, ValueError, AttributeError):
        return None


def _released(task: tuple | None) -> bool:
    """True once the scheduler let go of this task (the runner cancelled its future)."""
    if task is None:
        return False
    worker, key = task
    ts = worker.state.tasks.get(key)
    return ts is None or ts.state in ("cancelled", "released", "forgotten")
