"""Run and task records: typed (statuses from store/status.py), with one rule for the effective status.

Every reader (client, CLI views, server, gc, fsck) and every writer (runtime, task, executors)
goes through here; nobody else builds a record key or decides what a status means. A record that
cannot be read is not skipped: it comes back with status `damaged`, so it is shown, and nothing it
may reference is ever collected.
"""
from __future__ import annotations

import bisect
import dataclasses
import functools
import getpass
import heapq
import json
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from jupyter_flow.errors import FlowError, NotFound, StoreError
from jupyter_flow.store import layout
from jupyter_flow.store.backends import LocalBackend
from jupyter_flow.store.blobs import new_hash
from jupyter_flow.store.status import FINISHED, RUN_STATUSES, TERMINAL, Status


def current_user() -> str:
    """The user runs are recorded for, and whose runs "my runs" shows (JupyterHub's name on a hub)."""
    return os.environ.get("JUPYTERHUB_USER") or getpass.getuser()


def check_status(status: str | None) -> str | None:
    if status is not None and status not in RUN_STATUSES:
        raise FlowError(f"unknown status {status!r}; one of {', '.join(RUN_STATUSES)}")
    return status


@functools.cache
def _field_names(cls) -> dict[str, None]:
    """The fields of a record class but `extra`, in order (dataclasses.fields is slow for 10,000 records)."""
    return {f.name: None for f in dataclasses.fields(cls) if f.name != "extra"}


class _Record:
    """A dataclass that keeps the fields it does not know (written by newer code) in `extra`."""

    @classmethod
    def from_dict(cls, data: dict):
        if not isinstance(data, dict):
            raise ValueError(f"a record is a JSON object, not {type(data).__name__}")
        names = _field_names(cls)
        known = {k: v for k, v in data.items() if k in names}
        try:
            known["status"] = Status(known.get("status", Status.QUEUED))
            return cls(**known, extra={k: v for k, v in data.items() if k not in names})
        except (TypeError, ValueError) as e:
            raise ValueError(f"not a {cls.__name__} ({e})") from None

    def to_dict(self) -> dict:
        out = {name: getattr(self, name) for name in _field_names(type(self))}
        out["status"] = Status(self.status).value
        return {**out, **self.extra}

    def __getitem__(self, name):  # read and written like the JSON it is
        return self.to_dict()[name]

    def get(self, name, default=None):
        return self.to_dict().get(name, default)

    def __setitem__(self, name, value) -> None:
        if name in _field_names(type(self)):
            setattr(self, name, Status(value) if name == "status" else value)
        else:
            self.extra[name] = value

    def update(self, **fields) -> None:
        for name, value in fields.items():
            self[name] = value


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

    def with_effective_status(self) -> RunRecord:
        status = self.effective_status()
        return self if status == self.status else dataclasses.replace(self, status=status)


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
    cache_parts: dict | None = None  # what cache_key was made from (runtime/reuse.py: cache_parts)
    reason: str | None = None  # one line: why the task ran, or why it was reused
    continued: dict | None = None  # a resumed step run from its failing cell: {"run", "cell", "line"}
    warnings: list = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    notebook: str | None = None
    foreach: dict | None = None
    failure: dict | None = None
    # files the step used (see files.py): {"read": {PATH: fingerprint}, "written": {RELPATH: {"hash",
    # "size", "mtime"[, "append": true]}} (final bytes stored as blobs), "removed": [RELPATH],
    # "network": ["host:port"]}
    files: dict = field(default_factory=dict)
    packages: dict = field(default_factory=dict)  # distribution -> version, of the modules the step used
    # the folder of the notebook, log and failure snapshot of the attempt this record is of (layout.attempt_key);
    # a reused or cached task's is its origin's. None in records written before attempts had folders.
    files_at: str | None = None
    damaged: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return layout.task_key(self.flow, self.run_id, self.step, self.index)

    @property
    def files_key(self) -> str:
        """Where its notebook, log and failure snapshot are: its attempt's folder (a cached or reused
        task's are its origin's); beside the task record in runs recorded before attempt folders."""
        return self.files_at or (self.origin["key"] if self.origin else self.key)

    def blob_refs(self) -> set[str]:
        """Digests of the values it received and produced (and their neutral copies, see store/neutral.py),
        and of the files it wrote."""
        refs = set()
        written = (self.files or {}).get("written") or {}
        for meta in list(self.outputs.values()) + list(self.inputs.values()) + list(written.values()):
            if isinstance(meta, dict):
                refs.update(h for h in [*(meta.get("hashes") or [meta.get("hash")]), meta.get("neutral")] if h)
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
              limit: int | None = None, batch: str | None = None, before: str | None = None) -> list[RunRecord]:
    """Run records with their effective status, newest first; damaged ones included. `batch`: only
    the runs of that batch (see runtime/batches.py), whoever started them. `before`: only the runs
    older than that run id (the next page after a page ending with it; the runs skipped are not read).

    Which runs exist comes from the run ledger and a listing of the run folders newer than it (see
    run_ids); a finished run's record comes from the index (a few files per flow), any other run's
    from its run.json (see RunIndex)."""
    check_status(status)
    if flow is not None:
        layout.check_flow_name(flow)
    if before is not None:
        layout.check_run_id(before)
    folders = _run_folders(store, flow)
    index = RunIndex(store)
    runs = []
    for run_flow, run_id in _newest_first(folders, before):
        if (user or status) and run_id in index.excluded(run_flow, user, status):
            continue  # a finished run the index summary shows is not wanted: nothing read
        fact = index.fact(run_flow, run_id) if user or status else None
        sparse = fact is not None and not index.dense(run_flow, fact[0], user, status)
        try:
            run = index.get(run_flow, run_id, sparse).with_effective_status()
        except NotFound:
            continue  # deleted meanwhile, or a folder whose run.json is not written yet
        if (user and run.user != user and run.status != Status.DAMAGED) or (status and run.status != status):
            continue
        if batch and (run.extra.get("batch") or {}).get("id") != batch:
            continue
        runs.append(run)
        if limit and len(runs) >= limit:
            break
    index.save(folders)
    return runs


