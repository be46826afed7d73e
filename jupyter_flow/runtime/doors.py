"""The doors: prepare a run (validate everything, write nothing), start or resume it, wait for it."""
from __future__ import annotations

import threading
from pathlib import Path

from jupyter_flow.errors import FlowError, NotFound
from jupyter_flow.execution.secrets import refuse_parameters
from jupyter_flow.executors import executor_class, make_executor
from jupyter_flow.flow import several
from jupyter_flow.flow.dag import Flow, build_flow
from jupyter_flow.flow.kernelspecs import check_kernelspecs
from jupyter_flow.flow.params import given_values, load_file, overrides, replace_injected, resolve
from jupyter_flow.runtime.loop import Runner
from jupyter_flow.store import layout, open_store
from jupyter_flow.store.records import find_run, list_tasks, read_run, read_task_at, run_ids
from jupyter_flow.store.status import Status


class RunHandle:
    def __init__(self, runner: Runner, thread: threading.Thread | None):
        self.runner = runner
        self.run_id = runner.run_id
        self.store = runner.store
        self._thread = thread
        self._finished = threading.Event()  # not Thread.join: a Ctrl-C during join breaks is_alive()
        self.status = Status.RUNNING

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
        self.runner.cancel(Status.CANCELLED)


def prepare(notebook_path, parameters=None, store=None, executor="local", scheduler=None, max_workers=None,
            no_cache=False, on_event=None, cli_params=None, param_files=None, origin=None, from_step=None,
            executor_options=None, kernel_name=None, cwd=None, from_start=False, with_=()) -> Runner:
    """Validate everything a run needs and return its Runner; raises FlowError and writes nothing.
    kernel_name: the notebook's kernel for every step without a `kernel:` tag (papermill's -k); cwd:
    where the kernels run (papermill's --cwd; default the notebook's folder); with_: more notebooks of
    the flow (`--with`; see flow/several.py)."""
    path = Path(notebook_path)
    if isinstance(executor, str):
        executor_class(executor)  # an unknown name fails before anything is touched
    if cwd is not None and not Path(cwd).is_dir():
        raise FlowError(f"--cwd {cwd}: no such folder; create it or give another")
    nb = several.read(path, with_)  # a bad notebook (or a missing --with one) fails before the store is touched
    raw = nb.raw
    refuse_parameters(given_values(parameters, cli_params, param_files), nb.secrets)  # nor is a secret parameter
    store = open_store(store)
    store.check_writable()  # a read-only or unreachable store refuses before anything of it is read
    flow = flow_with_history(path, store, raw=raw, with_=with_)
    if parameters or cli_params or param_files:
        flow = replace_injected(flow, lambda raw: flow_with_history(path, store, raw=raw, with_=with_))
    if kernel_name:
        flow.kernel = kernel_name
    if from_step is not None:
        flow.step(from_step)
    injected = overrides(flow, parameters, cli_params, param_files)  # what papermill would inject
    values = {**resolve(flow), **injected}
    check_kernelspecs(flow)
    runner_executor = make_executor(executor, max_workers=max_workers, scheduler=scheduler, **(executor_options or {}))
    return Runner(flow, values, store, runner_executor, no_cache=no_cache, on_event=on_event, origin=origin,
                  from_step=from_step, cwd=str(Path(cwd).resolve()) if cwd is not None else None, injected=injected,
                  from_start=from_start)


def flow_with_history(path, store=None, raw: dict | None = None, with_=()) -> Flow:
    """The notebook's Flow (joined with the notebooks `with_` names), its file edges completed by what
    its steps read and wrote in the last run of this notebook in `store` (see last_files); without a
    store, from the code alone."""
    nb = several.read(path, with_) if raw is None else several.parse(raw, Path(path), with_)
    history = last_files(open_store(store), nb.name, Path(path).resolve()) if store is not None else None
    return build_flow(path, nb.raw, history=history, with_=with_)


