"""Executors take a task spec and return a future of its final record. Looked up by name."""
from __future__ import annotations

from ..errors import FlowError

NAMES = ("local", "dask")


def make_executor(name, max_workers: int | None = None, scheduler: str | None = None):
    if not isinstance(name, str):
        return name  # an executor object already (a batch shares one between its runs)
    if name == "local":
        from .local import LocalExecutor

        return LocalExecutor(max_workers)
    if name == "dask":
        from .dask import DaskExecutor

        return DaskExecutor(scheduler)
    raise FlowError(f"unknown executor {name!r}; choose one of: {', '.join(NAMES)}")
