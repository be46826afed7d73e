"""Schedule the tasks of a run: readiness, parallelism, foreach fan-out, retries, timeouts, cache,
resume, cancel, heartbeat, and progress events for the CLI, the server and the widgets.

Everything is validated before the run exists in the store (bad input leaves nothing behind). The
runtime reads only task records (hashes and previews), never a value.
"""
from __future__ import annotations

import functools
import json
import os
import queue
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from . import analysis, stepbook
from ._version import __version__
from .dag import Flow, build_flow
from .errors import FlowError, failure_line
from .forkserver import modules_to_preload
from .kernels import warmup_code
from .store import Store, layout, open_store, records
from .store.layout import run_key, task_key
from .store.records import DONE, TERMINAL, current_user, find_run
from .task import TaskControl, now

HEARTBEAT_ENV = "JUPYTER_FLOW_HEARTBEAT"


def heartbeat_interval() -> float:
    return float(os.environ.get(HEARTBEAT_ENV, "5"))


def request_cancel(store: Store | str | None, run_id: str) -> dict:
    """Ask the process running `run_id` to stop it (works from any process that sees the store)."""
    store = open_store(store)
    run = find_run(store, run_id)
    if run.status == "running":
        store.write_json(layout.run_file(run.flow, run.id, "cancel"), {"requested": now(), "by": current_user()})
    return run


@dataclass
class Task:
    step: str
    index: int
    status: str = "queued"
    attempt: int = 0
    record: dict = field(default_factory=dict)
    control: TaskControl | None = None
    attempts: list = field(default_factory=list)


