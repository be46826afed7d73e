"""Read runs back: Flow, Run, Step, Task, Artifact, and a runs table for comparing runs.

Readers only read the store. A run whose runner died is reported as `crashed`: its record says
`running` but its heartbeat stopped (or, on the same host, its process is gone).
"""
from __future__ import annotations

import os
import socket
from datetime import datetime, timezone

from .errors import NotFound
from .runtime import current_user, find_run, run_key
from .store import Store, open_store
from .task import task_key

_namespace = {"user": "current"}


def namespace(user: str | None = "current") -> None:
    """Whose runs `Flow.runs()` and `runs_table` show: yours (default), `user`, or everyone's (None)."""
    _namespace["user"] = user


def _namespace_user() -> str | None:
    return current_user() if _namespace["user"] == "current" else _namespace["user"]


def effective_status(run: dict) -> str:
    if run.get("status") != "running":
        return run.get("status", "unknown")
    if run.get("host") == socket.gethostname() and run.get("pid"):
        try:
            os.kill(run["pid"], 0)
        except ProcessLookupError:
            return "crashed"
        except PermissionError:
            pass
    beat = datetime.fromisoformat(run["heartbeat"])
    stale = max(3 * float(run.get("heartbeat_interval", 5)), 30)
    return "crashed" if (datetime.now(timezone.utc) - beat).total_seconds() > stale else "running"


def _with_status(run: dict) -> dict:
    status = effective_status(run)
    return dict(run, status=status) if status != run.get("status") else run


def list_runs(store: Store | str | None = None, flow: str | None = None, user: str | None = None,
              status: str | None = None, limit: int | None = None, batch: str | None = None) -> list[dict]:
    """Run records, newest first (`batch`: only the runs of that batch)."""
    store = open_store(store)
    keys = store.glob(f"flows/{flow or '*'}/runs/*/run.json")
    keys.sort(key=lambda k: k.split("/")[3], reverse=True)
    runs = []
    for key in keys:
        try:
            run = _with_status(store.read_json(key))
        except (NotFound, ValueError):
            continue  # a run being deleted, or a half-copied store: skip, never fail the listing
        if (user and run.get("user") != user) or (status and run["status"] != status):
            continue
        if batch and (run.get("batch") or {}).get("id") != batch:
            continue
        runs.append(run)
        if limit and len(runs) >= limit:
            break
    return runs


def list_tasks(store: Store, run: dict) -> list[dict]:
    tasks = []
    for step in run["steps"]:
        for key in store.glob(f"{run_key(run['flow'], run['id'])}/{step['name']}/*/task.json"):
            try:
                tasks.append(store.read_json(key))
            except (NotFound, ValueError):
                continue
    tasks.sort(key=lambda t: ([s["name"] for s in run["steps"]].index(t["step"]), t["index"]))
    if run["status"] == "crashed":
        for t in tasks:
            if t["status"] == "running":
                t["status"] = "crashed"
    return tasks


def get_run(store: Store | str | None, run_id: str) -> dict:
    """A run record with its tasks (`tasks`, ordered by step then index)."""
    store = open_store(store)
    run = _with_status(find_run(store, run_id))
    return dict(run, tasks=list_tasks(store, run))


def read_task(store: Store, run: dict, step: str, index: int = 0) -> dict:
    if step not in [s["name"] for s in run["steps"]]:
        raise NotFound(f"run {run['id']} has no step {step!r}; its steps: "
                       f"{', '.join(s['name'] for s in run['steps'])}")
    try:
        return store.read_json(f"{task_key(run['flow'], run['id'], step, index)}/task.json")
    except NotFound:
        raise NotFound(f"step {step!r} of run {run['id']} has no task {index} (it has not run)") from None


def read_task_file(store: Store | str | None, run_id: str, step: str, index: int, name: str) -> str:
    store = open_store(store)
    run = find_run(store, run_id)
    task = read_task(store, run, step, index)
    key = task_key(run["flow"], run["id"], step, index)
    if task.get("origin"):
        key = task["origin"]["key"]  # a cached or reused task: its files are the origin's, not copied
    try:
        return store.read_bytes(f"{key}/{name}").decode("utf-8", errors="replace")
    except NotFound:
        raise NotFound(f"step {step!r} of run {run['id']} has no {name} yet") from None