def _run_folders(store, flow: str | None = None, ledger: bool = True) -> dict[str, list[str]]:
    """{flow: the names of its runs, newest first}: which runs exist, from each flow's ledger and the
    folders newer than it (run_ids), or (`ledger` False) from listing every run folder."""
    flows = [flow] if flow else [f for f in store.children(layout.FLOWS_FOLDER) if layout.FLOW_NAME.match(f)]
    if not ledger:
        return {f: sorted(store.children(layout.runs_folder(f)), reverse=True) for f in flows}
    return {f: run_ids(store, f) for f in flows}


def _newest_first(folders: dict[str, list[str]], before: str | None = None):
    """(flow, run_id) of every run of `folders` (older than `before`, if given), newest first across
    flows, checked as they are reached (a listing of 20 looks at 20 names, not 10,000)."""
    def runs_of(flow, names):
        start = 0 if before is None else len(names) - bisect.bisect_left(names[::-1], before)  # names >= before
        return ((run_id, flow) for run_id in names[start:] if layout.RUN_ID.match(run_id))

    for run_id, flow in heapq.merge(*(runs_of(f, names) for f, names in folders.items()), reverse=True):
        yield flow, run_id


# -- the run index: finished runs' records, so that a listing reads a few files, not one per run ----


class RunIndex:
    """A cache of finished runs' records, per flow, in files of up to CHUNK runs each; run.json stays
    the truth. A file is named by the first run id it covers (layout.index_chunk) and covers the ids
    up to the next file's name, so a newest-first listing of 20 or 50 runs reads one or two files,
    however many runs the flow has and however they are spread in time.

    It can never hide or misreport a run: which runs exist is read from the run ledger and the run
    folders newer than it (run_ids), not from the index files; only a record whose status is finished
    is taken from them (a finished run's run.json is never written again, so its copy cannot go
    stale); any other run, and any run the index lacks, is read from its run.json. Readers fill it:
    what a listing had to read from run.json, if finished, is written to the file covering it
    (whole-file writes: atomic on local disks and object stores alike). Two listings writing at once
    may drop each other's additions, which the next listing adds again. A file whose digest does not
    match counts as empty; `jupyter flow fsck` rebuilds them all from the run.json files.

    The summary (layout.index_summary, one file a flow) says, for each index file, which users and
    statuses it holds and which of its runs have each pair. A filtered listing skips every run the
    summary shows cannot match, and reads a run that can from its index file if that file has
    enough runs the listing wants (DENSE on a local disk, DENSE_REMOTE on an object store), else
    from its run.json (a filter 34 of 9,000 runs match finds about one in each file). What it says
    of a run is true for as long as the run exists (a finished run's user and status never change),
    so a stale summary (a lost update, a copy from long ago) can only lack runs: those are read as
    without a summary, and the summary gets them at the next write. A run gc removed is not listed
    whatever the summary says (run_ids).

    The summary also carries the whole records of the runs of each file's rare groups (a user and
    status with fewer than COPY_BELOW runs in it: at 20 users, their failed and cancelled runs), so a
    filter few runs match reads the ledger, one listing and the summary, not one request per run it
    shows. A finished run's record never changes, so the copy cannot go stale; one whose user or status
    is not its group's, or that is not a finished record of its id, is not used. The copies are one JSON
    text inside the summary, parsed only by a listing that wants a rare run of a file it does not read
    (the common filters read those files: the copies cost them no parsing).
    """

    CHUNK = 256
    # a file with fewer wanted runs than this: read their run.json instead. Measured on a local disk: an
    # index file of 256 runs takes 12 ms to read, a run.json 0.2 ms; on an object store both are one request
    DENSE, DENSE_REMOTE = 32, 2
    # a group of an index file with fewer runs than this has its runs' records in the summary: a filter for it
    # would cost a request of that file (its index file, or a run.json) for 1-3 records
    COPY_BELOW = DENSE_REMOTE * 2

    def __init__(self, store):
        self.store = store
        self.dense_at = self.DENSE if isinstance(store.backend, LocalBackend) else self.DENSE_REMOTE
        self.starts: dict[str, list[str]] = {}  # flow -> the names of its index files, sorted
        self.chunks: dict[tuple[str, str], dict] = {}  # (flow, start) -> {run_id: record dict}, as read
        self.learned: dict[str, dict] = {}  # flow -> {run_id: record dict} to add
        self.summaries: dict[str, dict] = {}  # flow -> {start: [[user, status, [run ids]], ...]}, as read
        self.facts: dict[str, dict] = {}  # flow -> {run_id: (start, user, status)}, from its summary
        self.copied: dict[str, str] = {}  # flow -> its summary's copies, as JSON text (parsed when first wanted)
        self.copies: dict[str, dict] = {}  # flow -> {run_id: record dict} of its rare groups, from its summary
        self.rare: dict[str, set] = {}  # flow -> the runs of its summary's groups of fewer than COPY_BELOW
        self.uncopied: dict[str, dict] = {}  # flow -> {run_id: record dict} read from run.json for want of a copy
        self.unsummarized: dict[str, set] = {}  # flow -> starts of files read that hold runs the summary lacks
        # (flow, start, user, status) -> how many of its runs match; (flow, None, user, status) -> those that do not
        self.wanted: dict[tuple, int | set[str]] = {}

    def _start(self, flow: str, run_id: str) -> str | None:
        """The name of the index file that covers `run_id`."""
        if flow not in self.starts:
            self.starts[flow] = sorted(layout.parse_index_chunk(k) for k in self.store.glob(layout.index_chunks(flow)))
        i = bisect.bisect_right(self.starts[flow], run_id)
        return self.starts[flow][i - 1] if i else None

    def _chunk(self, flow: str, start: str | None) -> dict:
        if start is None:
            return {}
        if (flow, start) not in self.chunks:
            self.chunks[flow, start] = _read_chunk(self.store, layout.index_chunk(flow, start))
        return self.chunks[flow, start]

    def _summary(self, flow: str) -> dict:
        if flow not in self.summaries:
            self.summaries[flow], self.copied[flow] = _read_summary(self.store, flow)
            self.facts[flow] = facts = {}
            for start, groups in self.summaries[flow].items():
                for user, status, ids in groups:
                    facts.update(dict.fromkeys(ids, (start, user, status)))
            self.rare[flow] = {i for groups in self.summaries[flow].values() for _, _, ids in groups
                               if len(ids) < self.COPY_BELOW for i in ids}
        return self.summaries[flow]

    def _copies(self, flow: str) -> dict:
        """{run_id: record dict} of the rare runs the flow's summary copies, each checked against its group."""
        if flow not in self.copies:
            self._summary(flow)
            try:
                copies = json.loads(self.copied.pop(flow) or "{}")
            except (ValueError, RecursionError):
                copies = None
            facts = self.facts[flow]
            self.copies[flow] = {i: {**r, "flow": flow} for i, r in copies.items() if i in facts
                                 and _is_finished_record(i, r) and (r.get("user"), r.get("status")) == facts[i][1:]
                                 } if isinstance(copies, dict) else {}
        return self.copies[flow]

    def excluded(self, flow: str, user: str | None, status: str | None) -> set[str]:
        """The finished runs the summary shows are not of `user` with `status` (None: any)."""
        key = (flow, None, user, status)
        if key not in self.wanted:
            self.wanted[key] = set().union(*(ids for groups in self._summary(flow).values()
                                             for u, s, ids in groups if not _matches(u, s, user, status)))
        return self.wanted[key]

    def fact(self, flow: str, run_id: str) -> tuple[str, str | None, str] | None:
        """(index file, user, status) of a finished run the summary knows; None for any other."""
        self._summary(flow)
        return self.facts[flow].get(run_id)

    def dense(self, flow: str, start: str, user: str | None, status: str | None) -> bool:
        """Whether the index file `start` holds enough runs of `user` with `status` (None: any) to be read."""
        key = (flow, start, user, status)
        if key not in self.wanted:
            self.wanted[key] = sum(len(ids) for u, s, ids in self._summary(flow).get(start, ())
                                   if _matches(u, s, user, status) and len(ids) >= self.COPY_BELOW)  # not copied
        wanted = self.wanted[key]
        return isinstance(wanted, int) and wanted >= self.dense_at

    def get(self, flow: str, run_id: str, sparse: bool = False) -> RunRecord:
        """The run's record: from the index file covering it, or from its run.json. `sparse`: the
        listing wants few runs of that file, so read run.json unless the file has been read already.
        A sparse run whose record the summary copies (a listing that read the summary) is read from there."""
        copied = self._copies(flow).get(run_id) if sparse and run_id in self.rare.get(flow, ()) else None
        if copied is not None:
            try:
                return RunRecord.from_dict(copied)
            except ValueError:
                pass  # not a record: read it as if the summary had no copy
        fact = self.facts.get(flow, {}).get(run_id)  # its file, as the summary says: no listing of the files
        start = fact[0] if fact else self._start(flow, run_id)  # (a file since split or gone: run.json is read)
        cached = None if sparse and (flow, start) not in self.chunks else self._chunk(flow, start).get(run_id)
        if cached is not None:
            try:
                run = RunRecord.from_dict(cached)
                if flow in self.facts and run_id not in self.facts[flow]:  # (a listing without filter reads none)
                    self.unsummarized.setdefault(flow, set()).add(start)
                return run
            except ValueError:
                pass  # not a record: read run.json
        run = read_run(self.store, layout.run_json(flow, run_id))
        if run.status in FINISHED and not sparse:
            self.learned.setdefault(flow, {})[run_id] = run.to_dict()
        elif run.status in FINISHED and run_id in self.rare.get(flow, ()):
            self.uncopied.setdefault(flow, {})[run_id] = run.to_dict()  # the summary lacks its copy: add it
        return run

    def save(self, folders: dict[str, list[str]]) -> None:
        """Write what was learned to the files covering it, leaving out runs whose folders are gone
        (`folders`: see _run_folders), and the summaries of the files written or found to hold runs
        their summary lacks. Best effort: a store this process cannot write to is read as before."""
        written: dict[str, dict] = {}  # flow -> {start: {run_id: record dict}} now in the store
        for flow, new in self.learned.items():
            present = set(folders.get(flow, ()))
            groups: dict[str | None, dict] = {}
            for run_id, rec in new.items():
                groups.setdefault(self._start(flow, run_id), {})[run_id] = rec
            for start, recs in groups.items():
                runs = {i: r for i, r in {**self._chunk(flow, start), **recs}.items() if i in present}
                try:
                    written.setdefault(flow, {}).update(_write_chunks(self.store, flow, runs, start or min(recs),
                                                                      self.CHUNK))
                except StoreError:
                    return
        for flow, starts in self.unsummarized.items():
            for start in starts - set(written.get(flow, ())):
                written.setdefault(flow, {})[start] = self._chunk(flow, start)
        for flow in self.uncopied:
            written.setdefault(flow, {})
        for flow, files in written.items():
            present = set(folders.get(flow, ()))
            summary = {**self._summary(flow), **{start: _groups(runs) for start, runs in files.items()}}
            known = {**self._copies(flow), **self.uncopied.get(flow, {})}  # records the summary may copy
            for runs in [*(runs for (f, _), runs in self.chunks.items() if f == flow), *files.values()]:
                known.update(runs)
            try:
                _write_summary(self.store, flow, summary, present, known)
            except StoreError:
                return
        self.learned, self.unsummarized, self.uncopied = {}, {}, {}


