"""Run and task records: typed, with one Status enum and one rule for the effective status.

Every reader (client, CLI views, server, gc, fsck) and every writer (runtime, task, executors)
goes through here; nobody else builds a record key or decides what a status means. A record that
cannot be read is not skipped: it comes back with status `damaged`, so it is shown, and nothing it
may reference is ever collected.
"""
from __future__ import annotations

import dataclasses
import getpass
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum

from ..errors import FlowError, NotFound, StoreError
from . import layout


class Status(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    CACHED = "cached"
    REUSED = "reused"
    SKIPPED = "skipped"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    CRASHED = "crashed"
    DAMAGED = "damaged"  # the record itself cannot be read

    def __str__(self) -> str:
        return self.value


DONE = frozenset({Status.SUCCEEDED, Status.CACHED, Status.REUSED, Status.SKIPPED})
TERMINAL = DONE | {Status.FAILED, Status.TIMED_OUT, Status.CANCELLED}
RUN_STATUSES = ("running", "succeeded", "failed", "cancelled", "crashed", "damaged")
# Which status a step of several tasks shows: the first of these any task has, else succeeded.
PRECEDENCE = (Status.DAMAGED, Status.CRASHED, Status.FAILED, Status.TIMED_OUT, Status.CANCELLED, Status.RUNNING,
              Status.RETRYING, Status.QUEUED)


def combine(statuses) -> Status:
    statuses = {Status(s) for s in statuses}
    return next((s for s in PRECEDENCE if s in statuses), Status.SUCCEEDED if statuses else Status.QUEUED)


def current_user() -> str:
    """The user runs are recorded for, and whose runs "my runs" shows (JupyterHub's name on a hub)."""
    return os.environ.get("JUPYTERHUB_USER") or getpass.getuser()


def check_status(status: str | None) -> str | None:
    if status is not None and status not in RUN_STATUSES:
        raise FlowError(f"unknown status {status!r}; one of {', '.join(RUN_STATUSES)}")
    return status


class _Record:
    """A dataclass that keeps the fields it does not know (written by newer code) in `extra`."""

    @classmethod
    def from_dict(cls, data: dict):
        if not isinstance(data, dict):
            raise ValueError(f"a record is a JSON object, not {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names}
        try:
            known["status"] = Status(known.get("status", "queued"))
            return cls(**known, extra={k: v for k, v in data.items() if k not in names})
        except (TypeError, ValueError) as e:
            raise ValueError(f"not a {cls.__name__} ({e})") from None

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        out["status"] = Status(self.status).value
        return {**out, **self.extra}

    def __getitem__(self, name):  # read like the JSON it is
        return self.to_dict()[name]

    def get(self, name, default=None):
        return self.to_dict().get(name, default)


@dataclass
class RunRecord(_Record):
    id: str
    flow: str
    status: Status = Status.RUNNING
    user: str | None = None
    host: str | None = None
    pid: int | None = None
    notebook: str | None = None
    notebook_hash: str | None = None
    parameters: dict = field(default_factory=dict)
    created: str | None = None
    ended: str | None = None
    duration: float | None = None
    heartbeat: str | None = None
    heartbeat_interval: float = 5.0
    metrics: dict = field(default_factory=dict)
    origin_run: str | None = None
    executor: str | None = None
    version: str | None = None
    error: dict | None = None
    warnings: list = field(default_factory=list)
    steps: list = field(default_factory=list)
    damaged: str | None = None  # why the record cannot be read
    extra: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return layout.run_key(self.flow, self.id)

    @property
    def step_names(self) -> list[str]:
        return [s["name"] for s in self.steps]

    def effective_status(self) -> Status:
        """The one rule: a run recorded as running whose runner is gone (its process, on this host,
        or its heartbeat, anywhere) is crashed."""
        if self.status != Status.RUNNING:
            return Status(self.status)
        if self.host == socket.gethostname() and self.pid:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return Status.CRASHED
            except PermissionError:
                pass
        if not self.heartbeat:
            return Status.RUNNING
        beat = datetime.fromisoformat(self.heartbeat)
        stale = max(3 * float(self.heartbeat_interval or 5), 30)
        return Status.CRASHED if (datetime.now(timezone.utc) - beat).total_seconds() > stale else Status.RUNNING

    def with_effective_status(self) -> "RunRecord":
        return dataclasses.replace(self, status=self.effective_status())


@dataclass
class TaskRecord(_Record):
    run_id: str
    flow: str
    step: str
    index: int = 0
    status: Status = Status.QUEUED
    attempt: int = 0
    attempts: list = field(default_factory=list)
    started: str | None = None
    ended: str | None = None
    duration: float | None = None
    inputs: dict = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)
    error: dict | None = None
    host: str | None = None
    executor: str | None = None
    kernel: str | None = None
    kernel_pid: int | None = None
    origin: dict | None = None
    cache_key: str | None = None
    warnings: list = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    notebook: str | None = None
    foreach: dict | None = None
    failure: dict | None = None
    damaged: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return layout.task_key(self.flow, self.run_id, self.step, self.index)

    @property
    def files_key(self) -> str:
        """Where its notebook, log and failure snapshot are: a cached or reused task's are its origin's."""
        return self.origin["key"] if self.origin else self.key

    def blob_refs(self) -> set[str]:
        """Digests of the values it received and produced."""
        refs = set()
        for meta in list(self.outputs.values()) + list(self.inputs.values()):
            if isinstance(meta, dict):
                refs.update(h for h in (meta.get("hashes") or [meta.get("hash")]) if h)
        return refs


# -- reading ----------------------------------------------------------------------------------------
def read_run(store, key: str) -> RunRecord:
    """The run at a run.json key; `damaged` (never an exception) if its record cannot be read."""
    flow, run_id = layout.parse_run_json(key)
    try:
        return RunRecord.from_dict(store.read_json(key))
    except (StoreError, ValueError) as e:
        if isinstance(e, NotFound):
            raise
        return RunRecord(id=run_id, flow=flow, status=Status.DAMAGED, damaged=str(e),
                         error={"step": None, "index": None, "message": f"run record damaged: {e}"})


def read_task_at(store, key: str) -> TaskRecord:
    flow, run_id, step, index = layout.parse_task_json(key)
    try:
        return TaskRecord.from_dict(store.read_json(key))
    except (StoreError, ValueError) as e:
        if isinstance(e, NotFound):
            raise
        return TaskRecord(run_id=run_id, flow=flow, step=step, index=index, status=Status.DAMAGED, damaged=str(e),
                          error={"type": "DamagedRecord", "message": f"task record damaged: {e}"})


def list_runs(store, flow: str | None = None, user: str | None = None, status: str | None = None,
              limit: int | None = None, batch: str | None = None) -> list[RunRecord]:
    """Run records with their effective status, newest first; damaged ones included. `batch`: only
    the runs of that batch (see batches.py), whoever started them."""
    check_status(status)
    if flow is not None:
        layout.check_flow_name(flow)
    keys = store.glob(layout.run_jsons(flow))
    keys.sort(key=lambda k: layout.parse_run_json(k)[1], reverse=True)
    runs = []
    for key in keys:
        try:
            run = read_run(store, key).with_effective_status()
        except NotFound:
            continue  # deleted meanwhile
        if (user and run.user != user and run.status != Status.DAMAGED) or (status and run.status != status):
            continue
        if batch and (run.extra.get("batch") or {}).get("id") != batch:
            continue
        runs.append(run)
        if limit and len(runs) >= limit:
            break
    return runs


def find_run(store, run_id: str) -> RunRecord:
    """The run `run_id` (a unique prefix is enough), with its effective status."""
    layout.check_run_id(run_id)
    matches = store.glob(layout.run_jsons(run_id_prefix=run_id))
    if not matches:
        raise NotFound(f"no run {run_id!r} in store {store.url}; `jupyter flow runs` lists them")
    exact = [m for m in matches if layout.parse_run_json(m)[1] == run_id]
    if len(matches) > 1 and not exact:
        raise FlowError(f"run id {run_id!r} is ambiguous ({len(matches)} runs start with it); give more of it")
    return read_run(store, (exact or matches)[0]).with_effective_status()


def list_tasks(store, run: RunRecord) -> list[TaskRecord]:
    """The run's task records, by step (in notebook order) then index; damaged ones included."""
    tasks = []
    for key in store.glob(layout.task_jsons(run.flow, run.id)):
        try:
            tasks.append(read_task_at(store, key))
        except NotFound:
            continue
    order = run.step_names
    tasks.sort(key=lambda t: (order.index(t.step) if t.step in order else len(order), t.step, t.index))
    if run.status == Status.CRASHED:
        for t in tasks:
            if t.status == Status.RUNNING:
                t.status = Status.CRASHED
    return tasks


def read_task(store, run: RunRecord, step: str, index: int = 0) -> TaskRecord:
    if run.steps and step not in run.step_names:
        raise NotFound(f"run {run.id} has no step {step!r}; its steps: {', '.join(run.step_names)}")
    try:
        task = read_task_at(store, layout.task_json(run.flow, run.id, step, index))
    except NotFound:
        raise NotFound(f"step {step!r} of run {run.id} has no task {index} (it has not run)") from None
    if task.status == Status.DAMAGED:
        raise StoreError(f"the record of step {step!r}[{index}] of run {run.id} is damaged ({task.damaged}); "
                         "`jupyter flow fsck` lists damaged records")
    return task


def read_failure(store, task: TaskRecord) -> dict:
    """The task's failure snapshot (failure.json): variables, unpicklable names, modules."""
    return store.read_json(f"{task.files_key}/failure.json")


# -- writing ---------------------------------------------------------------------------------------
def write_run(store, record) -> None:
    run = record if isinstance(record, RunRecord) else RunRecord.from_dict(record)
    store.write_json(layout.run_json(run.flow, run.id), run.to_dict())


def write_task(store, record) -> None:
    task = record if isinstance(record, TaskRecord) else TaskRecord.from_dict(record)
    store.write_json(layout.task_json(task.flow, task.run_id, task.step, task.index), task.to_dict())