def task_artifacts(store: Store | str | None, run_id: str, step: str, index: int = 0) -> dict:
    """A task's stored values as metadata (never unpickled): `inputs`, `outputs`, and `failure` (the
    snapshot taken when the step raised: `variables`, `unpicklable`, `modules`; None if it has none)."""
    store = open_store(store)
    run = find_run(store, run_id)
    task = read_task(store, run, step, index)
    failure = None
    if task.get("failure"):
        import json

        snapshot = json.loads(read_task_file(store, run["id"], step, index, "failure.json"))
        failure = {k: snapshot.get(k) or {} for k in ("variables", "unpicklable", "modules")}
    return {"run_id": run["id"], "step": step, "index": index, "inputs": task.get("inputs") or {},
            "outputs": task.get("outputs") or {}, "failure": failure}


# -- objects --------------------------------------------------------------------------------------
class Artifact:
    def __init__(self, store: Store, name: str, meta: dict):
        self.store, self.name, self.meta = store, name, meta
        self.hash = meta.get("hash")
        self.type, self.size, self.preview = meta.get("type"), meta.get("size"), meta.get("preview")

    @property
    def value(self):
        if "missing" in self.meta:
            raise NotFound(f"{self.name!r} is missing: {self.meta['missing']}")
        if "hashes" in self.meta:
            return [self.store.load_value(h) for h in self.meta["hashes"]]
        return self.store.load_value(self.hash)

    def __repr__(self) -> str:
        from .preview import summary

        return f"Artifact({self.name!r}: {summary(self.meta)}, size={self.size}, preview={self.preview!r})"

    def _repr_html_(self) -> str:
        from .widgets import artifacts_html

        return artifacts_html("artifact", {self.name: self.meta})


class _Data:
    """`task.data.NAME` loads one value on access."""

    def __init__(self, artifacts: dict):
        self._artifacts = artifacts

    def __getattr__(self, name):
        try:
            return self._artifacts[name].value
        except KeyError:
            raise AttributeError(f"no artifact {name!r}; artifacts: {', '.join(self._artifacts) or 'none'}") from None

    def __dir__(self):
        return list(self._artifacts)


class Task:
    def __init__(self, store: Store, record: dict):
        self.store, self.record = store, record
        for field in ("status", "attempt", "error", "step", "index", "duration", "metrics", "origin"):
            setattr(self, field, record.get(field))
        self.run_id = record["run_id"]
        self.artifacts = {n: Artifact(store, n, m) for n, m in record.get("outputs", {}).items()}
        self.inputs = {n: Artifact(store, n, m) for n, m in record.get("inputs", {}).items()}
        self.data = _Data(self.artifacts)

    @property
    def notebook(self):
        import nbformat

        return nbformat.reads(read_task_file(self.store, self.run_id, self.step, self.index, "output.ipynb"),
                              as_version=4)

    @property
    def log(self) -> str:
        return read_task_file(self.store, self.run_id, self.step, self.index, "log.txt")

    def __repr__(self) -> str:
        error = f", error={self.error['type']}: {self.error['message']!r}" if self.error else ""
        return f"Task({self.step}[{self.index}], status={self.status}, duration={self.duration}{error})"

    def _repr_html_(self) -> str:
        from .widgets import task_html

        return task_html(self.record)


class Step:
    """A step of a run: one task, or one per foreach element. Reads like its task when it has one."""

    def __init__(self, name: str, tasks: list[Task]):
        self.name, self.tasks = name, tasks
        one = len(tasks) == 1
        self.status = tasks[0].status if one else combined_status([t.status for t in tasks])
        if one:
            self.artifacts, self.data = tasks[0].artifacts, tasks[0].data
            self.error, self.attempt = tasks[0].error, tasks[0].attempt
        else:
            names = {n for t in tasks for n in t.artifacts}
            self.artifacts = {n: _ListArtifact(n, [t.artifacts.get(n) for t in tasks]) for n in names}
            self.data = _Data(self.artifacts)
            self.error = next((t.error for t in tasks if t.error), None)

    @property
    def task(self) -> Task:
        return self.tasks[0]

    def __getattr__(self, name):
        if name in ("notebook", "log", "inputs", "duration", "metrics", "origin"):
            return getattr(self.tasks[0], name)
        raise AttributeError(name)

    def __repr__(self) -> str:
        return f"Step({self.name}, status={self.status}, tasks={len(self.tasks)})"