def _matches(run_user: str | None, run_status: str, user: str | None, status: str | None) -> bool:
    """Whether a finished run of `run_user` with `run_status` is listed for the filter (user, status)."""
    return (not user or run_user == user) and (not status or run_status == status)


def _is_finished_record(run_id: str, record) -> bool:
    return isinstance(record, dict) and record.get("id") == run_id and record.get("status") in FINISHED


def _read_digested(store, key: str):
    """The JSON body of an index file or summary (the hex digest of the body, a newline, the body);
    None if it is missing or damaged."""
    try:
        return _undigested(store.read_bytes(key))
    except (NotFound, StoreError):
        return None


def _undigested(raw: bytes):
    """The JSON body of `raw` (the hex digest of the body, a newline, the body); None if it is damaged."""
    digest, _, body = raw.partition(b"\n")
    h = new_hash()
    h.update(body)
    try:
        return json.loads(body) if h.hexdigest().encode() == digest else None
    except (ValueError, RecursionError):
        return None


def _write_digested(store, key: str, data) -> None:
    store.write_bytes(key, _digested(data))


def _digested(data) -> bytes:
    body = json.dumps(data, separators=(",", ":"), default=str).encode()
    h = new_hash()
    h.update(body)
    return h.hexdigest().encode() + b"\n" + body


