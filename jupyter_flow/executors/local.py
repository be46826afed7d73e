"""Run tasks on this machine: each task is papermill in a thread of the runner process, driving its
own fresh kernel process. papermill is imported once per run, not once per task, and kernels are
started ahead of need by a KernelPool while upstream steps run."""
from __future__ import annotations

import os
import threading
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor

from jupyter_flow.speed import forkserver
from jupyter_flow.execution.kernel_pool import KernelPool, warmup_code
from jupyter_flow.execution.task import TaskControl, run_task, warm_imports
from jupyter_flow.executors.base import Executor


class LocalExecutor(Executor):
    name = "local"

    def __init__(self, max_workers: int | None = None, **options):
        self.max_workers = max_workers or os.cpu_count() or 2
        self.threads = ThreadPoolExecutor(self.max_workers, thread_name_prefix="jupyter-flow-task")
        self.pool = KernelPool()
        self.backlog: Counter = Counter()  # kernel -> tasks submitted that no thread has picked up yet
        self.lock = threading.Lock()
        self.warming = None  # papermill's imports, started with the first kernel (never for a run all cached)

    def want_kernels(self, kernel: str, cwd: str, count: int, *, store=None, preload=()) -> None:
        """With the backlog, keep `count` kernels warm, up to four times max_workers (a short step runs
        in tens of milliseconds, and a chain of them needs its next kernel ready each time); they
        import the store's driver and `preload` while booting."""
        if store:
            self.pool.warmup = warmup_code(store)
        self.pool.preload = list(preload)
        count = min(count + self.backlog[kernel], 4 * self.max_workers)
        if count:
            self._warm()
        self.pool.set_demand(kernel, cwd, count)

    def _warm(self) -> None:
        """Once, before the first kernel (never for a run all cached): start the zygote, import
        jupyter_client in this thread (threads that import it at the same time can find it
        half-initialised), then papermill's imports in the background."""
        with self.lock:  # the runs of a batch share this executor
            if self.warming is None:
                forkserver.prestart()  # the first kernel's zygote imports while this process imports papermill
                import jupyter_client  # noqa: F401

                self.warming = threading.Thread(target=warm_imports, daemon=True, name="jupyter-flow-imports")
                self.warming.start()

    def submit(self, spec: dict, control: TaskControl) -> Future:
        self._warm()
        with self.lock:
            self.backlog[spec["kernel"]] += 1
        return self.threads.submit(self._run, spec, control)

    def _run(self, spec: dict, control: TaskControl) -> dict:
        with self.lock:
            self.backlog[spec["kernel"]] -= 1
        return run_task(spec, self.pool, control)

    def close(self) -> None:
        self.threads.shutdown(wait=True)
        self.pool.close()