class _ListArtifact:
    def __init__(self, name, artifacts):
        self.name, self.artifacts = name, artifacts

    @property
    def value(self):
        return [a.value if a is not None else None for a in self.artifacts]


def combined_status(statuses: list[str]) -> str:
    for status in ("crashed", "failed", "timed_out", "cancelled", "running", "queued"):
        if status in statuses:
            return status
    return "succeeded" if statuses else "queued"


class Run:
    def __init__(self, run_id: str, store: Store | str | None = None, handle=None):
        self.store = open_store(store)
        self._handle = handle  # set when this process runs it (`jupyter_flow.run(..., wait=False)`)
        self.record = get_run(self.store, run_id)
        r = self.record
        self.id, self.flow, self.status, self.user = r["id"], r["flow"], r["status"], r["user"]
        self.parameters, self.metrics, self.created = r["parameters"], r["metrics"], r["created"]
        self.duration, self.error, self.origin_run = r["duration"], r["error"], r.get("origin_run")
        self.tasks = [Task(self.store, t) for t in r["tasks"]]
        self.steps = [s["name"] for s in r["steps"]]

    def __getitem__(self, step: str) -> Step:
        tasks = [t for t in self.tasks if t.step == step]
        if not tasks:
            if step in self.steps:
                raise NotFound(f"step {step!r} of run {self.id} did not run")
            raise KeyError(f"run {self.id} has no step {step!r}; steps: {', '.join(self.steps)}")
        return Step(step, tasks)

    def __repr__(self) -> str:
        from .widgets import run_text

        return run_text(self.record)

    def _repr_html_(self) -> str:
        from .widgets import run_html

        return run_html(self.record)

    def refresh(self) -> "Run":
        return Run(self.id, self.store, self._handle)

    def wait(self, timeout: float | None = None) -> "Run":
        """Block until a run started by this process with `wait=False` ends; returns it re-read."""
        if self._handle is not None:
            self._handle.wait(timeout)
        return self.refresh()


class Flow:
    def __init__(self, name: str, store: Store | str | None = None):
        self.name, self.store = name, open_store(store)

    def runs(self) -> list[Run]:
        return [Run(r["id"], self.store) for r in list_runs(self.store, self.name, user=_namespace_user())]

    @property
    def latest_run(self) -> Run | None:
        runs = list_runs(self.store, self.name, user=_namespace_user(), limit=1)
        return Run(runs[0]["id"], self.store) if runs else None

    @property
    def latest_successful_run(self) -> Run | None:
        runs = list_runs(self.store, self.name, user=_namespace_user(), status="succeeded", limit=1)
        return Run(runs[0]["id"], self.store) if runs else None

    def __repr__(self) -> str:
        return f"Flow({self.name!r}, store={self.store.url!r})"

    def _repr_html_(self) -> str:
        table = table_of(list_runs(self.store, self.name, user=_namespace_user(), limit=20))
        return f"<b>flow {self.name}</b> (store <code>{self.store.url}</code>), newest runs:" + table.to_html(index=False)


def runs_table(flow: str | None = None, store: Store | str | None = None, user: str | None = "namespace"):
    """A pandas DataFrame, one row per run: id, status, user, start, duration, parameters, metrics."""
    who = _namespace_user() if user == "namespace" else user
    return table_of(list_runs(store, flow, user=who))


def table_of(runs: list[dict]):
    """The runs table (pandas) of these run records, in their order."""
    import pandas as pd

    rows = []
    for run in runs:
        row = {"id": run["id"], "flow": run["flow"], "status": run["status"], "user": run["user"],
               "start": pd.Timestamp(run["created"]), "duration": run.get("duration")}
        if run.get("batch"):
            row["batch"] = run["batch"]["id"]
        for name, value in run.get("parameters", {}).items():
            row[name] = value if not isinstance(value, (list, dict)) else repr(value)
        for name, value in run.get("metrics", {}).items():
            row[f"metric.{name}" if name in row else name] = value
        rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else ["id", "flow", "status", "user", "start", "duration"])