def _read_chunk(store, key: str) -> dict:
    """{run_id: record dict} of an index file; empty if it is missing or damaged."""
    runs = _read_digested(store, key)
    if not isinstance(runs, dict):
        return {}
    return {i: r for i, r in runs.items() if _is_finished_record(i, r)}


def _write_chunks(store, flow: str, runs: dict, start: str, size: int) -> dict[str, dict]:
    """Write `runs` as index files of up to `size` runs, the first named `start`, the others by
    their first run id (written first, so the ids they take over are never uncovered); {name: its runs}."""
    ids = sorted(runs)
    pieces = [ids[i:i + size] for i in range(0, len(ids), size)] or [[]]
    files = {}
    for n, piece in reversed(list(enumerate(pieces))):
        files[start if n == 0 else piece[0]] = {i: runs[i] for i in piece}
        _write_digested(store, layout.index_chunk(flow, start if n == 0 else piece[0]), {i: runs[i] for i in piece})
    return files


def _groups(runs: dict) -> list:
    """The summary of an index file's runs {run_id: record dict}: [[user, status, [run ids]], ...]."""
    groups: dict[tuple, list] = {}
    for run_id, rec in runs.items():
        groups.setdefault((rec.get("user"), rec.get("status")), []).append(run_id)
    return [[user, status, sorted(ids)] for (user, status), ids in groups.items()]


