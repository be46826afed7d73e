"""The Python door: run or resume a notebook and get a `Run` back (blocking)."""
from __future__ import annotations

from . import runtime
from .client import Run


def run(notebook, parameters: dict | None = None, store=None, executor: str = "local", scheduler: str | None = None,
        max_workers: int | None = None, no_cache: bool = False, on_event=None) -> Run:
    """Run a tagged notebook as a pipeline and return the finished `Run` (check `run.status`)."""
    handle = runtime.start_run(notebook, background=False, parameters=parameters, store=store, executor=executor,
                               scheduler=scheduler, max_workers=max_workers, no_cache=no_cache, on_event=on_event)
    return Run(handle.run_id, handle.store)


def resume(run_id: str, parameters: dict | None = None, from_step: str | None = None, store=None,
           executor: str = "local", scheduler: str | None = None, max_workers: int | None = None,
           notebook=None, on_event=None) -> Run:
    """Resume a failed run: reuse its finished steps, run the failed one and what follows again."""
    handle = runtime.resume_run(run_id, store=store, parameters=parameters, from_step=from_step,
                                notebook_path=notebook, background=False, executor=executor, scheduler=scheduler,
                                max_workers=max_workers, on_event=on_event)
    return Run(handle.run_id, handle.store)
