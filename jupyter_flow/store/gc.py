"""`jupyter flow gc`: delete old runs, then the blobs no remaining run references.

Whose runs: the caller's (records.current_user(): $JUPYTERHUB_USER, else the login name) unless
`all_users`; `keep` counts the newest runs per flow of each user being collected, so nobody's gc
deletes a colleague's runs, and `--all-users` keeps N of everyone's. Runs that recorded no user
are collected only with `all_users`.

Never deletes a running or damaged run, a pinned run (records.pin), a run a kept run was resumed
from (its `origin_run`), nor the origin runs a kept run's reused or cached tasks live in (their
notebooks, logs and failure snapshots are that run's files); what those keep, they keep in turn.
Never deletes a blob that a kept run references (as output, input or failure-snapshot variable),
nor a blob younger than an hour (a running task may have just written it: writing a blob always
refreshes its date). If any record of a kept run cannot be read, no blob is collected at all: what
it referenced is unknown. Just before deleting, the runs and pins are listed again, so a run pinned
or resumed while gc was reading is spared. Temporary files of writes that died over an hour ago
are removed.
"""
from __future__ import annotations

import time

from jupyter_flow.errors import FlowError
from jupyter_flow.store import layout, open_store, records
from jupyter_flow.store.status import Status

FRESH_SECONDS = 3600


def collect(store=None, keep: int = 10, flow: str | None = None, dry_run: bool = False,
            all_users: bool = False) -> dict:
    """Delete (unless `dry_run`) what gc may; a report: `runs` (ids), `by_user` ({user: [{id, flow,
    status, created}]}), `blobs` (keys), `bytes`, `kept` (runs), `temps`, `unknown` (unreadable records)."""
    if not isinstance(keep, int) or keep < 0:
        raise FlowError(f"--keep {keep}: give the number of newest runs to keep per flow (0 or more)")
    store = open_store(store)
    if flow is not None:
        layout.check_flow_name(flow)
    user = None if all_users else records.current_user()
    runs = records.list_runs(store)
    groups: dict[tuple, list] = {}
    for run in runs:
        if (flow is None or run.flow == flow) and (user is None or run.user == user):
            groups.setdefault((run.user, run.flow), []).append(run)
    doomed_ids = {r.id for group in groups.values() for r in group[keep:]
                  if r.status not in (Status.RUNNING, Status.DAMAGED)}
    tasks = {run.id: records.list_tasks(store, run) for run in runs}
    _spare_needed(runs, tasks, doomed_ids, records.pins(store))
    if doomed_ids:  # pinned or resumed meanwhile: look again
        known = {r.id for r in runs}
        runs += [r for r in records.list_runs(store) if r.id not in known]
        tasks.update({r.id: records.list_tasks(store, r) for r in runs if r.id not in tasks})
        _spare_needed(runs, tasks, doomed_ids, records.pins(store))
    referenced, unknown = _references(store, [r for r in runs if r.id not in doomed_ids], tasks)
    blobs, size = ([], 0) if unknown else _unreferenced_blobs(store, referenced)
    temps = store.stale_temp_files(FRESH_SECONDS)
    doomed = [r for r in runs if r.id in doomed_ids]
    if not dry_run:
        # runs first: a crash here leaves blobs behind, never a run without its blobs; marked in their flow's
        # run ledger while they go, so no listing shows a run half deleted
        records.remove_runs(store, doomed)
        for key in blobs + temps:
            store.delete(key)
        _drop_cache_entries(store, doomed_ids)
    by_user: dict[str | None, list] = {}
    for r in doomed:
        by_user.setdefault(r.user, []).append({"id": r.id, "flow": r.flow, "status": str(r.status),
                                               "created": r.created})
    return {"runs": [r.id for r in doomed], "by_user": by_user, "blobs": blobs, "bytes": size,
            "kept": len(runs) - len(doomed), "temps": temps, "unknown": unknown}


def _spare_needed(runs, tasks: dict, doomed_ids: set, pins: dict) -> None:
    """Take out of `doomed_ids` the pinned runs and every run a kept run needs: the run it was resumed
    from, and the origin runs its reused or cached tasks live in (their files are the origin's)."""
    doomed_ids -= set(pins)
    changed = True
    while changed:
        changed = False
        for run in runs:
            if run.id in doomed_ids:
                continue
            needed = {run.origin_run} | {t.origin.get("run_id") for t in tasks.get(run.id, ()) if t.origin}
            if needed & doomed_ids:
                doomed_ids -= needed
                changed = True


def _references(store, kept, tasks: dict) -> tuple[set, list]:
    """(digests the kept runs reference, records that could not be read)."""
    referenced, unknown = set(), []
    for run in kept:
        for task in tasks[run.id]:
            if task.status == Status.DAMAGED:
                unknown.append(layout.task_json(task.flow, task.run_id, task.step, task.index))
            referenced |= task.blob_refs()
            snapshots = [k for pattern in layout.failure_snapshots(task.key) for k in store.glob(pattern)]
            for key in snapshots:  # the snapshot of every attempt
                try:
                    referenced |= records.failure_refs(store.read_json(key))
                except (FlowError, KeyError, TypeError, AttributeError):
                    unknown.append(key)
    return referenced, unknown


def _unreferenced_blobs(store, referenced: set) -> tuple[list, int]:
    blobs, size = [], 0
    cutoff = time.time() - FRESH_SECONDS
    for key in store.glob(layout.ALL_BLOBS):
        digest = layout.parse_blob(key)
        if digest is None or digest in referenced:
            continue
        try:
            blob_size, mtime = store.info(key)
        except FileNotFoundError:
            continue
        if mtime > cutoff:
            continue
        blobs.append(key)
        size += blob_size
    return blobs, size


def _drop_cache_entries(store, doomed_ids: set) -> None:
    for key in store.glob(layout.ALL_CACHE):
        try:
            if store.read_json(key)["run_id"] in doomed_ids:
                store.delete(key)
        except (FlowError, KeyError, TypeError):
            store.delete(key)
