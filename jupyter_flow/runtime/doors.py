"""The doors: prepare a run (validate everything, write nothing), start or resume it, wait for it."""
from __future__ import annotations

import threading
from pathlib import Path

from ..dag import build_flow
from ..errors import FlowError
from ..store import open_store
from ..store.records import find_run
from .loop import Runner


class RunHandle:
    def __init__(self, runner: Runner, thread: threading.Thread | None):
        self.runner = runner
        self.run_id = runner.run_id
        self.store = runner.store
        self._thread = thread
        self._finished = threading.Event()  # not Thread.join: a Ctrl-C during join breaks is_alive()
        self.status = "running"

    def wait(self, timeout: float | None = None) -> str:
        self._finished.wait(timeout)
        return self.status

    def join(self, on_interrupt=None, patience: int = 3) -> str:
        """Wait for the run to end. A Ctrl-C (KeyboardInterrupt) cancels the run and goes on waiting
        while its tasks save their state; the `patience`-th Ctrl-C stops waiting (re-raised)."""
        interrupts = 0
        while not self._finished.is_set():
            try:
                self._finished.wait(1.0)
            except KeyboardInterrupt:
                interrupts += 1
                self.cancel()
                if interrupts >= patience:
                    raise
                if on_interrupt:
                    on_interrupt(interrupts, patience)
        return self.status

    @property
    def done(self) -> bool:
        return self._finished.is_set()

    def cancel(self) -> None:
        self.runner.cancel("cancelled")


def prepare(notebook_path, parameters=None, store=None, executor="local", scheduler=None, max_workers=None,
            no_cache=False, on_event=None, cli_params=None, param_files=None, origin=None, from_step=None,
            executor_options=None) -> Runner:
    """Validate everything a run needs and return its Runner; raises FlowError and writes nothing."""
    from ..executors import executor_class, make_executor
    from ..kernels import check_kernelspecs
    from ..params import resolve

    path = Path(notebook_path)
    flow = build_flow(path)
    if from_step is not None:
        flow.step(from_step)
    values = resolve(flow, parameters, cli_params, param_files)
    check_kernelspecs(flow)
    if isinstance(executor, str):
        executor_class(executor)  # an unknown name fails before anything is touched
    store = open_store(store)
    store.check_writable()
    runner_executor = make_executor(executor, max_workers=max_workers, scheduler=scheduler, **(executor_options or {}))
    return Runner(flow, values, store, runner_executor, no_cache=no_cache, on_event=on_event, origin=origin,
                  from_step=from_step)


def start_run(notebook_path, *, background: bool = True, **options) -> RunHandle:
    """Validate (FlowError on bad input), then run the notebook; in a background thread by default."""
    return launch(prepare(notebook_path, **options), background)


def prepare_resume(run_id: str, store=None, parameters=None, from_step=None, notebook_path=None,
                   param_files=None, **options) -> Runner:
    """A run of the origin's notebook (as it is now) that reuses the origin's finished tasks whose
    code and inputs are unchanged; the failed task and everything downstream run again."""
    store = open_store(store)
    origin = find_run(store, run_id)
    if origin.status == "damaged":
        raise FlowError(f"run {origin.id} cannot be resumed: {origin.damaged}; `jupyter flow fsck` lists damaged "
                        "runs; start a new one with `jupyter flow run`")
    if origin.status == "running":
        raise FlowError(f"run {origin.id} is still running; wait for it or `jupyter flow cancel {origin.id}`")
    path = notebook_path or origin.notebook
    if not Path(path).exists():
        raise FlowError(f"the notebook of run {origin.id} is gone ({path}); pass its new path with --notebook")
    from ..params import load_file

    given = dict(origin.parameters)  # then -f files, then `parameters`, then -p pairs (as for a run)
    for path_ in param_files or []:
        given.update(load_file(path_))
    given.update(parameters or {})
    return prepare(path, parameters=given, store=store, origin=origin.to_dict(), from_step=from_step, **options)


def resume_run(run_id: str, *, background: bool = True, **options) -> RunHandle:
    return launch(prepare_resume(run_id, **options), background)


def launch(runner: Runner, background: bool = True) -> RunHandle:
    """Run a prepared Runner in a thread of its own. background=True returns at once; otherwise this
    thread waits for the end, and a Ctrl-C in it cancels the run cleanly (see RunHandle.join)."""
    handle = RunHandle(runner, None)
    runner.begin()  # the run exists in the store when this returns

    def target():
        try:
            handle.status = runner.run()
        except BaseException:
            handle.status = "crashed"
            raise
        finally:
            handle._finished.set()

    handle._thread = threading.Thread(target=target, name=f"jupyter-flow-run-{runner.run_id}", daemon=True)
    handle._thread.start()
    if not background:
        handle.join()
    return handle
