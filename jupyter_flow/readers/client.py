"""Read runs back: Flow, Run, Step, Task, Artifact, and a runs table for comparing runs.

Readers only read the store. A run whose runner died is reported as `crashed`: its record says
`running` but its heartbeat stopped (or, on the same host, its process is gone).
"""
from __future__ import annotations

import json

from jupyter_flow.errors import NotFound
from jupyter_flow.readers import render
from jupyter_flow.store import Store, open_store, records
from jupyter_flow.store.preview import summary
from jupyter_flow.store.records import current_user
from jupyter_flow.store.status import combine

_namespace = {"user": "current"}


def namespace(user: str | None = "current") -> None:
    """Whose runs `Flow.runs()` and `runs_table` show: yours (default), `user`, or everyone's (None)."""
    _namespace["user"] = user


def _namespace_user() -> str | None:
    return current_user() if _namespace["user"] == "current" else _namespace["user"]


def list_runs(store: Store | str | None = None, flow: str | None = None, user: str | None = None,
              status: str | None = None, limit: int | None = None, batch: str | None = None,
              before: str | None = None) -> list[dict]:
    """Run records, newest first (damaged ones included, with status `damaged`; `batch`: only its runs;
    `before`: only the runs older than that run id), each with `pinned`: its pin (by, at, note) or None."""
    store = open_store(store)
    runs = records.list_runs(store, flow, user, status, limit, batch, before)
    pinned = records.pins(store, [r.id for r in runs])
    return [dict(r.to_dict(), pinned=pinned.get(r.id)) for r in runs]


def get_run(store: Store | str | None, run_id: str) -> dict:
    """A run record with its tasks (`tasks`, ordered by step then index) and `pinned` (see list_runs)."""
    store = open_store(store)
    run = records.find_run(store, run_id)
    return dict(run.to_dict(), tasks=[t.to_dict() for t in records.list_tasks(store, run)],
                pinned=records.pins(store, [run.id]).get(run.id))


def pin(store: Store | str | None, run_id: str, note: str | None = None) -> dict:
    """Keep the run (and everything it needs) from every `gc`, anyone's; the pin (run_id, flow, by, at, note)."""
    return records.pin(open_store(store), run_id, note)


def unpin(store: Store | str | None, run_id: str) -> dict:
    """Let `gc` remove the run again; the pin it had. NotFound if it is not pinned."""
    return records.unpin(open_store(store), run_id)


def read_task(store: Store | str | None, run_id: str, step: str, index: int = 0) -> dict:
    store = open_store(store)
    return records.read_task(store, records.find_run(store, run_id), step, index).to_dict()


def read_task_file(store: Store | str | None, run_id: str, step: str, index: int, name: str) -> str:
    store = open_store(store)
    task = records.read_task(store, records.find_run(store, run_id), step, index)
    try:
        return store.read_bytes(f"{task.files_key}/{name}").decode("utf-8", errors="replace")
    except NotFound:
        raise NotFound(f"step {step!r} of run {run_id} has no {name} yet") from None


def task_artifacts(store: Store | str | None, run_id: str, step: str, index: int = 0) -> dict:
    """A task's stored values as metadata (never unpickled): `inputs`, `outputs`, and `failure` (the
    snapshot taken when the step raised: `variables`, `unpicklable`, `modules`; None if it has none)."""
    store = open_store(store)
    task = read_task(store, run_id, step, index)
    failure = None
    if task.get("failure"):
        snapshot = json.loads(read_task_file(store, task["run_id"], step, index, "failure.json"))
        failure = {k: snapshot.get(k) or {} for k in ("variables", "unpicklable", "modules")}
    return {"run_id": task["run_id"], "step": step, "index": index, "inputs": task.get("inputs") or {},
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
            return [self.store.load_value(h, self.name) for h in self.meta["hashes"]]
        return self.store.load_value(self.hash, self.name)

    def __repr__(self) -> str:
        return f"Artifact({self.name!r}: {summary(self.meta)}, size={self.size}, preview={self.preview!r})"

    def _repr_html_(self) -> str:
        return render.artifacts_html("artifact", {self.name: self.meta})


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
        import nbformat  # its schema validator is slow to import: only for a run's notebook

        return nbformat.reads(read_task_file(self.store, self.run_id, self.step, self.index, "output.ipynb"),
                              as_version=4)

    @property
    def log(self) -> str:
        return read_task_file(self.store, self.run_id, self.step, self.index, "log.txt")

    def __repr__(self) -> str:
        error = f", error={self.error['type']}: {self.error['message']!r}" if self.error else ""
        return f"Task({self.step}[{self.index}], status={self.status}, duration={self.duration}{error})"

    def _repr_html_(self) -> str:
        return render.task_html(self.record)


class Step:
    """A step of a run: one task, or one per foreach element. Reads like its task when it has one."""

    def __init__(self, name: str, tasks: list[Task]):
        self.name, self.tasks = name, tasks
        one = len(tasks) == 1
        self.status = tasks[0].status if one else combine(t.status for t in tasks).value
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
        return render.run_text(self.record)

    def _repr_html_(self) -> str:
        return render.run_html(self.record)

    def refresh(self) -> Run:
        return Run(self.id, self.store, self._handle)

    def wait(self, timeout: float | None = None) -> Run:
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
        head = f"<b>flow {self.name}</b> (store <code>{self.store.url}</code>), newest runs:"
        return head + table.to_html(index=False)


def runs_table(flow: str | None = None, store: Store | str | None = None, user: str | None = "namespace"):
    """A pandas DataFrame, one row per run: id, status, user, start, duration, parameters, metrics."""
    who = _namespace_user() if user == "namespace" else user
    return table_of(list_runs(store, flow, user=who))


def table_of(runs: list[dict]):
    """The runs table (pandas) of these run records, in their order."""
    import pandas as pd  # an optional dependency, and 0.5 s: only for runs_table

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