def _read_summary(store, flow: str) -> tuple[dict, str]:
    """({index file name: [[user, status, [run ids]], ...]}, the JSON text of {run id: record dict} of its
    rare groups) of a flow; empty if missing or damaged. A group that is not (a user or null, a finished
    status, run ids) is left out."""
    data = _read_digested(store, layout.index_summary(flow))
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict):
        return {}, ""
    out = {}
    for start, groups in files.items():
        if isinstance(groups, list):
            out[start] = [g for g in groups if _is_group(g)]
    copies = data.get("records")
    return out, copies if isinstance(copies, str) else ""


def _is_group(g) -> bool:
    return (isinstance(g, list) and len(g) == 3 and isinstance(g[0], (str, type(None))) and g[1] in FINISHED
            and isinstance(g[2], list) and set(map(type, g[2])) <= {str})


def _write_summary(store, flow: str, files: dict, present: set, known: dict) -> None:
    """Write the summary of a flow's index files, leaving out runs whose folders are gone (`present`: the
    others) and files left with no run, with the records (from `known`, {run id: record dict}) of the
    runs of groups smaller than RunIndex.COPY_BELOW."""
    kept, copies = {}, {}
    for start, groups in files.items():
        groups = [[user, status, [i for i in ids if i in present]] for user, status, ids in groups]
        if any(ids for _, _, ids in groups):
            kept[start] = [g for g in groups if g[2]]
        for user, status, ids in groups:
            if len(ids) < RunIndex.COPY_BELOW:
                copies.update((i, _compact(known[i])) for i in ids if i in known and _is_finished_record(i, known[i])
                              and (known[i].get("user"), known[i].get("status")) == (user, status))
    _write_digested(store, layout.index_summary(flow), {"flow": flow, "files": kept, "records": json.dumps(
        copies, separators=(",", ":"), default=str)})


def _compact(record: dict) -> dict:
    """A run record without its flow (the summary's) and the fields at their defaults (RunRecord.from_dict
    gives them back); id, user and status stay, to be checked against the summary's group."""
    return {k: v for k, v in record.items() if k in ("id", "user", "status")
            or (k != "flow" and _RUN_DEFAULTS.get(k, _RUN_DEFAULTS) != v)}