def last_files(store, flow: str, notebook_path: Path) -> dict:
    """{step: {"read": [PATH], "written": [PATH]}}: the files each step read, and wrote or removed, in
    the newest run of this notebook (`flow` at `notebook_path`) that is not running; a reused task's
    come from the task it reused. Reads that run's task records only; {} when there is none."""
    try:
        run = next((r for r in _newest_runs(store, flow, 10)
                    if r.notebook == str(notebook_path) and r.status not in (Status.RUNNING, Status.DAMAGED)), None)
        history: dict[str, dict[str, list]] = {}
        for task in list_tasks(store, run) if run else []:
            files = task.get("files")
            if not files and task.origin and task.origin.get("key"):
                files = read_task_at(store, layout.in_task(task.origin["key"], layout.TASK_RECORD)).get("files")
            files = files if isinstance(files, dict) else {}
            mine = history.setdefault(task.step, {"read": [], "written": []})
            mine["read"] += [p for p in files.get("read") or () if p not in mine["read"]]
            written = list(files.get("written") or ()) + list(files.get("removed") or ())
            mine["written"] += [p for p in written if p not in mine["written"]]
        return history
    except (FlowError, ValueError, TypeError):  # StoreError and NotFound are FlowErrors
        return {}  # no history: the edges come from the code alone


def _newest_runs(store, flow: str, limit: int):
    """The flow's `limit` newest runs (effective status), each read from its run.json as it is reached: the
    first is nearly always the one last_files wants. (A listing would read the index file of up to 256
    runs' records: 9-13 ms of every run's start at 150 runs.)"""
    for run_id in [r for r in run_ids(store, flow) if layout.RUN_ID.match(r)][:limit]:
        try:
            yield read_run(store, layout.run_json(flow, run_id)).with_effective_status()
        except NotFound:
            continue  # removed meanwhile, or its run.json is not written yet


def start_run(notebook_path, *, background: bool = True, **options) -> RunHandle:
    """Validate (FlowError on bad input), then run the notebook; in a background thread by default."""
    return launch(prepare(notebook_path, **options), background)


def prepare_resume(run_id: str, store=None, parameters=None, from_step=None, notebook_path=None,
                   param_files=None, **options) -> Runner:
    """A run of the origin's notebook (as it is now) that reuses the origin's finished tasks whose
    code and inputs are unchanged; the failed task and everything downstream run again, the failed
    task from its failing cell when that is sound (see continuing.py; `from_start=True` to not)."""
    store = open_store(store)
    origin = find_run(store, run_id)
    if origin.status == Status.DAMAGED:
        raise FlowError(f"run {origin.id} cannot be resumed: {origin.damaged}; `jupyter flow fsck` lists damaged "
                        "runs; start a new one with `jupyter flow run`")
    if origin.status == Status.RUNNING:
        raise FlowError(f"run {origin.id} is still running; wait for it or `jupyter flow cancel {origin.id}`")
    path = notebook_path or origin.notebook
    if not Path(path).exists():
        raise FlowError(f"the notebook of run {origin.id} is gone ({path}); pass its new path with --notebook")
    options.setdefault("with_", joined_notebooks(origin, path))
    # the origin's values but its defaults: a default is not injected
    defaults = resolve(build_flow(path, with_=options["with_"]))
    given = {n: v for n, v in origin.parameters.items()
             if not (n in defaults and type(v) is type(defaults[n]) and v == defaults[n])}
    # then -f files, then `parameters`, then -p pairs (as for a run)
    for path_ in param_files or []:
        given.update(load_file(path_))
    given.update(parameters or {})
    return prepare(path, parameters=given, store=store, origin=origin.to_dict(), from_step=from_step, **options)


def joined_notebooks(origin, path) -> list[str]:
    """The notebooks besides the first one that the run `origin` joined (its steps record each one's
    notebook, relative to the first one's folder when inside it): a resume joins them again."""
    folder, first = Path(path).parent, Path(path).name
    labels = dict.fromkeys((s.get("options") or {}).get("notebook") for s in origin.steps)
    return [str(folder / label) for label in labels if label and label != first]


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
            handle.status = Status.CRASHED
            raise
        finally:
            handle._finished.set()

    handle._thread = threading.Thread(target=target, name=f"jupyter-flow-run-{runner.run_id}", daemon=True)
    handle._thread.start()
    if not background:
        handle.join()
    return handle
