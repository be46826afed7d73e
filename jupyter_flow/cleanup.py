"""`jupyter flow gc`: delete old runs, then the blobs no remaining run references.

Never deletes a running or damaged run, nor a blob that a kept run references (as output, input or
failure-snapshot variable, its own or that of the origin run its reused or cached tasks live in),
nor a blob younger than an hour (a running task may have just written it: writing a blob always
refreshes its date). If any record of a kept run cannot be read, no blob is collected at all:
what it referenced is unknown. Temporary files of writes that died over an hour ago are removed.
"""
from __future__ import annotations

import time

from .errors import FlowError
from .store import layout, open_store, records
from .store.records import Status

FRESH_SECONDS = 3600


def collect(store=None, keep: int = 10, flow: str | None = None, dry_run: bool = False) -> dict:
    if not isinstance(keep, int) or keep < 0:
        raise FlowError(f"--keep {keep}: give the number of newest runs to keep per flow (0 or more)")
    store = open_store(store)
    runs = records.list_runs(store)
    if flow is not None:
        layout.check_flow_name(flow)
    doomed_ids = set()
    by_flow: dict[str, list] = {}
    for run in runs:
        if flow is None or run.flow == flow:
            by_flow.setdefault(run.flow, []).append(run)
    for flow_runs in by_flow.values():
        doomed_ids |= {r.id for r in flow_runs[keep:] if r.status not in (Status.RUNNING, Status.DAMAGED)}
    tasks = {run.id: records.list_tasks(store, run) for run in runs}
    _spare_origins(runs, tasks, doomed_ids)
    referenced, unknown = _references(store, [r for r in runs if r.id not in doomed_ids], tasks)
    blobs, size = ([], 0) if unknown else _unreferenced_blobs(store, referenced)
    temps = store.stale_temp_files(FRESH_SECONDS)
    doomed = [r for r in runs if r.id in doomed_ids]
    if not dry_run:
        for run in doomed:  # runs first: a crash here leaves blobs behind, never a run without its blobs
            store.delete(run.key)
        for key in blobs + temps:
            store.delete(key)
        _drop_cache_entries(store, doomed_ids)
    return {"runs": [r.id for r in doomed], "blobs": blobs, "bytes": size, "kept": len(runs) - len(doomed),
            "temps": temps, "unknown": unknown}


def _spare_origins(runs, tasks: dict, doomed_ids: set) -> None:
    """A kept run's reused or cached tasks live on in their origin run's files: keep those runs too."""
    changed = True
    while changed:
        changed = False
        for run in runs:
            if run.id in doomed_ids:
                continue
            for task in tasks[run.id]:
                if task.origin and task.origin.get("run_id") in doomed_ids:
                    doomed_ids.discard(task.origin["run_id"])
                    changed = True


def _references(store, kept, tasks: dict) -> tuple[set, list]:
    """(digests the kept runs reference, records that could not be read)."""
    referenced, unknown = set(), []
    for run in kept:
        for task in tasks[run.id]:
            if task.status == Status.DAMAGED:
                unknown.append(layout.task_json(task.flow, task.run_id, task.step, task.index))
            referenced |= task.blob_refs()
            for key in store.glob(f"{task.key}/failure*.json"):  # the snapshot of every attempt
                try:
                    referenced |= {meta["hash"] for meta in store.read_json(key)["variables"].values()}
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