_RUN_DEFAULTS = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                 for f in dataclasses.fields(RunRecord) if f.default is not dataclasses.MISSING
                 or f.default_factory is not dataclasses.MISSING}


def rebuild_index(store, write: bool = True) -> list[RunRecord]:
    """Every run read from its run.json (the truth; damaged ones included), newest first, and (if
    `write`) the index and its summaries rewritten from them: for `jupyter flow fsck`."""
    runs, finished = [], {}
    folders = _run_folders(store, ledger=False)
    for flow, run_id in _newest_first(folders):
        try:
            run = read_run(store, layout.run_json(flow, run_id))
        except NotFound:
            continue
        runs.append(run.with_effective_status())
        if run.status in FINISHED:
            finished.setdefault(flow, {})[run_id] = run.to_dict()
    if write:
        old = set(store.glob(layout.index_chunks())) | set(store.glob(layout.index_summaries()))
        for flow, flow_runs in finished.items():
            files = _write_chunks(store, flow, flow_runs, min(flow_runs), RunIndex.CHUNK)
            _write_summary(store, flow, {start: _groups(recs) for start, recs in files.items()}, set(flow_runs),
                           flow_runs)
            old -= {layout.index_chunk(flow, start) for start in files} | {layout.index_summary(flow)}
        for key in old:
            store.delete(key)
        for flow in folders:
            _advance(store, flow, *_read_ledger(store, flow), rebuild=True)
    return runs


# -- the run ledger: which runs exist, without listing every run folder -------------------------------
# Each flow's ledger (layout.index_ledger) holds `ids`, the flow's runs up to `upto` (a layout.time_bound),
# and `gone`, the runs gc is removing. Which runs exist = (ids | the run folders named after `upto`) -
# gone: on S3 one GET and one listing of the newest folders (ListObjectsV2 StartAfter) instead of a
# listing of every folder (10,000 runs: 10 pages of 1,000, one after another).
#
# The run folders stay the truth; the ledger is only ever changed by compare-and-swap (the backends'
# write_if: a lock on a local folder, a conditional PUT on S3) on the exact bytes read, `gen` counting
# the changes, so no stale copy overwrites a newer one:
# - a listing moves `upto` on (_advance) when LEDGER_STEP or more folders lie between `upto` and the
#   time LEDGER_MARGIN ago: it announces the new bound first (`pending`), lists the folders after the
#   old one, and writes ids and the new bound only if nothing changed the ledger meanwhile;
# - a run's first write (write_run) adds its id itself if the ledger covers its time already, or is
#   about to (`pending`): a run whose folder appears after a listing moved past its id (a runner
#   started long after its id was made, a clock behind) is never hidden. It checks before and after
#   writing run.json;
# - gc (remove_runs) adds the runs to `gone` and takes them out of `ids` before deleting their folders,
#   and takes them out of `gone` after: a run gc removes is never shown, even while it is half deleted.
# A missing or damaged ledger costs one listing of every folder (and is written again); `jupyter flow
# fsck` rewrites it from the folders. A ledger brought back from long ago could show runs gc has removed
# since: restore none (fsck).
LEDGER_MARGIN = 600.0  # seconds: runs made in the last ten minutes are always listed from their folders
LEDGER_STEP = 64  # folders newer than the ledger's bound (and older than the margin) before it moves on
_ADMITTED: set[tuple[str, str, str]] = set()  # (store, flow, run id) of runs this process has written


def run_ids(store, flow: str) -> list[str]:
    """The names of the flow's runs, newest first: its ledger's ids and the folders after its bound, but
    the runs gc is removing. Moves the ledger on (or writes it) when that saves later listings' time."""
    raw, ledger = _read_ledger(store, flow)
    folder = layout.runs_folder(flow)
    newer = store.children(folder, after=ledger["upto"] or None) if ledger else store.children(folder)
    names = (set(newer) | set(ledger["ids"])) - set(ledger["gone"]) if ledger else set(newer)
    bound = _bound()
    if (ledger is None and newer) or sum(1 for n in newer if n <= bound) >= LEDGER_STEP:  # no runs: nothing to write
        try:
            _advance(store, flow, raw, ledger)
        except StoreError:
            pass  # a store this process cannot write to: listed as now
    return sorted(names, reverse=True)


