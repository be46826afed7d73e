"""`jupyter flow fsck`: check every blob against its hash and every record for readability.

Corrupt blobs are moved aside to `quarantine/` (so the next run that produces the value writes it
again, and nothing loads the bad bytes), damaged run and task records are reported (`gc` never
collects what they may reference), the run index is rebuilt from the run records, and temporary
files of writes that died are removed.
"""
from __future__ import annotations

from jupyter_flow.errors import CorruptBlob, NotFound
from jupyter_flow.store import layout, open_store, records
from jupyter_flow.store.gc import FRESH_SECONDS
from jupyter_flow.store.status import Status


def check(store=None, dry_run: bool = False) -> dict:
    store = open_store(store)
    corrupt, checked = [], 0
    for key in store.glob(layout.ALL_BLOBS):
        digest = layout.parse_blob(key)
        if digest is None:
            continue
        checked += 1
        try:
            store.verify_blob(digest)
        except CorruptBlob:
            corrupt.append(digest)
            if not dry_run:
                store.move(key, layout.quarantined(digest))
        except NotFound:
            continue  # deleted by gc meanwhile
    damaged = []
    for run in records.rebuild_index(store, write=not dry_run):
        if run.status == Status.DAMAGED:
            damaged.append({"run": run.id, "flow": run.flow, "record": layout.RUN_RECORD, "problem": run.damaged})
        for task in records.list_tasks(store, run):
            if task.status == Status.DAMAGED:
                record = f"{task.step}/{task.index}/{layout.TASK_RECORD}"
                damaged.append({"run": run.id, "flow": run.flow, "record": record,
                                "problem": task.damaged})
    temps = store.stale_temp_files(FRESH_SECONDS)
    if not dry_run:
        for key in temps:
            store.delete(key)
    return {"blobs": checked, "corrupt": corrupt, "damaged": damaged, "temps": temps}
