"""Cache and reuse: a task whose code, kernel, inputs and parameters match a finished earlier task
(of the resumed run first, then of any run through the cache index) is not run again."""
from __future__ import annotations

import json

from .. import analysis
from .._version import __version__
from ..dag import Flow
from ..errors import FlowError
from ..store import Store, layout, records
from ..store.layout import task_key
from ..store.records import DONE
from ..task import now


def cache_key(flow: Flow, parameters: dict, name: str, index: int, refs: dict, packages: list | None = None) -> str:
    """`packages`: a `pip:` step's requirements and resolved versions (other steps' keys leave it out)."""
    from ..store.blobs import new_hash

    step = flow.steps[name]
    payload = {
        "version": __version__, "kernel": step.options.get("kernel", flow.kernel),
        "code": [analysis.normalized(c.source) for c in flow.shared + step.cells],
        "inputs": refs,
        "params": {p: parameters.get(p, {"default": flow.parameters[p].source}) for p in step.params},
        "foreach": index if step.foreach else None,
    }
    if packages:
        payload["pip"] = packages
    h = new_hash()
    h.update(json.dumps(payload, sort_keys=True, default=repr).encode())
    return h.hexdigest()


def reuse(store: Store, flow: Flow, run_id: str, step: str, index: int, key: str, origin: dict | None,
          use_cache: bool) -> dict | None:
    """The record, rewritten as this run's task, of an earlier finished task with cache key `key`
    (the resumed run's first, then the cache's); None if there is none or a value of it is gone."""
    candidates = []
    if origin:
        candidates.append(("reused", task_key(flow.name, origin["id"], step, index)))
    if use_cache:
        try:
            hit = store.read_json(layout.cache_entry(key))
            candidates.append(("cached", task_key(hit["flow"], hit["run_id"], hit["step"], hit["index"])))
        except (FlowError, KeyError, TypeError):
            pass
    for status, old_key in candidates:
        try:
            old = store.read_json(f"{old_key}/task.json")
        except FlowError:
            continue
        if old.get("cache_key") != key or old.get("status") not in DONE:
            continue
        if not all(store.blob_ok(o["hash"]) for o in old.get("outputs", {}).values()):
            continue  # a value is gone or corrupt: run the task again, which rewrites it
        source = old.get("origin") or {"run_id": old["run_id"], "flow": old["flow"], "step": old["step"],
                                       "index": old["index"], "key": old_key}
        record = dict(old, run_id=run_id, flow=flow.name, step=step, index=index, status=status, origin=source,
                      started=now(), ended=now(), duration=0.0, attempt=0, attempts=[], cache_key=key,
                      notebook=f"{source['key']}/output.ipynb")
        records.write_task(store, record)
        return record
    return None


def remember(store: Store, flow: str, run_id: str, step: str, index: int, key: str) -> None:
    """Later tasks with cache key `key` may reuse this succeeded one."""
    store.write_json(layout.cache_entry(key), {"flow": flow, "run_id": run_id, "step": step, "index": index})
