"""The scheduling loop of one run: start ready tasks, retry, time out, cancel, heartbeat, and the
progress events for the CLI, the server and the widgets. It reads only task records (hashes and
previews), never a value; which tasks are ready is `Readiness`'s, what a task gets is `Specs`'s."""
from __future__ import annotations

import os
import queue
import socket
import time
from datetime import datetime, timezone
from secrets import token_hex

from jupyter_flow._version import __version__
from jupyter_flow.errors import FlowError, failure_line
from jupyter_flow.execution import secrets
from jupyter_flow.execution.task import TaskControl, now
from jupyter_flow.flow.dag import Flow
from jupyter_flow.runtime import continuing, reuse
from jupyter_flow.runtime.races import Races
from jupyter_flow.runtime.readiness import Readiness, Task
from jupyter_flow.runtime.spec import Specs
from jupyter_flow.speed.forkserver import modules_to_preload
from jupyter_flow.store import Store, layout, records
from jupyter_flow.store.blobs import new_hash
from jupyter_flow.store.layout import run_key, time_id
from jupyter_flow.store.records import current_user
from jupyter_flow.store.status import DONE, Status

HEARTBEAT_ENV = "JUPYTER_FLOW_HEARTBEAT"


def heartbeat_interval() -> float:
    return float(os.environ.get(HEARTBEAT_ENV, "5"))


