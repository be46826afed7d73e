"""`jupyter flow gc`: delete old runs, then the blobs no remaining run references.

Never deletes a running run, a blob a kept run references (as output, input, failure variable, or
through a reused/cached task's origin), or a blob younger than an hour (a run may be writing it).
"""
from __future__ import annotations

import time

from .client import list_runs, list_tasks
from .errors import NotFound
from .runtime import run_key
from .store import open_store
from .task import task_key

FRESH_SECONDS = 3600


def collect(store=None, keep: int = 10, flow: str | None = None, dry_run: bool = False) -> dict:
    store = open_store(store)
    by_flow: dict[str, list[dict]] = {}
    for run in list_runs(store, flow):
        by_flow.setdefault(run["flow"], []).append(run)
    doomed = [r for runs in by_flow.values() for r in runs[keep:] if r["status"] != "running"]
    doomed_ids = {r["id"] for r in doomed}
    kept = [r for r in list_runs(store) if r["id"] not in doomed_ids]
    referenced = set()
    for run in kept:
        for task in list_tasks(store, run):
            for meta in list(task.get("outputs", {}).values()) + list(task.get("inputs", {}).values()):
                referenced.update(meta.get("hashes") or [meta.get("hash")])
            origin = task.get("origin")
            if origin:  # a reused task lives on in its origin's files: keep them by keeping the origin run
                doomed_ids.discard(origin["run_id"])
            try:
                failure = store.read_json(f"{task_key(run['flow'], run['id'], task['step'], task['index'])}"
                                          "/failure.json")
                referenced.update(m["hash"] for m in failure["variables"].values())
            except (NotFound, ValueError, KeyError):
                pass
    doomed = [r for r in doomed if r["id"] in doomed_ids]
    blobs, size = [], 0
    cutoff = time.time() - FRESH_SECONDS
    for key in store.glob("blobs/??/*"):
        digest = key.rsplit("/", 1)[1]
        if digest in referenced:
            continue
        info = store.fs.info(store.path(key))
        mtime = info.get("mtime") or info.get("LastModified")
        if mtime is not None and hasattr(mtime, "timestamp"):
            mtime = mtime.timestamp()
        if mtime is not None and float(mtime) > cutoff:
            continue
        blobs.append(key)
        size += info.get("size", 0)
    if not dry_run:
        for run in doomed:  # runs first: a crash here leaves blobs behind, never a run without its blobs
            store.delete(run_key(run["flow"], run["id"]))
        for key in blobs:
            store.delete(key)
        for key in store.glob("cache/*.json"):
            try:
                if store.read_json(key)["run_id"] in {r["id"] for r in doomed}:
                    store.delete(key)
            except (NotFound, ValueError, KeyError):
                store.delete(key)
    return {"runs": [r["id"] for r in doomed], "blobs": blobs, "bytes": size, "kept": len(kept)}
