"""The Python door: run or resume a notebook and get a `Run` back.

In a notebook (a Jupyter kernel) the run shows as a live widget (see `widgets.LiveRun`) while it goes.
"""
from __future__ import annotations

from jupyter_flow import runtime
from jupyter_flow.readers.client import Run


def run(notebook, parameters: dict | None = None, store=None, executor: str = "local", scheduler: str | None = None,
        max_workers: int | None = None, no_cache: bool = False, on_event=None, wait: bool = True,
        view: bool | None = None, executor_options: dict | None = None, kernel_name: str | None = None,
        cwd=None) -> Run:
    """Run a tagged notebook as a pipeline and return the finished `Run` (check `run.status`).

    wait=False returns the `Run` at once (`run.wait()` blocks until it ends). view: show the live
    widget (default: when called in a Jupyter kernel). executor_options: passed to the executor.
    kernel_name: the kernel of every step without a `kernel:` tag, instead of the notebook's (papermill's
    kernel_name); cwd: where the kernels run (default: the notebook's folder)."""
    from jupyter_flow.ui.widgets import LiveRun, widget_frontend

    runner = runtime.prepare(notebook, parameters=parameters, store=store, executor=executor, scheduler=scheduler,
                             max_workers=max_workers, no_cache=no_cache, on_event=on_event,
                             executor_options=executor_options, kernel_name=kernel_name, cwd=cwd)
    live = LiveRun(runner) if (widget_frontend() if view is None else view) else None
    if live is not None:
        runner.on_event = _both(live.event, on_event)
    handle = runtime.launch(runner, background=True)
    if live is not None:
        live.start(handle)
    if not wait:
        return Run(handle.run_id, handle.store, handle=handle)
    handle.join()  # Ctrl-C, or the notebook's Interrupt button, cancels the run cleanly (RunHandle.join)
    return Run(handle.run_id, handle.store)


def _both(first, second):
    return first if second is None else lambda event: (first(event), second(event))


def resume(run_id: str, parameters: dict | None = None, from_step: str | None = None, store=None,
           executor: str = "local", scheduler: str | None = None, max_workers: int | None = None,
           notebook=None, on_event=None, from_start: bool = False) -> Run:
    """Resume a failed run: reuse its finished steps, run the failed one (from its failing cell, when
    that gives a full rerun's values; from its first with from_start=True) and what follows again."""
    handle = runtime.resume_run(run_id, store=store, parameters=parameters, from_step=from_step,
                                notebook_path=notebook, background=False, executor=executor, scheduler=scheduler,
                                max_workers=max_workers, on_event=on_event, from_start=from_start)
    return Run(handle.run_id, handle.store)