class Runner:
    def __init__(self, flow: Flow, parameters: dict, store: Store, executor, run_id: str | None = None,
                 no_cache: bool = False, on_event=None, origin: dict | None = None, from_step: str | None = None,
                 cwd: str | None = None, injected: dict | None = None, from_start: bool = False):
        self.flow, self.parameters, self.store, self.executor = flow, parameters, store, executor
        self.run_id = run_id or time_id(token_hex(3))
        self.key = run_key(flow.name, self.run_id)
        self.no_cache = no_cache
        self.on_event = on_event or (lambda event: None)
        self.origin = origin
        self.from_start = from_start  # a resumed failed step runs from its first cell, not its failing one
        self.cwd = str(cwd or flow.path.parent)  # where the kernels run (papermill's --cwd)
        self.cache = reuse.Cache(store, flow, self.run_id, self.cwd, origin, no_cache, from_step)
        self.readiness = Readiness(flow)
        self.tasks = self.readiness.tasks
        self.done_q: queue.Queue = queue.Queue()
        self.cancel_reason: str | None = None
        self.stopping = False
        self.local = None  # a local executor for `executor:local` steps of a remote run
        self._last_beat = 0.0
        self.record = self._new_record()
        self.preload = modules_to_preload(c.source for c in flow.shared)
        self.specs = Specs(flow, store.url, self.run_id, parameters, self.cwd, self.preload, self.tasks, injected)
        self.races = Races(flow, self.tasks)
        self.envs = None  # `pip:` environments built here, started by `run` (on Dask, workers build them)
        self.env_wait: list[Task] = []  # ready tasks whose environment is still being built

    # -- the run record --------------------------------------------------------------------------
    def _new_record(self) -> records.RunRecord:
        return records.RunRecord(
            id=self.run_id, flow=self.flow.name, status=Status.RUNNING, user=current_user(),
            host=socket.gethostname(), pid=os.getpid(), notebook=str(self.flow.path),
            parameters=self.parameters, created=now(), heartbeat=now(), heartbeat_interval=heartbeat_interval(),
            origin_run=self.origin["id"] if self.origin else None, executor=self.executor.name,
            version=__version__, warnings=self.flow.warnings,
            steps=[{"name": s.name, "prev": s.prev, "foreach": s.foreach,
                    "options": {k: v for k, v in s.options.items() if k != "foreach"}}
                   for s in self.flow.steps.values()],
        )

    def _save_record(self) -> None:
        self.record["heartbeat"] = now()
        self._last_beat = time.monotonic()
        records.write_run(self.store, self.record)

    def _beat_due(self) -> bool:
        return time.monotonic() - self._last_beat > self.record["heartbeat_interval"]

    # -- main loop -------------------------------------------------------------------------------
    def begin(self) -> None:
        """Record the run (its notebook copy, then run.json): from here on, readers see it. The copy
        keeps no secret (see secrets.py) printed in the outputs the user saved."""
        if self.record["notebook_hash"]:
            return
        raw = self.flow.path.read_bytes()
        h = new_hash()
        h.update(raw)
        self.record["notebook_hash"] = h.hexdigest()
        clean = secrets.current(self.flow.notebook.secrets).scrub_document(raw.decode(errors="surrogateescape"), True)
        notebook = layout.run_file(self.flow.name, self.run_id, layout.RUN_NOTEBOOK)
        self.store.write_bytes(notebook, clean.encode(errors="surrogateescape"))
        self._save_record()

    def run(self) -> str:
        """The scheduling loop. It runs in a thread of its own (see `launch`): a Ctrl-C reaches the
        thread that waits for the run, which calls `cancel`; it never interrupts the loop halfway."""
        self.begin()
        self.on_event({"type": "run", "run_id": self.run_id, "status": Status.RUNNING, "flow": self.flow.name})
        self._build_envs()
        running: set[int] = set()
        try:
            while True:
                self._check_cancel()
                if self.cancel_reason:
                    self._stop_running()
                self._start_ready(running)
                self._update_demand()  # after cache lookups: kernels boot only for tasks that will run
                if not running and (self.stopping or not self.env_wait):
                    break
                try:
                    item = self.done_q.get(timeout=0.5)
                except queue.Empty:
                    item = None
                if item is not None:  # None: a timeout, or woken up by cancel()
                    task, record = item
                    running.discard(id(task))
                    self._finished(task, record, running)
                if self._beat_due():
                    self._save_record()
        finally:
            self._close_executors()
        return self._finalize()

    def _start_ready(self, running: set[int]) -> None:
        """Start every ready task; a cached one ends at once and may make more ready."""
        ready = self.readiness
        built = [t for t in self.env_wait if self._env_ready(t.step)]
        for task in built:
            self.env_wait.remove(task)
            ready.enqueue(task)
        while not self.stopping and (ready.ready or ready.queued):
            if ready.ready:
                self._make_tasks(ready.ready.popleft())
            else:
                task = ready.next_task()
                if self._env_ready(task.step):
                    self._start(task, running)
                else:
                    self.env_wait.append(task)  # the builder wakes the loop when its environment is there

    # -- per-step environments (`pip:` tags) -----------------------------------------------------
    def _build_envs(self) -> None:
        """Start building the environments of `pip:` steps that run here, while upstream steps run; for
        those a worker builds (Dask), resolve their versions here, for their cache keys."""
        def here(s) -> bool:
            return self.executor.name == "local" or s.options.get("executor") == "local"

        pip = [s for s in self.flow.steps.values() if "pip" in s.options]
        if pip:
            from jupyter_flow.execution.envs import Builder  # lazy: envs loads importlib.metadata (40 ms); pip: only

            self.envs = Builder([s.options["pip"] for s in pip if here(s)], on_ready=lambda: self.done_q.put(None),
                                resolve_sets=[s.options["pip"] for s in pip if not here(s)])

    def _env_ready(self, name: str) -> bool:
        pip = self.flow.steps[name].options.get("pip")
        return self.envs is None or pip is None or self.envs.ready(pip)

    def _packages(self, name: str) -> list | None:
        """For the cache key: a `pip:` step's requirements and the versions they resolved to here."""
        pip = self.flow.steps[name].options.get("pip")
        return pip and [pip, self.envs and self.envs.packages(pip)]

    def cancel(self, reason: str = Status.CANCELLED) -> None:
        """Stop the run, from any thread: nothing new starts, and the loop interrupts the running tasks
        (each takes its failure snapshot before its kernel is killed)."""
        self.cancel_reason = self.cancel_reason or reason
        self.stopping = True
        self.done_q.put(None)

    def _stop_running(self) -> None:
        for tasks in self.tasks.values():
            for task in tasks or []:
                if task.status == Status.RUNNING and task.control:
                    task.control.stop(self.cancel_reason)

    def _check_cancel(self) -> None:
        if not self.cancel_reason and self.store.exists(layout.run_file(self.flow.name, self.run_id, layout.CANCEL)):
            self.cancel(Status.CANCELLED)

    def _close_executors(self) -> None:
        for executor in (self.executor, self.local):
            if executor is not None:
                executor.close()

    # -- readiness -------------------------------------------------------------------------------
    def _make_tasks(self, name: str) -> None:
        step = self.flow.steps[name]
        try:
            count = self._fan_out(name) if step.foreach else 1
        except FlowError as e:
            self.record["error"] = {"step": name, "index": 0, "message": str(e)}
            self.stopping = True
            self.readiness.add_tasks(name, [Task(name, 0, status=Status.FAILED,
                                                 record={"error": {"type": "ForeachError", "message": str(e)}})])
            return
        self.readiness.add_tasks(name, [Task(name, i) for i in range(count)])
        if step.foreach:
            self.on_event({"type": "foreach", "run_id": self.run_id, "step": name, "count": count})

    def _fan_out(self, name: str) -> int:
        return self.specs.fan_out(name, self.tasks)

    def _update_demand(self) -> None:
        """Hint the executor how many kernels of each kind its tasks will want (a few calls per loop)."""
        for kernel, count in self.readiness.waiting().items():
            if kernel is None:  # `pip:` steps start their own kernel in their environment
                continue
            self.executor.want_kernels(kernel, self.cwd, 0 if self.stopping else count, store=self.store.url,
                                       preload=self.preload)

    # -- starting a task -------------------------------------------------------------------------
    def _start(self, task: Task, running: set[int]) -> None:
        step = self.flow.steps[task.step]
        refs, meta, parts, key, decision = self.decide(task)
        reused = decision.old and self.cache.take(self.run_id, task.step, task.index, decision, parts, key)
        if reused:
            self._finished(task, reused, running)
            return
        task.attempt += 1
        task.status = Status.RUNNING
        task.control = TaskControl(step.options.get("timeout"))
        spec = self.task_spec(task, refs, meta, parts, key, decision.reason)
        note = None
        if self.origin and task.attempt == 1:
            cont, why = continuing.plan(self.store, self.flow, self.origin, task.step, task.index, parts, self.cwd)
            if cont and not self.from_start:
                spec = continuing.apply(spec, cont, self.flow, self.run_id)
                note = spec["reason"] = cont["line"]
            elif cont or why:
                note = spec["reason"] = f"runs from its first cell: {why or '--from-start'}"
        self.on_event({"type": "task", "run_id": self.run_id, "step": task.step, "index": task.index,
                       "status": Status.RUNNING, "attempt": task.attempt, "reason": spec["reason"], "note": note})
        future = self._executor_for(step).submit(spec, task.control)
        running.add(id(task))
        future.add_done_callback(lambda f, t=task: self.done_q.put((t, _result(f, t))))

    def decide(self, task: Task) -> tuple[dict, dict, dict, str, reuse.Decision]:
        """(refs, input metadata, cache parts, cache key, decision) of a task whose upstream ended."""
        refs, meta = self.specs.inputs(task.step, self.tasks)
        parts = reuse.cache_parts(self.flow, self.specs.injected, task.step, task.index, refs,
                                  self._packages(task.step))
        key = reuse.cache_key(parts)
        return refs, meta, parts, key, self.cache.decide(task.step, task.index, parts, key)

    def task_spec(self, task: Task, refs: dict, meta: dict, parts: dict | None = None, key: str | None = None,
                  reason: str | None = None) -> dict:
        """Everything an executor needs to run `task` (plain data: JSON- and pickle-able)."""
        spec = self.specs.build(task, refs, meta, key, self._executor_for(self.flow.steps[task.step]).name)
        return dict(spec, cache_parts=parts, reason=reason)

    def _executor_for(self, step):
        if step.options.get("executor") == "local" and self.executor.name != "local":
            if self.local is None:
                from jupyter_flow.executors.local import LocalExecutor  # lazy: a cache hit never needs it

                self.local = LocalExecutor()
                if self.readiness.kernel[step.name] is not None:  # its kernels boot as the main executor's would
                    self.local.want_kernels(self.readiness.kernel[step.name], self.cwd, 0, store=self.store.url,
                                            preload=self.preload)
            return self.local
        return self.executor

    # -- a task ended ----------------------------------------------------------------------------
    def _finished(self, task: Task, record: dict, running: set[int]) -> None:
        step = self.flow.steps[task.step]
        task.record = record
        status = record["status"]
        races = self.races.check(task) if status in DONE else []
        if races and not self.stopping and all(r.reader is task and r.rerun for r in races):
            self._again(task, record, running, dict(races[0].error(), message=races[0].message + "; it runs again "
                                                    f"now that {races[0].writer!r} has ended"))
            return  # its result was not used yet: run it again, after the writer, as top to bottom
        if races:
            record, status = self._raced(task, record, races[0])
        retries = step.options.get("retry", 0)
        if status in (Status.FAILED, Status.TIMED_OUT) and not self.stopping and task.attempt <= retries:
            self._again(task, record, running, record.get("error"))
            return
        task.status = status
        self.readiness.task_ended(task)
        if status == Status.SUCCEEDED and record.get("cache_key"):
            reuse.remember(self.store, self.flow.name, self.run_id, task.step, task.index, record["cache_key"])
        changed = bool(record.get("metrics"))  # run.json changes only for metrics and the first error
        if status not in DONE and not step.options.get("catch") and not self.stopping:
            self.stopping = True
            self.record["error"] = {"step": task.step, "index": task.index,
                                    "message": failure_line(record.get("error")) if record.get("error") else status}
            changed = True
        self.record["metrics"].update(record.get("metrics") or {})
        self.on_event({"type": "task", "run_id": self.run_id, "step": task.step, "index": task.index,
                       "status": status, "attempt": task.attempt, "duration": record.get("duration"),
                       "error": record.get("error"), "origin": record.get("origin")})
        if changed:
            self._save_record()

    def _again(self, task: Task, record: dict, running: set[int], error: dict | None) -> None:
        """Run `task` once more (a retry, or after a file race), keeping the attempt that ended."""
        task.attempts = task.attempts + [dict({k: record.get(k) for k in ("attempt", "status", "started", "ended",
                                                                          "duration")}, error=error)]
        self.on_event({"type": "task", "run_id": self.run_id, "step": task.step, "index": task.index,
                       "status": Status.RETRYING, "attempt": task.attempt, "error": error})
        task.status = Status.QUEUED
        self._start(task, running)

    def _raced(self, task: Task, record: dict, race) -> tuple[dict, str]:
        """Fail the reader of a file race (its result may be stale): a verdict recorded as a new attempt
        of its task (the attempt that ended stays in `attempts`). Returns `task`'s record and status."""
        reader = race.reader
        old = reader.record
        reader.record = dict(old, status=Status.FAILED, error=race.error(), attempt=(old.get("attempt") or 0) + 1,
                             attempts=(old.get("attempts") or []) + [
                                 {k: old.get(k)
                                  for k in ("attempt", "status", "error", "started", "ended", "duration")}])
        reader.attempt = reader.record["attempt"]
        records.write_task(self.store, reader.record)
        if reader is not task:  # it ended earlier (and may have been used): the run stops, failing it
            reader.status = Status.FAILED
            self.stopping = True
            self.record["error"] = self.record["error"] or {"step": reader.step, "index": reader.index,
                                                            "message": failure_line(race.error())}
            self.on_event({"type": "task", "run_id": self.run_id, "step": reader.step, "index": reader.index,
                           "status": Status.FAILED, "attempt": reader.record["attempt"], "error": race.error()})
            self._save_record()
        return task.record, task.record["status"]

    def _finalize(self) -> str:
        if self.cancel_reason:
            status = Status.CANCELLED
        elif self.record["error"]:
            status = Status.FAILED
        else:
            status = Status.SUCCEEDED if self.readiness.all_done() else Status.FAILED
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
        return {**task.record, "status": Status.FAILED, "run_id": None,
                "error": {"type": e.__class__.__name__, "message": f"the executor failed to run the task: {e}"}}