class Runner:
    def __init__(self, flow: Flow, parameters: dict, store: Store, executor, run_id: str | None = None,
                 no_cache: bool = False, on_event=None, origin: dict | None = None, from_step: str | None = None):
        self.flow, self.parameters, self.store, self.executor = flow, parameters, store, executor
        self.run_id = run_id or f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"
        self.key = run_key(flow.name, self.run_id)
        self.no_cache = no_cache
        self.on_event = on_event or (lambda event: None)
        self.origin = origin
        self.rerun = set(flow.downstream(from_step)) if from_step else set()
        self.cwd = str(flow.path.parent)
        self.tasks: dict[str, list[Task] | None] = {s: None for s in flow.steps}  # None: fan-out unknown yet
        self.done_q: queue.Queue = queue.Queue()
        self.cancel_reason: str | None = None
        self.stopping = False
        self.local = None  # a local executor for `executor:local` steps of a remote run
        self._last_beat = 0.0
        self.record = self._new_record()
        self.preload = modules_to_preload(c.source for c in flow.shared)
        self._prepare_pool(executor)

    def _prepare_pool(self, executor) -> None:
        """Kernels of this run import the store's driver while they boot, and the notebook's imports once."""
        if getattr(executor, "pool", None) is not None:
            executor.pool.warmup = warmup_code(self.store.url)
            executor.pool.preload = self.preload

    # -- the run record --------------------------------------------------------------------------
    def _new_record(self) -> dict:
        return {
            "id": self.run_id, "flow": self.flow.name, "status": "running", "user": current_user(),
            "host": socket.gethostname(), "pid": os.getpid(), "notebook": str(self.flow.path),
            "notebook_hash": None, "parameters": self.parameters, "created": now(), "ended": None,
            "duration": None, "heartbeat": now(), "heartbeat_interval": heartbeat_interval(), "metrics": {},
            "origin_run": self.origin["id"] if self.origin else None, "executor": self.executor.name,
            "version": __version__, "error": None, "warnings": self.flow.warnings,
            "steps": [{"name": s.name, "prev": s.prev, "foreach": s.foreach,
                       "options": {k: v for k, v in s.options.items() if k != "foreach"}}
                      for s in self.flow.steps.values()],
        }

    def _save_record(self) -> None:
        self.record["heartbeat"] = now()
        self._last_beat = time.monotonic()
        records.write_run(self.store, self.record)

    # -- main loop -------------------------------------------------------------------------------
    def begin(self) -> None:
        """Record the run (its notebook copy, then run.json): from here on, readers see it."""
        from .store.blobs import new_hash

        if self.record["notebook_hash"]:
            return
        raw = self.flow.path.read_bytes()
        h = new_hash()
        h.update(raw)
        self.record["notebook_hash"] = h.hexdigest()
        self.store.write_bytes(f"{self.key}/notebook.ipynb", raw)
        self._save_record()

    def run(self) -> str:
        """The scheduling loop. It runs in a thread of its own (see `launch`): a Ctrl-C reaches the
        thread that waits for the run, which calls `cancel`; it never interrupts the loop halfway."""
        self.begin()
        self.on_event({"type": "run", "run_id": self.run_id, "status": "running", "flow": self.flow.name})
        running: set[int] = set()
        try:
            while True:
                self._check_cancel()
                if self.cancel_reason:
                    self._stop_running()
                while not self.stopping:  # a cached task ends at once and may make others ready
                    ready = self._ready()
                    for task in ready:
                        self._start(task, running)
                    if all(t.status == "running" for t in ready):
                        break
                self._update_demand()  # after cache hits: kernels boot only for tasks that will run
                if not running:
                    break
                try:
                    item = self.done_q.get(timeout=0.5)
                except queue.Empty:
                    if time.monotonic() - self._last_beat > self.record["heartbeat_interval"]:
                        self._save_record()
                    continue
                if item is None:  # woken up by cancel()
                    continue
                task, record = item
                running.discard(id(task))
                self._finished(task, record, running)
        finally:
            self._close_executors()
        return self._finalize()

    def cancel(self, reason: str = "cancelled") -> None:
        """Stop the run, from any thread: nothing new starts, and the loop interrupts the running tasks
        (each takes its failure snapshot before its kernel is killed)."""
        self.cancel_reason = self.cancel_reason or reason
        self.stopping = True
        self.done_q.put(None)

    def _stop_running(self) -> None:
        for tasks in self.tasks.values():
            for task in tasks or []:
                if task.status == "running" and task.control:
                    task.control.stop(self.cancel_reason)

    def _check_cancel(self) -> None:
        if not self.cancel_reason and self.store.exists(f"{self.key}/cancel"):
            self.cancel("cancelled")

    def _close_executors(self) -> None:
        for executor in (self.executor, self.local):
            if executor is not None:
                executor.close()

    # -- readiness -------------------------------------------------------------------------------
    def _step_state(self, name: str) -> str:
        """done (downstream may run), blocked (it failed), or pending."""
        tasks = self.tasks[name]
        if tasks is None or any(t.status not in TERMINAL for t in tasks):
            return "pending"
        if all(t.status in DONE for t in tasks) or self.flow.steps[name].options.get("catch"):
            return "done"
        return "blocked"

    def _ready(self) -> list[Task]:
        ready = []
        for name, step in self.flow.steps.items():
            upstream = set(step.prev) | set(step.inputs.values())
            if not all(self._step_state(u) == "done" for u in upstream):
                continue
            if self.tasks[name] is None:
                try:
                    count = self._fan_out(name) if step.foreach else 1
                except FlowError as e:
                    error = {"type": "ForeachError", "message": str(e)}
                    self.tasks[name] = [Task(name, 0, status="failed", record={"error": error})]
                    self.record["error"] = {"step": name, "index": 0, "message": str(e)}
                    self.stopping = True
                    continue
                self.tasks[name] = [Task(name, i) for i in range(count)]
                if step.foreach:
                    self.on_event({"type": "foreach", "run_id": self.run_id, "step": name, "count": count})
            ready += [t for t in self.tasks[name] if t.status == "queued"]
        return ready

    def _fan_out(self, name: str) -> int:
        var = self.flow.steps[name].foreach["var"]
        producer = self.flow.steps[name].inputs.get(var)
        if producer is None:
            value = self.parameters.get(var)
            if not isinstance(value, (list, tuple)):
                raise FlowError(f"step {name!r}: foreach:{var} needs a list, but parameter {var} is {value!r}")
            return len(value)
        tasks = self.tasks[producer]
        if self.flow.steps[producer].foreach:
            return len(tasks)
        out = tasks[0].record.get("outputs", {}).get(var, {})
        if "length" not in out:
            raise FlowError(f"step {name!r}: foreach:{var} needs a list, but step {producer!r} made "
                            f"{var} a {out.get('type', 'missing value')}")
        return out["length"]

    def _update_demand(self) -> None:
        if not hasattr(self.executor, "set_demand"):
            return
        waiting: dict[str, int] = {}
        for name, step in self.flow.steps.items():
            kernel = step.options.get("kernel", self.flow.kernel)
            tasks = self.tasks[name]
            count = 1 if tasks is None else sum(t.status == "queued" for t in tasks)
            if self.stopping or self._doomed(name):
                count = 0
            waiting[kernel] = waiting.get(kernel, 0) + count
        for kernel, count in waiting.items():
            self.executor.set_demand(kernel, self.cwd, count)

    def _doomed(self, name: str) -> bool:
        @functools.cache  # one pass per call: a ladder DAG would otherwise revisit ancestors exponentially
        def doomed(n: str) -> bool:
            step = self.flow.steps[n]
            upstream = set(step.prev) | set(step.inputs.values())
            return any(self._step_state(u) == "blocked" or doomed(u) for u in upstream)

        return doomed(name)

    # -- starting a task -------------------------------------------------------------------------
    def _inputs(self, name: str) -> tuple[dict, dict]:
        """(refs for the kernel, metadata for task.json) of the names `name` reads."""
        refs, meta = {}, {}
        for var, producer in self.flow.steps[name].inputs.items():
            tasks = self.tasks[producer]
            outs = [t.record.get("outputs", {}).get(var) for t in tasks]
            if any(o is None for o in outs):
                bad = next(t for t, o in zip(tasks, outs) if o is None)
                why = (f"step {producer!r} failed ({bad.record.get('error', {}).get('message', '')}) and is "
                       "tagged catch" if bad.status not in DONE else f"step {producer!r} did not assign it")
                refs[var] = {"missing": why}
                meta[var] = {"missing": why}
            elif self.flow.steps[producer].foreach:
                refs[var] = {"hashes": [o["hash"] for o in outs]}
                meta[var] = {"hashes": refs[var]["hashes"], "type": "list", "length": len(outs),
                             "size": sum(o.get("size", 0) for o in outs), "preview": f"{len(outs)} values from {producer}"}
            else:
                refs[var] = {"hash": outs[0]["hash"]}
                meta[var] = outs[0]
        return refs, meta

    def _cache_key(self, name: str, index: int, refs: dict) -> str:
        from .store.blobs import new_hash

        step = self.flow.steps[name]
        payload = {
            "version": __version__, "kernel": step.options.get("kernel", self.flow.kernel),
            "code": [analysis.normalized(c.source) for c in self.flow.shared + step.cells],
            "inputs": refs,
            "params": {p: self.parameters.get(p, {"default": self.flow.parameters[p].source}) for p in step.params},
            "foreach": index if step.foreach else None,
        }
        h = new_hash()
        h.update(json.dumps(payload, sort_keys=True, default=repr).encode())
        return h.hexdigest()

    def _start(self, task: Task, running: set[int]) -> None:
        step = self.flow.steps[task.step]
        refs, meta = self._inputs(task.step)
        cache_key = self._cache_key(task.step, task.index, refs)
        reused = self._reuse(task, cache_key)
        if reused:
            self._finished(task, reused, running)
            return
        task.attempt += 1
        task.status = "running"
        task.control = TaskControl(step.options.get("timeout"))
        spec = self.task_spec(task, refs, meta, cache_key)
        self.on_event({"type": "task", "run_id": self.run_id, "step": task.step, "index": task.index,
                       "status": "running", "attempt": task.attempt})
        future = self._executor_for(step).submit(spec, task.control)
        running.add(id(task))
        future.add_done_callback(lambda f, t=task: self.done_q.put((t, _result(f, t))))

    def task_spec(self, task: Task, refs: dict, meta: dict, cache_key: str | None) -> dict:
        """Everything an executor needs to run `task` (plain data: JSON- and pickle-able)."""
        step = self.flow.steps[task.step]
        needed: dict[str, list[str]] = {}
        for s in self.flow.steps.values():
            for var, producer in s.inputs.items():
                if producer == task.step:
                    needed.setdefault(var, []).append(s.name)
        kernel = step.options.get("kernel", self.flow.kernel)
        return {
            "store": self.store.url, "flow": self.flow.name, "run_id": self.run_id, "step": task.step,
            "index": task.index, "attempt": task.attempt, "attempts": task.attempts, "kernel": kernel,
            "cwd": self.cwd, "preload": self.preload, "timeout": step.options.get("timeout"), "limit": step.options.get("limit", {}),
            "parameters": self.parameters,
            "input_meta": meta, "cache_key": cache_key, "executor": self._executor_for(step).name,
            "foreach": ({**step.foreach, "index": task.index} if step.foreach else None),
            "stepbook": stepbook.build(self.flow, step, self.run_id, task.index),
            "ends_notebook": task.step == list(self.flow.notebook.steps)[-1],  # no step follows it in the notebook
            "kernel_spec": {
                "store": self.store.url, "run_id": self.run_id, "step": task.step, "index": task.index,
                "inputs": refs, "writes": step.writes, "needed": needed, "metrics": step.metrics,
                "verify": step.verify,
                "foreach": ({**step.foreach, "index": task.index} if step.foreach else None),
            },
        }

    def _executor_for(self, step):
        if step.options.get("executor") == "local" and self.executor.name != "local":
            if self.local is None:
                from .executors.local import LocalExecutor

                self.local = LocalExecutor()
                self._prepare_pool(self.local)
            return self.local
        return self.executor

    def _reuse(self, task: Task, cache_key: str) -> dict | None:
        """A finished record of an earlier task with this key (resume origin first, then the cache)."""
        step = self.flow.steps[task.step]
        if task.step in self.rerun:
            return None
        candidates = []
        if self.origin:
            candidates.append(("reused", task_key(self.flow.name, self.origin["id"], task.step, task.index)))
        if not self.no_cache and step.options.get("cache", True):
            try:
                hit = self.store.read_json(layout.cache_entry(cache_key))
                candidates.append(("cached", task_key(hit["flow"], hit["run_id"], hit["step"], hit["index"])))
            except (FlowError, KeyError, TypeError):
                pass
        for status, key in candidates:
            try:
                old = self.store.read_json(f"{key}/task.json")
            except FlowError:
                continue
            if old.get("cache_key") != cache_key or old.get("status") not in DONE:
                continue
            if not all(self.store.blob_ok(o["hash"]) for o in old.get("outputs", {}).values()):
                continue  # a value is gone or corrupt: run the task again, which rewrites it
            origin = old.get("origin") or {"run_id": old["run_id"], "flow": old["flow"], "step": old["step"],
                                           "index": old["index"], "key": key}
            record = dict(old, run_id=self.run_id, flow=self.flow.name, step=task.step, index=task.index,
                          status=status, origin=origin, started=now(), ended=now(), duration=0.0, attempt=0,
                          attempts=[], cache_key=cache_key, notebook=f"{origin['key']}/output.ipynb")
            records.write_task(self.store, record)
            return record
        return None

    # -- a task ended ----------------------------------------------------------------------------
    def _finished(self, task: Task, record: dict, running: set[int]) -> None:
        step = self.flow.steps[task.step]
        task.record = record
        status = record["status"]
        if status in ("failed", "timed_out") and not self.stopping and task.attempt <= step.options.get("retry", 0):
            task.attempts = task.attempts + [{k: record.get(k) for k in ("attempt", "status", "error", "started",
                                                                         "ended", "duration")}]
            self.on_event({"type": "task", "run_id": self.run_id, "step": task.step, "index": task.index,
                           "status": "retrying", "attempt": task.attempt, "error": record.get("error")})
            task.status = "queued"
            self._start(task, running)
            return
        task.status = status
        if status == "succeeded" and record.get("cache_key"):
            self.store.write_json(layout.cache_entry(record["cache_key"]), {
                "flow": self.flow.name, "run_id": self.run_id, "step": task.step, "index": task.index})
        if status not in DONE and not step.options.get("catch") and not self.stopping:
            self.stopping = True
            self.record["error"] = {"step": task.step, "index": task.index,
                                    "message": failure_line(record.get("error")) if record.get("error") else status}
        self.record["metrics"].update(record.get("metrics") or {})
        self.on_event({"type": "task", "run_id": self.run_id, "step": task.step, "index": task.index,
                       "status": status, "attempt": task.attempt, "duration": record.get("duration"),
                       "error": record.get("error"), "origin": record.get("origin")})
        self._save_record()

    def _finalize(self) -> str:
        if self.cancel_reason:
            status = "cancelled"
        elif self.record["error"]:
            status = "failed"
        elif all(self.tasks[s] is not None and self._step_state(s) == "done" for s in self.flow.steps):
            status = "succeeded"
        else:
            status = "failed"
        self.record.update(status=status, ended=now())
        start = datetime.fromisoformat(self.record["created"])
        self.record["duration"] = round((datetime.now(timezone.utc) - start).total_seconds(), 3)
        self._save_record()
        self.on_event({"type": "run", "run_id": self.run_id, "status": status, "error": self.record["error"]})
        return status


def _result(future, task: Task) -> dict:
    try:
        return future.result()
    except BaseException as e:  # noqa: BLE001 - an executor failure is a task failure
        return {**task.record, "status": "failed", "run_id": None,
                "error": {"type": e.__class__.__name__, "message": f"the executor failed to run the task: {e}"}}


# -- the doors: prepare (validate everything), then run --------------------------------------------
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
            no_cache=False, on_event=None, cli_params=None, param_files=None, origin=None, from_step=None) -> Runner:
    """Validate everything a run needs and return its Runner; raises FlowError and writes nothing."""
    from .executors import make_executor
    from .kernels import check_kernelspecs
    from .params import resolve

    path = Path(notebook_path)
    flow = build_flow(path)
    if from_step is not None:
        flow.step(from_step)
    values = resolve(flow, parameters, cli_params, param_files)
    check_kernelspecs(flow)
    store = open_store(store)
    store.check_writable()
    runner_executor = make_executor(executor, max_workers=max_workers, scheduler=scheduler)
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
    from .params import load_file

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