def remove_runs(store, runs) -> None:
    """Delete the runs (RunRecord) for gc: in each flow's ledger first (`gone`, so no listing shows them
    while their folders go), then their folders, then out of `gone`. Runs a gc killed halfway left in
    `gone` are deleted too (they stay hidden meanwhile)."""
    by_flow: dict[str, set[str]] = {}
    for run in runs:
        by_flow.setdefault(run.flow, set()).add(run.id)
    for flow, ids in by_flow.items():
        ledger = _change_ledger(store, flow, lambda led, ids=ids: {
            **led, "ids": sorted(set(led["ids"]) - ids), "gone": sorted(set(led["gone"]) | ids)})
        for run_id in sorted(set(ledger["gone"])):
            store.delete(layout.run_key(flow, run_id))
        done = set(ledger["gone"])
        _change_ledger(store, flow, lambda led, done=done: {**led, "gone": sorted(set(led["gone"]) - done)})


def _bound() -> str:
    return layout.time_bound(datetime.now(timezone.utc) - timedelta(seconds=LEDGER_MARGIN))


def _empty_ledger(flow: str) -> dict:
    return {"flow": flow, "gen": 0, "upto": "", "pending": "", "ids": [], "gone": []}


def _read_ledger(store, flow: str) -> tuple[bytes | None, dict | None]:
    """(its bytes, None if there are none; the ledger, None if it is missing or damaged)."""
    try:
        raw = store.read_bytes(layout.index_ledger(flow))
    except NotFound:
        return None, None
    data = _undigested(raw)
    ok = (isinstance(data, dict) and isinstance(data.get("gen"), int)
          and all(isinstance(data.get(k), str) for k in ("upto", "pending"))
          and all(isinstance(data.get(k), list) and all(isinstance(i, str) for i in data[k]) for k in ("ids", "gone")))
    return raw, data if ok else None


def _swap(store, flow: str, raw: bytes | None, new: dict) -> bool:
    """Write `new` as the flow's ledger if its bytes are still `raw` (None: there is none)."""
    return store.write_bytes_if(layout.index_ledger(flow), _digested({**new, "flow": flow}), lambda now: now == raw)


def _change_ledger(store, flow: str, change) -> dict:
    """Apply `change` (ledger -> ledger) to the flow's ledger by compare-and-swap until it holds (a missing
    or damaged ledger: to an empty one, which lists every folder); the ledger written."""
    while True:
        raw, ledger = _read_ledger(store, flow)
        new = change(ledger or _empty_ledger(flow))
        new["gen"] = (ledger or {"gen": 0})["gen"] + 1
        if _swap(store, flow, raw, new):
            return new


def _advance(store, flow: str, raw: bytes | None, ledger: dict | None, rebuild: bool = False) -> None:
    """Move the flow's ledger on to the time LEDGER_MARGIN ago: announce it (`pending`), list the run
    folders after the old bound (every folder if `rebuild`, fsck: then ids are the folders alone), and
    write the new bound and ids unless the ledger changed meanwhile. Gives up at any change: a ledger
    left behind costs time only."""
    bound, old = _bound(), ledger or _empty_ledger(flow)
    if not rebuild and old["upto"] >= bound:
        return
    announced = {**old, "gen": old["gen"] + 1, "pending": max(old["pending"], bound)}
    if not _swap(store, flow, raw, announced):
        return
    listed = store.children(layout.runs_folder(flow), after=None if rebuild else old["upto"] or None)
    covered = {n for n in listed if n <= bound and layout.RUN_ID.match(n)}
    ids = covered if rebuild else set(old["ids"]) | covered
    _swap(store, flow, _digested({**announced, "flow": flow}), {
        **announced, "gen": announced["gen"] + 1, "upto": max(bound, old["upto"]) if not rebuild else bound,
        "ids": sorted(ids - set(old["gone"]))})


def admit_run(store, flow: str, run_id: str) -> None:
    """Add `run_id` to the flow's ledger if the ledger covers (or is about to cover) its time and lacks it:
    what write_run does around a run's first write (a writer of run.json that bypasses write_run calls it
    before writing)."""
    try:
        while True:
            raw, ledger = _read_ledger(store, flow)
            if (ledger is None or run_id > max(ledger["upto"], ledger["pending"]) or run_id in ledger["ids"]
                    or run_id in ledger["gone"]):
                return
            if _swap(store, flow, raw, {**ledger, "gen": ledger["gen"] + 1, "ids": sorted({*ledger["ids"], run_id})}):
                return
    except StoreError:
        return  # a store this process cannot read the ledger of: write_run's own write says what is wrong


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
    """The task's failure snapshot (failure.json): variables, unpicklable names, modules, and the
    failing frames (`frames`: file, function, line, cell, source, locals, the last one's exception)."""
    return store.read_json(layout.in_task(task.files_key, layout.TASK_FAILURE))


