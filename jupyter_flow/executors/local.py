"""Run tasks on this machine: each task is papermill in a thread of the runner process, driving its
own fresh kernel process from the executor's kernel pool (see `base.Executor`): papermill is
imported once per run, not once per task, and kernels start ahead of need while upstream steps run."""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

from jupyter_flow.execution.control import TaskControl
from jupyter_flow.execution.kernel_pool import KernelPool
from jupyter_flow.executors.base import Executor


class LocalExecutor(Executor):
    name = "local"

    def __init__(self, max_workers: int | None = None, **options):
        super().__init__(max_workers=max_workers, pool=KernelPool())
        self.threads = ThreadPoolExecutor(self.max_workers, thread_name_prefix="jupyter-flow-task")

    def launch(self, spec: dict, control: TaskControl) -> Future:
        return self.threads.submit(self.run_here, spec, control)

    def shutdown(self) -> None:
        self.threads.shutdown(wait=True)
