"""The contract between the runtime and whatever runs its tasks.

An executor takes a task spec (plain data, see `jupyter_flow.runtime.spec`) and returns a
`concurrent.futures.Future` of the task's final record. The runtime never looks inside an executor:
it submits, it may hint how many kernels it will want, it stops tasks through their `TaskControl`,
and it closes the executor when the run ends.
"""
from __future__ import annotations

import socket
from concurrent.futures import Future

from jupyter_flow.execution.control import TaskControl


class Executor:
    """Subclass it and register the class under the entry-point group `jupyter_flow.executors`.

    Every executor is built the same way, by keyword, by `make_executor`:
    `cls(max_workers=N or None, scheduler=ADDRESS or None, **options)`; an executor ignores the
    options it has no use for, and raises `FlowError` (one line: what is wrong, how to fix it) when it
    cannot work, e.g. an unreachable cluster. Building it must not run anything.
    """

    name = "executor"  # the name it is registered under (the registry sets it on the instance)

    def __init__(self, *, max_workers: int | None = None, scheduler: str | None = None, **options):
        self.max_workers = max_workers

    @property
    def host(self) -> str:
        """Where its tasks run, for people reading a run: a host name, a cluster address..."""
        return socket.gethostname()

    def submit(self, spec: dict, control: TaskControl) -> Future:
        """Start the task described by `spec` (returns at once) and return a future of its final
        record: the task's `task.json` as written to the store (`status` succeeded, failed,
        timed_out or cancelled, `outputs`, `error`, `duration`...). A task that cannot be run at all
        may end the future with an exception: the runtime records that as the task's failure.

        Cancel: there is no `cancel` method. The runtime (or the task's timeout) calls
        `control.stop(reason)`; an executor that runs the task elsewhere watches `control.reason`
        and stops its task there. Either way the future still ends with the task's final record
        (status `cancelled` or `timed_out`), once its failure snapshot is saved.
        """
        raise NotImplementedError

    def want_kernels(self, kernel: str, cwd: str, count: int, *, store: str | None = None,
                     preload: list[str] | tuple = ()) -> None:
        """Hint (optional to honour): `count` tasks of kernel `kernel` in `cwd` are waiting but not
        submitted yet, so an executor with a warm pool may start kernels ahead of need. `store` is the
        store URL the tasks will read (kernels may import its driver while they boot) and `preload`
        the modules the notebook imports. Called again each time tasks start or end; 0 means none."""

    def close(self) -> None:
        """Wait for the submitted tasks, then release everything the executor holds."""
