"""The contract between the runtime and whatever runs its tasks, and the template every executor fills in.

An executor takes a task spec (plain data, see `jupyter_flow.runtime.spec`) and returns a
`concurrent.futures.Future` of the task's final record. The runtime never looks inside an executor:
it submits, it may hint how many kernels it will want, it stops tasks through their `TaskControl`,
and it closes the executor when the run ends.

The template (`Executor.submit`) owns what every executor must get right the same way: a task
stopped before it was handed over never starts; a task whose launch was called off, that crashed, or
that the executor refused still ends with a final record in the store (`ended`, `crashed`,
`confirmed`); a kernel pool for tasks that run in this process. A subclass only says how a task is
launched (`launch`), and what `shutdown` means for it.
"""
from __future__ import annotations

import os
import socket
import threading
import time
from collections import Counter
from concurrent.futures import Future

from jupyter_flow.errors import FlowError
from jupyter_flow.execution.control import TaskControl
from jupyter_flow.execution.kernel_pool import KernelPool, warmup_code
from jupyter_flow.execution.task import new_record, now, run_task, warm_imports
from jupyter_flow.speed import forkserver
from jupyter_flow.store import open_store, records
from jupyter_flow.store.layout import task_json

WATCH = 0.2  # seconds between looks for tasks whose control was stopped
CONFIRM = 25  # seconds past the control's grace that a cancelled task's own record is waited for
NEVER_STARTED = "cancelled before it started"


