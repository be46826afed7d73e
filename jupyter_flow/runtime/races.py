"""Races over files, found when a task ends: never a silently stale read.

Top to bottom, a step sees every file the steps before it (in notebook order) wrote. In a pipeline,
two steps that no edge orders may run at once. When a task ends, its record's files (see files.py)
are compared with those of the run's other tasks: if step W, earlier in the notebook and not an
ancestor of step R, wrote (or removed) a file R read or wrote, and W had not ended before R started,
or W has not ended yet and is expected to write it (`Step.files_written`, predicted before the run),
R may have seen an old version (unless the hash it read is W's final one), or its write may be lost
under W's. The loop then runs R again after W (if W has ended and R's result was not used yet) or
stops the run as a failure of R. The other way round, an earlier step that read the version a later,
unordered step wrote (same hash, modified after the later step started) fails: its file is gone.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from jupyter_flow.flow.dag import Flow
from jupyter_flow.runtime.readiness import Task
from jupyter_flow.store.status import DONE, TERMINAL


@dataclass
class FileRace:
    reader: Task  # the later step in notebook order: its result may be stale
    writer: str  # the earlier step
    path: str
    rerun: bool  # the writer has ended: running the reader again now gives the top-to-bottom result
    message: str

    def error(self) -> dict:
        return {"type": "FileRace", "message": self.message}


def uses(record: dict) -> tuple[set[str], set[str]]:
    """(paths the task used: read, written or removed; those it changed: written or removed)."""
    files = record.get("files") or {}
    changed = set(files.get("written") or ()) | set(files.get("removed") or ())
    return set(files.get("read") or ()) | changed, changed


def _changed(record: dict, path: str) -> bool:
    files = record.get("files") or {}
    return path in (files.get("written") or {}) or path in (files.get("removed") or ())


def appended(record: dict, path: str) -> bool:
    """Whether the task only appended to `path` (a log): appends of unordered steps do not conflict."""
    files = record.get("files") or {}
    return bool(((files.get("written") or {}).get(path) or {}).get("append")) and path not in (files.get("read") or {})


class Races:
    def __init__(self, flow: Flow, tasks: dict[str, list[Task] | None]):
        self.flow, self.tasks = flow, tasks
        self.order = {n: i for i, n in enumerate(flow.notebook.steps)}
        self.readers: dict[str, dict[int, Task]] = {}  # path -> ended tasks (by id) that only read it
        self.writers: dict[str, dict[int, Task]] = {}  # path -> ended tasks (by id) that changed it
        self.expected: dict[str, list[str]] = {}  # path -> steps predicted to write it
        for s in flow.steps.values():
            for path in getattr(s, "files_written", None) or ():
                self.expected.setdefault(path, []).append(s.name)
        self._ancestors: dict[str, set[str]] = {}

    def ancestors(self, name: str) -> set[str]:
        if name not in self._ancestors:
            seen: set[str] = set()
            stack = [name]
            while stack:
                step = self.flow.steps[stack.pop()]
                for up in set(step.prev) | set(step.inputs.values()):
                    if up not in seen:
                        seen.add(up)
                        stack.append(up)
            self._ancestors[name] = seen
        return self._ancestors[name]

    def check(self, task: Task) -> list[FileRace]:
        """The races `task` (just ended, its record set) is part of, with the tasks that ended before it
        and with the steps still to end that are expected to write a file it used."""
        used, changed = uses(task.record)
        races = []
        for path in sorted(used):  # a race needs a change: a reader is compared with the writers only
            others = list(self.writers.get(path, {}).values())
            if path in changed:
                others += self.readers.get(path, {}).values()
            for other in others:
                if other is not task and other.step != task.step:
                    race = self._pair(task, other, path)
                    if race:
                        races.append(race)
            for writer in self.expected.get(path, ()):
                if self._unfinished(writer) and self._unordered(writer, task.step):
                    races.append(self._race(task, writer, path, "before"))
            (self.writers if path in changed else self.readers).setdefault(path, {})[id(task)] = task
        return races

    def _pair(self, a: Task, b: Task, path: str) -> FileRace | None:
        """The race between `a` (just ended) and `b` (ended before) over `path`, if any. Forward: the later
        step used a file the earlier one changed while it ran (it may have seen the old one). Backward:
        the earlier step read a file the later one changed while it ran, and read the later one's version."""
        early, late = (a, b) if self.order.get(a.step, 0) < self.order.get(b.step, 0) else (b, a)
        if (early.record.get("ended") or "") <= (late.record.get("started") or ""):
            return None  # the earlier step ended before the later one started, as top to bottom
        if early.step in self.ancestors(late.step):
            return None
        if _changed(early.record, path):
            if appended(early.record, path) and appended(late.record, path):
                return None  # two steps adding lines to one log
            if not _changed(late.record, path) and _read(late.record, path) == _final(early.record, path):
                return None  # it read the file as the earlier step left it
            victim, race = late, self._race(late, early.step, path, "while")
        elif _changed(late.record, path) and path in (early.record.get("files") or {}).get("read", {}):
            seen = (early.record["files"]["read"][path] or {}).get("mtime")
            if _read(early.record, path) != _final(late.record, path) or \
                    _read(late.record, path) == _read(early.record, path) or \
                    (seen is not None and seen < _epoch(late.record.get("started")) - 1):
                return None  # it read the version from before the later step's change
            victim, race = early, self._backward(early, late.step, path)
        else:
            return None
        if victim.status not in DONE and victim is not a:  # failed already (a race found before): used by no one
            return None
        return race

    def _unfinished(self, name: str) -> bool:
        tasks = self.tasks.get(name)
        return tasks is None or any(t.status not in TERMINAL for t in tasks)

    def _unordered(self, writer: str, reader: str) -> bool:
        return self.order.get(writer, 0) < self.order.get(reader, 0) and writer not in self.ancestors(reader)

    def _race(self, reader: Task, writer: str, path: str, when: str) -> FileRace:
        """`reader` (later in the notebook) used `path` `when` ("while", "before") `writer` changed it."""
        read = path in (reader.record.get("files") or {}).get("read", {})
        what = (f"step {reader.step!r} read it" if read else f"step {reader.step!r} wrote it") + \
            f" {when} step {writer!r}, which comes earlier in the notebook, wrote it"
        stale = "may have used an old version" if read else "may have been overwritten by the earlier step"
        message = (f"file {path}: {what} (no edge orders them), so {reader.step!r} {stale}. Fix: add the tag "
                   f"prev:{writer} to step {reader.step!r}; {NEXT_RUN}")
        return FileRace(reader, writer, path, when == "while", message)

    def _backward(self, reader: Task, writer: str, path: str) -> FileRace:
        """`reader` (earlier in the notebook) read `writer`'s version of `path`: its own is gone, so no rerun."""
        message = (f"file {path}: step {reader.step!r} read it while step {writer!r}, which comes later in the "
                   f"notebook, wrote it (no edge orders them), so {reader.step!r} read {writer!r}'s version, "
                   f"where top to bottom it reads the one before. Fix: add the tag prev:{reader.step} to step "
                   f"{writer!r}; {NEXT_RUN}")
        return FileRace(reader, writer, path, False, message)


NEXT_RUN = "the next run orders them by itself (it reads this run's records)"
_UNKNOWN = object()


def _read(record: dict, path: str):
    """The hash of `path` as the task first read it (None: it was not there); _UNKNOWN if it did not read it."""
    read = (record.get("files") or {}).get("read") or {}
    return read[path].get("hash") if path in read else _UNKNOWN


def _epoch(iso: str | None) -> float:
    try:
        return datetime.fromisoformat(iso).timestamp()
    except (TypeError, ValueError):
        return float("inf")


def _final(record: dict, path: str):
    """The hash of `path` as the task left it (None: removed)."""
    files = record.get("files") or {}
    written = (files.get("written") or {}).get(path)
    return written["hash"] if written else None
