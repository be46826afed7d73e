"""Statuses: the one place that says what a run's or a task's status is, in which order a step of
several tasks shows them, and how each is drawn (a rich style in the terminal, a colour in HTML).

Everything else (records, the runtime, the terminal and notebook views, the server, the sidebar
extension through `vocabulary()`) takes them from here; nobody keeps a table of their own.
"""
from __future__ import annotations

from enum import Enum

from jupyter_flow.store import layout


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


# A task that is done: its outputs exist (made, cached, reused, or nothing to make).
DONE = frozenset({Status.SUCCEEDED, Status.CACHED, Status.REUSED, Status.SKIPPED})
# A task that will not change again by itself (crashed/damaged are read, never written, as ends).
TERMINAL = DONE | {Status.FAILED, Status.TIMED_OUT, Status.CANCELLED}
# The statuses a run can have (`jupyter flow runs --status`, the sidebar's filter).
RUN_STATUSES = (Status.RUNNING, Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.CRASHED, Status.DAMAGED)
# A run whose record is never written again (the run index keeps only these).
FINISHED = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED})
# Which status a step of several tasks shows: the first of these any task has, else succeeded.
PRECEDENCE = (Status.DAMAGED, Status.CRASHED, Status.FAILED, Status.TIMED_OUT, Status.CANCELLED, Status.RUNNING,
              Status.RETRYING, Status.QUEUED)
# A step that has not run yet in a view (no task record): not a status a record can have.
NOT_RUN = "not run"


def combine(statuses) -> Status:
    """The status a step shows for its tasks' `statuses` (see PRECEDENCE); queued if it has none."""
    statuses = {Status(s) for s in statuses}
    return next((s for s in PRECEDENCE if s in statuses), Status.SUCCEEDED if statuses else Status.QUEUED)


# The terminal (rich markup styles) and HTML (notebook widgets, the sidebar) drawings of each status.
STYLES = {Status.QUEUED: "dim", Status.RUNNING: "yellow", Status.RETRYING: "yellow", Status.SUCCEEDED: "green",
          Status.CACHED: "cyan", Status.REUSED: "cyan", Status.SKIPPED: "dim", Status.FAILED: "red",
          Status.TIMED_OUT: "red", Status.CANCELLED: "magenta", Status.CRASHED: "red", Status.DAMAGED: "bold red",
          NOT_RUN: "dim"}
COLORS = {Status.QUEUED: "#888", Status.RUNNING: "#b58900", Status.RETRYING: "#b58900", Status.SUCCEEDED: "#2a9d3a",
          Status.CACHED: "#1f8ea3", Status.REUSED: "#1f8ea3", Status.SKIPPED: "#888", Status.FAILED: "#d33",
          Status.TIMED_OUT: "#d33", Status.CANCELLED: "#a3a", Status.CRASHED: "#d33", Status.DAMAGED: "#d33",
          NOT_RUN: "#888"}


def style(status) -> str:
    """The rich style of `status` ('' for anything unknown)."""
    return STYLES.get(status, "")


def color(status) -> str:
    """The HTML colour of `status` ('' for anything unknown)."""
    return COLORS.get(status, "")


def vocabulary() -> dict:
    """The statuses and the step-name rule as JSON, for the sidebar extension (served by the server):
    `statuses` in order, `done`, `terminal`, `run_statuses`, `precedence` (the first a step's tasks
    have wins, else succeeded), `styles`, `colors` (with "not run"), and `step_name` (a regular
    expression JavaScript's RegExp accepts, anchored)."""
    def values(statuses):
        return [s.value for s in Status if s in statuses]

    return {"statuses": [s.value for s in Status], "done": values(DONE), "terminal": values(TERMINAL),
            "run_statuses": [s.value for s in RUN_STATUSES], "precedence": [s.value for s in PRECEDENCE],
            "styles": {str(k): v for k, v in STYLES.items()}, "colors": {str(k): v for k, v in COLORS.items()},
            "not_run": NOT_RUN, "step_name": f"^{layout.STEP_NAME_PATTERN}$"}