def failure_refs(failure: dict) -> set[str]:
    """Digests a failure snapshot references: its variables, its frames' locals and exception."""
    refs = {meta["hash"] for meta in failure["variables"].values()}
    for frame in failure.get("frames") or []:
        refs |= {meta["hash"] for meta in (frame.get("locals") or {}).values()}
        refs |= {frame["exception"]["hash"]} if frame.get("exception") else set()
    return refs


# -- writing ---------------------------------------------------------------------------------------
def write_run(store, record) -> None:
    """Write a run record. The first write of a run by this process also makes sure listings see the
    run if its flow's ledger already covers its id's time (admit_run: before and after the write)."""
    run = record if isinstance(record, RunRecord) else RunRecord.from_dict(record)
    first = (store.url, run.flow, run.id) not in _ADMITTED
    if first:
        admit_run(store, run.flow, run.id)
    store.write_json(layout.run_json(run.flow, run.id), run.to_dict())
    if first:
        admit_run(store, run.flow, run.id)
        _ADMITTED.add((store.url, run.flow, run.id))


def write_task(store, record) -> bool:
    """Write a task record unless the one in the store is newer (see `supersedes`); whether it was
    written. The check and the write are one step for every writer of the key (a lock on a local
    folder, a conditional PUT on S3: see the backends' `write_if`), so a stale writer (a Dask worker
    paused or cut off while its task was retried elsewhere, that wakes up later) can never overwrite
    the newer attempt's record: its write is dropped, and readers, who read the one task.json, see
    the newest attempt."""
    task = record if isinstance(record, TaskRecord) else TaskRecord.from_dict(record)
    return store.write_json_if(layout.task_json(task.flow, task.run_id, task.step, task.index), task.to_dict(),
                               lambda old: supersedes(task, old))


def supersedes(new: TaskRecord, old: bytes | None) -> bool:
    """The one rule for which task record stands: `new` may replace the record `old` (its bytes; None
    if there is none) when `old` is of an earlier attempt, or of the same attempt and not yet ended
    (the end of an attempt is written once: the first end recorded stands, e.g. a lost worker's
    `WorkerLost` over that worker's late result). A record that cannot be read is replaced."""
    if old is None:
        return True
    try:
        data = json.loads(old)
        attempt, status = int(data.get("attempt") or 0), Status(data.get("status", Status.QUEUED))
    except (ValueError, TypeError, AttributeError, RecursionError):
        return True
    if new.attempt != attempt:
        return new.attempt > attempt
    return status not in TERMINAL


# -- pins: runs gc never removes -----------------------------------------------------------------------
def pin(store, run_id: str, note: str | None = None) -> dict:
    """Pin the run `run_id` (a unique prefix is enough): `gc` never removes it nor what it needs. The
    pin is a key of its own (layout.pin), never a rewrite of run.json; pinning again replaces the note."""
    run = find_run(store, run_id)
    record = {"run_id": run.id, "flow": run.flow, "by": current_user(),
              "at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "note": note}
    store.write_json(layout.pin(run.id), record)
    return record


def unpin(store, run_id: str) -> dict:
    """Remove the pin of `run_id`; the pin it had. NotFound if the run is not pinned."""
    run = find_run(store, run_id)
    old = pins(store).get(run.id)
    if old is None:
        raise NotFound(f"run {run.id} is not pinned; `jupyter flow runs` marks pinned runs")
    store.delete(layout.pin(run.id))
    return old


def pins(store, run_ids=None) -> dict[str, dict]:
    """{run id: its pin (run_id, flow, by, at, note)} of every pinned run (of those in `run_ids`, if
    given: only their pins are read). A pin that cannot be read still pins its run."""
    found = {}
    wanted = None if run_ids is None else set(run_ids)
    for name in store.children(layout.PINS_FOLDER):
        run_id = layout.parse_pin(name)
        if run_id is None or (wanted is not None and run_id not in wanted):
            continue
        try:
            record = store.read_json(layout.pin(run_id))
        except NotFound:
            continue  # unpinned meanwhile
        except StoreError as e:
            record = {"run_id": run_id, "damaged": str(e)}
        found[run_id] = record if isinstance(record, dict) else {"run_id": run_id, "damaged": "not a JSON object"}
    return found
