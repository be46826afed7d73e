"""Executors take a task spec and return a future of its final record (see `base.Executor`); a
whole-run backend (see `whole_run`, e.g. Kubeflow Pipelines) takes a whole notebook instead.

They are found by name: the two built in, then the entry-point group `jupyter_flow.executors`, which
any installed package may add to. A class is imported only when a run asks for it, and entry points
are read only for a name that is not built in (or to list them), so the CLI stays quick.
"""
from __future__ import annotations

import functools
from importlib import import_module
from typing import Any

from jupyter_flow.errors import FlowError
from jupyter_flow.executors.whole_run import WholeRunBackend

GROUP = "jupyter_flow.executors"
BUILTIN = {"local": "jupyter_flow.executors.local:LocalExecutor",
           "dask": "jupyter_flow.executors.dask:DaskExecutor"}


@functools.cache
def registered() -> dict[str, str]:
    """name -> "module:Class" of every executor: the built-in ones, then the installed packages'."""
    from importlib.metadata import entry_points  # start-up time: read only for a name not built in

    found = dict(BUILTIN)
    for ep in entry_points(group=GROUP):
        found.setdefault(ep.name, ep.value)  # a package cannot replace a built-in executor
    return found


def names() -> list[str]:
    return list(registered())


def executor_class(name: str) -> type[Any]:
    """The class registered as `name`, imported now; FlowError (listing the names) if there is none."""
    target = BUILTIN.get(name) or registered().get(name)
    if target is None:
        raise FlowError(f"unknown executor {name!r}; choose one of: {', '.join(names())} "
                        f"(packages add more through the entry-point group {GROUP!r})")
    module, _, attr = target.partition(":")
    try:
        return functools.reduce(getattr, attr.split("."), import_module(module))
    except Exception as e:  # noqa: BLE001 - a broken plug-in is the user's one-line error
        raise FlowError(f"executor {name!r} ({target}) cannot be loaded: {e.__class__.__name__}: {e}; "
                        "reinstall the package that provides it") from None


def runs_whole_runs(name: str) -> bool:
    """Whether `name` is a whole-run backend (see `whole_run`) rather than an executor of tasks."""
    return issubclass(executor_class(name), WholeRunBackend)


def make_backend(name: str, **options) -> WholeRunBackend:
    """The whole-run backend registered as `name`, built with `options`."""
    backend = executor_class(name)(**options)
    backend.name = name
    return backend


def make_executor(name, max_workers: int | None = None, scheduler: str | None = None, **options):
    """The executor registered as `name`, built with the options every executor takes; FlowError (its
    usage line) if `name` is a whole-run backend, which takes no tasks."""
    if not isinstance(name, str):
        return name  # an executor object already (a batch shares one between its runs)
    cls = executor_class(name)
    if issubclass(cls, WholeRunBackend):
        raise FlowError(f"--executor {name} runs whole pipelines, not the tasks of a run scheduled here: "
                        f"{cls.usage}")
    executor = cls(max_workers=max_workers, scheduler=scheduler, **options)
    executor.name = name
    return executor
