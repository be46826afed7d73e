"""The Python door: run or resume a notebook and get a `Run` back; `execute_notebook`, papermill's.

In a notebook (a Jupyter kernel) the run shows as a live widget (see `widgets.LiveRun`) while it goes.
"""
from __future__ import annotations

from jupyter_flow import runtime
from jupyter_flow.errors import FlowError
from jupyter_flow.readers import papermill_output as pm
from jupyter_flow.readers.client import Run
from jupyter_flow.store.status import Status
from jupyter_flow.ui.widgets import LiveRun, widget_frontend


def run(notebook, parameters: dict | None = None, store=None, executor: str = "local", scheduler: str | None = None,
        max_workers: int | None = None, no_cache: bool = False, on_event=None, wait: bool = True,
        view: bool | None = None, executor_options: dict | None = None, kernel_name: str | None = None,
        cwd=None, with_: list | tuple = ()) -> Run:
    """Run a tagged notebook as a pipeline and return the finished `Run` (check `run.status`).
    with_: more notebooks joined into one flow with it (the CLI's --with; see README "One flow across notebooks").

    wait=False returns the `Run` at once (`run.wait()` blocks until it ends). view: show the live
    widget (default: when called in a Jupyter kernel). executor_options: passed to the executor.
    kernel_name: the kernel of every step without a `kernel:` tag, instead of the notebook's (papermill's
    kernel_name); cwd: where the kernels run (default: the notebook's folder)."""
    runner = runtime.prepare(notebook, parameters=parameters, store=store, executor=executor, scheduler=scheduler,
                             max_workers=max_workers, no_cache=no_cache, on_event=on_event,
                             executor_options=executor_options, kernel_name=kernel_name, cwd=cwd, with_=with_)
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


def execute_notebook(input_path, output_path, parameters: dict | None = None, engine_name=None,
                     request_save_on_cell_execute=True, prepare_only: bool = False, kernel_name: str | None = None,
                     language: str | None = None, progress_bar=True, log_output: bool = False, stdout_file=None,
                     stderr_file=None, start_timeout=60, report_mode: bool = False, cwd=None, **options):
    """`papermill.execute_notebook`, as a tracked pipeline: the same keywords with the same meaning,
    the same output notebook (written once, when the run ends), and the same
    `PapermillExecutionError` when a cell raises. `engine_name`, `start_timeout` and `execution_timeout`
    take only papermill's defaults. Other keyword arguments go to `jupyter_flow.run` (store, executor,
    max_workers, no_cache...)."""
    pm.check_options(dict(engine_name=engine_name, start_timeout=start_timeout, **options))
    for name in (*pm.NO_EFFECT, *pm.CANNOT_APPLY):
        options.pop(name, None)
    input_path, output_path = pm.paths(input_path, output_path, parameters)
    if output_path is not None:
        pm.check_output(output_path)
    with pm.local_notebook(input_path) as path:
        if prepare_only:
            return pm.prepare_notebook(path, output_path, parameters, report_mode=report_mode,
                                       kernel_name=kernel_name, language=language)
        if log_output:
            options["on_event"] = pm.log_outputs(options.get("store"), options.get("on_event"))
        result = run(path, parameters=parameters, kernel_name=kernel_name, cwd=cwd,
                     view=None if progress_bar else False, **options)
    nb, error = pm.merge(result.store, result.id, parameters, input_path, output_path, report_mode, kernel_name,
                         language)
    pm.write(nb, output_path, stdout_file, stderr_file)
    if error is not None:
        raise error
    if result.status != Status.SUCCEEDED:
        raise FlowError(f"run {result.id} {result.status}: {(result.error or {}).get('message', '')}")
    return nb
