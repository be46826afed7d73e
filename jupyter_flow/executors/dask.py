"""Run tasks on a Dask distributed cluster (`--executor dask --scheduler tcp://host:8786`).

Each task is one call of `dask_worker.run_on_worker` in a worker thread: papermill in that worker
process, driving a fresh kernel. Every worker process keeps its own KernelPool (in a Dask
WorkerPlugin, registered with the first task) with one spare kernel per worker thread, so the next
task there does not wait for a cold kernel, and imports papermill once.
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
runs), and its plugin hears when the scheduler releases the task (the template in `base` cancels the
Dask future of a stopped task); either interrupts the kernel, so the task still leaves its failure
snapshot, and the runner waits for that record.
"""
from __future__ import annotations

import os

from jupyter_flow.errors import FlowError
from jupyter_flow.execution.control import TaskControl
from jupyter_flow.executors.base import Executor, ended
from jupyter_flow.store import open_store

CONNECT_TIMEOUT_ENV = "JUPYTER_FLOW_DASK_TIMEOUT"
RESOURCES = {"cpu": "cpu", "memory": "memory", "gpu": "gpu"}


class DaskExecutor(Executor):
    name = "dask"

    def __init__(self, scheduler: str | None = None, timeout: float | None = None, **options):
        super().__init__(**options)
        try:  # the optional `dask` extra (this module and dask_worker need it only once a run asks for Dask)
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
        self._plugged = False  # the workers' kernel pools: registered with the first task (a run all cached needs none)
        self._checked_stores: dict[str, str | None] = {}

    @property
    def host(self) -> str:
        return self.address

    def launch(self, spec: dict, control: TaskControl):
        from jupyter_flow.executors import dask_worker  # the optional `dask` extra, as in crashed()

        problem = self._check_store(spec["store"])
        if problem:
            raise FlowError(problem)
        resources = dask_resources(spec.get("limit") or {}, self._worker_resources(), spec["step"])
        with self._lock:
            if not self._plugged:
                self.client.register_plugin(dask_worker.Kernels(), name=dask_worker.PLUGIN)
                self._plugged = True
        return self.client.submit(dask_worker.run_on_worker, spec, key=dask_worker.dask_key(spec), pure=False,
                                  resources=resources or None)

    def crashed(self, spec: dict, error: BaseException) -> dict:
        # the optional `dask` extra (there since __init__): imported where used, so that without it the
        # registry's error is this executor's own "pip install 'jupyter-flow[dask]'"
        from distributed import KilledWorker

        from jupyter_flow.executors.dask_worker import worker_lost

        if isinstance(error, KilledWorker):  # the scheduler gave up after workers died running it
            return ended(spec, "failed", worker_lost(None), kind="WorkerLost")
        return super().crashed(spec, error)

    def shutdown(self) -> None:
        with self._lock:
            futures = [launched for _, launched in self._inflight.values()]
        for future in futures:
            future.cancel()
        self.client.close()

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

