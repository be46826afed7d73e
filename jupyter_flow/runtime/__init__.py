"""Schedule the tasks of a run: readiness, parallelism, foreach fan-out, retries, timeouts, cache,
resume, cancel, heartbeat, and progress events for the CLI, the server and the widgets.

- `readiness`: which tasks may start, propagated through the DAG in topological order;
- `reuse`: cache keys, and reusing a finished task of the resumed run or of the cache;
- `spec`: the plain-data task spec an executor runs;
- `loop`: the `Runner`, its run record and its loop (retries, timeouts, cancel, events);
- `doors`: `prepare` (validate everything; bad input leaves nothing behind), start, resume, wait.
"""
from __future__ import annotations

from jupyter_flow.execution.task import now
from jupyter_flow.runtime.doors import (
    RunHandle,
    launch,
    prepare,
    prepare_resume,
    resume_run,
    start_run,
)
from jupyter_flow.runtime.loop import HEARTBEAT_ENV, Runner, heartbeat_interval
from jupyter_flow.runtime.readiness import Task
from jupyter_flow.store import Store, layout, open_store
from jupyter_flow.store.records import current_user, find_run
from jupyter_flow.store.status import Status

__all__ = ["HEARTBEAT_ENV", "RunHandle", "Runner", "Task", "heartbeat_interval", "launch", "now", "prepare",
           "prepare_resume", "request_cancel", "resume_run", "start_run"]


def request_cancel(store: Store | str | None, run_id: str) -> dict:
    """Ask the process running `run_id` to stop it (works from any process that sees the store)."""
    store = open_store(store)
    run = find_run(store, run_id)
    if run.status == Status.RUNNING:
        store.write_json(layout.run_file(run.flow, run.id, layout.CANCEL), {"requested": now(), "by": current_user()})
    return run
