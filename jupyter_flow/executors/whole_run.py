"""The contract of a backend that runs whole runs elsewhere, not the tasks of a run scheduled here.

Kubeflow Pipelines schedules a compiled pipeline itself: it takes no single task. Such a backend is
registered in the executors' entry-point group like any executor, so `--executor NAME` picks it; the
CLI's `run` then hands it the notebook (`submit_run`: compile, submit, say where the run is) instead of
scheduling tasks here. Asked for tasks (the Python API, resume, batch, the sidebar), the registry
refuses it in one line, its `usage`. Its steps write into the store as any run's do, so the readers
(`runs`, `show`, load into a kernel, `resume` locally) work on the run it made.

This module imports nothing heavy: the registry checks a class against it before anything runs.
"""
from __future__ import annotations


class WholeRunBackend:
    """Subclass it, implement `submit_run`, and register the class under `jupyter_flow.executors`.

    Built as every executor is, by keyword (`cls(**options)`): it keeps the options it needs, ignores
    the others, and raises FlowError (one line: what is missing, how to give it) when it cannot work.
    Building it must not contact anything."""

    name = "backend"  # the name it is registered under
    usage = "run a notebook on it with `jupyter flow run NOTEBOOK --executor NAME`"  # one line, see module doc

    def __init__(self, **options):
        self.options = options

    @property
    def host(self) -> str:
        """Where its runs go, for people reading a run: an API address..."""
        return self.name

    def submit_run(self, notebook, store: str | None, parameters: dict | None = None,
                   cli_params: list | None = None, param_files: list | None = None) -> dict:
        """Compile `notebook` and start one run of it there (returns once it is accepted):
        {"run_id": its id there, "url": where to watch it, "store": the store URL its steps write to,
        "flow": the flow's name, "listed_as": how `jupyter flow runs` will show its id}. Bad input raises
        FlowError before anything is sent."""
        raise NotImplementedError