class Executor:
    """Subclass it, implement `launch`, and register the class under the entry-point group
    `jupyter_flow.executors`.

    Every executor is built the same way, by keyword, by `make_executor`:
    `cls(max_workers=N or None, scheduler=ADDRESS or None, **options)`; an executor ignores the
    options it has no use for, and raises `FlowError` (one line: what is wrong, how to fix it) when it
    cannot work, e.g. an unreachable cluster. Building it must not run anything. An executor whose
    tasks run in this process passes `pool=KernelPool()` to `__init__` and launches `run_here`.
    """

    name = "executor"  # the name it is registered under (the registry sets it on the instance)
    pool: KernelPool | None = None  # kernels started ahead of need, for tasks run in this process

    def __init__(self, *, max_workers: int | None = None, scheduler: str | None = None,
                 pool: KernelPool | None = None, **options):
        self.max_workers = max_workers or os.cpu_count() or 2
        self.pool = pool
        self._lock = threading.Lock()
        self._inflight: dict[int, tuple[TaskControl, Future]] = {}  # id(result) -> (control, launched)
        self._backlog: Counter = Counter()  # kernel -> tasks launched here that no thread has picked up yet
        self._closed = threading.Event()
        self._watcher: threading.Thread | None = None
        self._warming: threading.Thread | None = None  # papermill's imports, started with the first kernel

    @property
    def host(self) -> str:
        """Where its tasks run, for people reading a run: a host name, a cluster address..."""
        return socket.gethostname()

    # -- what a subclass says ----------------------------------------------------------------------
    def launch(self, spec: dict, control: TaskControl) -> Future:
        """Start the task (returns at once); a future of its final record, the task's `task.json` as
        written to the store (`status` succeeded, failed, timed_out or cancelled, `outputs`, `error`,
        `duration`...). Raise FlowError to refuse a task it can never run (the task fails with that
        line). The future may be any object with the methods of `concurrent.futures.Future`.

        Cancel: the runtime (or the task's timeout) calls `control.stop(reason)`. The template then
        calls `cancel()` on the returned future; a task that runs elsewhere must stop there when that
        happens, and write its own `cancelled` (or `timed_out`) record once its failure snapshot is
        saved; the template waits for that record."""
        raise NotImplementedError

    def shutdown(self) -> None:
        """Wait for the launched tasks (or call them off), then release what launching them holds."""

    # -- the template --------------------------------------------------------------------------------
    def submit(self, spec: dict, control: TaskControl) -> Future:
        """Start the task described by `spec` (returns at once) and return a future of its final record,
        which is always a record, never an exception (see `launch`)."""
        result: Future = Future()
        if control.reason:  # stopped before it was handed over
            result.set_result(ended(spec, "cancelled", NEVER_STARTED))
            return result
        kernel = spec["kernel"] if self.pool is not None else None
        if kernel is not None:
            self._warm()
            self._waiting(kernel, +1)
        try:
            launched = self.launch(spec, control)
        except Exception as e:  # noqa: BLE001 - refused or crashed: either way a record says why
            self._waiting(kernel, -1)
            result.set_result(ended(spec, "failed", str(e)) if isinstance(e, FlowError) else self.crashed(spec, e))
            return result
        with self._lock:
            self._inflight[id(result)] = (control, launched)
            if self._watcher is None:
                self._watcher = threading.Thread(target=self._watch, name="jupyter-flow-cancel", daemon=True)
                self._watcher.start()
        launched.add_done_callback(lambda f: self._settle(f, spec, control, result, kernel))
        return result

    def _settle(self, launched, spec: dict, control: TaskControl, result: Future, kernel: str | None) -> None:
        with self._lock:
            self._inflight.pop(id(result), None)
        if launched.cancelled():
            self._waiting(kernel, -1)  # it never ran
        error = None if launched.cancelled() else launched.exception()
        if launched.cancelled() or (error is not None and control.reason):
            # waiting for a remote task's own record takes seconds: not on the launcher's callback thread
            threading.Thread(target=lambda: result.set_result(self.confirmed(spec, control)),
                             name="jupyter-flow-cancelled", daemon=True).start()
        elif error is not None:
            result.set_result(self.crashed(spec, error))
        else:
            result.set_result(launched.result())

    def _watch(self) -> None:
        """Call off the launch of every task whose control was stopped: one not started yet never
        starts, one running elsewhere is told to stop there (one running here watches its control)."""
        while not self._closed.wait(WATCH):
            with self._lock:
                stopped = [launched for control, launched in self._inflight.values() if control.reason]
            for launched in stopped:
                if not launched.done():
                    launched.cancel()

    # -- final records ------------------------------------------------------------------------------
    def crashed(self, spec: dict, error: BaseException) -> dict:
        """The final record of a task whose launch or run raised (a bug, a connection lost...)."""
        return ended(spec, "failed", f"the executor failed to run the task: {error}", kind=error.__class__.__name__)

    def confirmed(self, spec: dict, control: TaskControl) -> dict:
        """The final record of a cancelled task: its own once it wrote one (it stops its kernel and
        takes its snapshot within the control's grace), or `cancelled before it started`."""
        store = open_store(spec["store"])
        key = task_json(spec["flow"], spec["run_id"], spec["step"], spec["index"])
        deadline = time.monotonic() + control.grace + CONFIRM
        while True:
            try:
                record = store.read_json(key)
            except (FlowError, ValueError):
                record = None
            if record is None or record.get("attempt") != spec["attempt"]:
                return ended(spec, "cancelled", NEVER_STARTED)
            if record.get("status") != "running":
                return record
            if time.monotonic() > deadline:
                return ended(spec, "cancelled", f"cancelled; {self.host} did not confirm that the task stopped",
                             write=False)
            time.sleep(0.5)

    # -- the kernel pool of tasks run in this process -----------------------------------------------
    def want_kernels(self, kernel: str, cwd: str, count: int, *, store: str | None = None,
                     preload: list[str] | tuple = ()) -> None:
        """Hint: `count` tasks of kernel `kernel` in `cwd` are waiting but not submitted yet (called
        again each time tasks start or end; 0 means none). With the tasks launched but not started,
        the pool keeps that many kernels warm, up to four times max_workers (a short step runs in tens
        of milliseconds, and a chain of them needs its next kernel ready each time); they import the
        store's driver (`store`) and `preload` (the notebook's imports) while booting. An executor
        without a pool here ignores it: its workers keep their own."""
        if self.pool is None:
            return
        if store:
            self.pool.warmup = warmup_code(store)
        self.pool.preload = list(preload)
        count = min(count + self._backlog[kernel], 4 * self.max_workers)
        if count:
            self._warm()
        self.pool.set_demand(kernel, cwd, count)

    def run_here(self, spec: dict, control: TaskControl) -> dict:
        """Run the task in this process, on a kernel of the pool: what `launch` hands to its thread."""
        self._waiting(spec["kernel"], -1)
        return run_task(spec, self.pool, control)

    def _waiting(self, kernel: str | None, change: int) -> None:
        if kernel is not None:
            with self._lock:
                self._backlog[kernel] += change

    def _warm(self) -> None:
        """Once, before the first kernel (never for a run all cached): start the zygote, import
        jupyter_client in this thread (threads that import it at the same time can find it
        half-initialised), then papermill's imports in the background."""
        with self._lock:  # the runs of a batch share the executor
            if self._warming is None:
                forkserver.prestart()  # the first kernel's zygote imports while this process imports papermill
                import jupyter_client  # noqa: F401 - now, in this thread, before the threads that use it

                self._warming = threading.Thread(target=warm_imports, daemon=True, name="jupyter-flow-imports")
                self._warming.start()

    def close(self) -> None:
        """Wait for the submitted tasks, then release everything the executor holds."""
        self._closed.set()
        self.shutdown()
        if self.pool is not None:
            self.pool.close()


def ended(spec: dict, status: str, message: str, *, kind: str | None = None, write: bool = True, **fields) -> dict:
    """The final record of a task that ended without its step running to an end where it was sent
    (refused, never started, crashed, lost with its worker), written as its task.json."""
    kind = kind or ("FlowError" if status == "failed" else status)
    record = new_record(spec, status=status, ended=now(), error={"type": kind, "message": message}, **fields)
    if write:
        try:
            records.write_task(open_store(spec["store"]), record)
        except (FlowError, OSError):
            pass  # the runtime still gets the record; the store is what failed
    return record
