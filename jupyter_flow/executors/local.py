"""Run tasks on this machine: each task is papermill in a thread of the runner process, driving its
own fresh kernel process. papermill is imported once per run, not once per task, and kernels are
started ahead of need by a KernelPool while upstream steps run."""
from __future__ import annotations

import os
import threading
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor

from ..kernels import KernelPool
from ..task import TaskControl, run_task, warm_imports


class LocalExecutor:
    name = "local"

    def __init__(self, max_workers: int | None = None):
        self.max_workers = max_workers or os.cpu_count() or 2
        self.threads = ThreadPoolExecutor(self.max_workers, thread_name_prefix="jupyter-flow-task")
        self.pool = KernelPool()
        self.backlog: Counter = Counter()  # kernel -> tasks submitted that no thread has picked up yet
        self.lock = threading.Lock()
        self.warming = None  # papermill's imports, started with the first kernel (never for a run all cached)

    def set_demand(self, kernel: str, cwd: str, waiting: int) -> None:
        """`waiting` tasks of this kernel are not submitted yet; with the backlog, keep that many
        kernels warm, up to twice max_workers (a kernel starts slower than a short step runs)."""
        count = min(waiting + self.backlog[kernel], 2 * self.max_workers)
        if count:
            self._warm()
        self.pool.set_demand(kernel, cwd, count)

    def _warm(self) -> None:
        """Once, before the first kernel: import jupyter_client in this thread (threads that import it
        at the same time can find it half-initialised), then papermill's imports in the background."""
        with self.lock:  # the runs of a batch share this executor
            if self.warming is None:
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
