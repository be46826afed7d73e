"""Continue a resumed run's failed step from its failing cell, when that gives a full rerun's values.

The failed task's snapshot holds what the cells before the failing one computed. Its task then
runs the step's set-up (parameters and shared cells, as always), loads the snapshot over it, and
runs the step from the failing cell on. That is sound only when: the task failed in one of the
step's own cells (a Python step); every global the cells from the failing one on read was stored
(nothing unpicklable, no secret withheld); the shared cells, the step's cells before the failing
one, its inputs, parameters, kernel and packages are unchanged; the files it read are unchanged
(those it wrote are restored); and the failing cell, run again from its first line, cannot see its
own half-done work: it reads no name that its failed run changed before it raised. Otherwise the
whole step runs; `plan` says why in one line.
"""
from __future__ import annotations

import ast

from jupyter_flow.errors import FlowError
from jupyter_flow.execution import files
from jupyter_flow.flow import analysis, languages, stepbook
from jupyter_flow.flow.dag import Flow
from jupyter_flow.runtime import reuse
from jupyter_flow.store import layout, records
from jupyter_flow.store.status import Status


def plan(store, flow: Flow, origin: dict, name: str, index: int, parts: dict, cwd: str) -> tuple[dict | None, str]:
    """(what to continue from, its one line) or (None, why the whole step runs; "" when the step did not
    fail in the resumed run)."""
    try:
        old = store.read_json(layout.task_json(flow.name, origin["id"], name, index))
    except FlowError:
        return None, ""
    error = old.get("error") or {}
    if old.get("status") != Status.FAILED or not error:
        return None, ""
    if not (languages.is_python(flow.steps[name].language) and languages.is_python(flow.notebook.language)):
        return None, "only a Python step continues from its failing cell"
    run = origin["id"]
    if error.get("role") != "step" or error.get("source_cell") is None:
        return None, f"it failed in {error.get('where') or 'its set-up'}, not in one of its cells"
    try:
        failure = records.read_failure(store, records.TaskRecord.from_dict(old))
    except FlowError:
        return None, f"its failure in run {run} left no snapshot"
    old_parts = old.get("cache_parts")
    if not old_parts:
        return None, f"run {run}'s record does not say what the step ran (an older jupyter_flow)"
    changed = reuse.diff(flow, name, dict(old_parts, cells=[]), dict(parts, cells=[]))  # all but the code
    if changed:
        return None, f"since run {run}: {changed}"
    old_cells = old_parts.get("cells") or []
    if [c["code"] for c in old_cells if c["shared"]] != [c["code"] for c in parts["cells"] if c["shared"]]:
        return None, "a shared cell (imports, functions, parameters) changed"
    old_step = [c for c in old_cells if not c["shared"]]
    failed = error["source_cell"] + 1
    k = next((i for i, c in enumerate(old_step) if c["cell"] == failed), None)
    new_step = [c for c in parts["cells"] if not c["shared"]]
    if k == 0:
        return None, ""  # it failed in its first cell: the whole step runs anyway
    if k is None or len(new_step) <= k:
        return None, f"its cell {failed} is gone"
    for i in range(k):
        if old_step[i]["code"] != new_step[i]["code"]:
            return None, f"cell {new_step[i]['cell']}, before the failing one, changed"
    step = flow.steps[name]
    try:
        before = analysis.analyze([c.source for c in flow.shared + step.cells[:k]])  # what the failing cell sees
    except SyntaxError:
        return None, "a cell before the failing one does not parse"
    lost = _lost(step, k, before, dict(failure.get("unpicklable") or {}, **(failure.get("withheld") or {})))
    if lost:
        return None, (f"the cells from the failing one on read {lost!r}, which run {run}'s snapshot could not keep, "
                      "so the cells before it must make it again")
    changed = files.changes((old.get("files") or {}).get("read") or {}, cwd)
    if changed:
        return None, f"a file it read changed: {changed[0]}"
    again = _sees_itself(failure, old_step[k]["cell"], step.cells[k].source, before)
    if again:
        return None, again
    start = new_step[k]["cell"]
    skipped = f"cells {new_step[0]['cell']}-{new_step[k - 1]['cell']}" if k > 1 else f"cell {new_step[0]['cell']}"
    return ({"run": run, "from": k, "cell": start, "variables": failure.get("variables") or {},
             "modules": failure.get("modules") or {}, "files": old.get("files") or {},
             "line": f"continues from cell {start}: {skipped} not run again (values from run {run}'s failure "
                     "snapshot)"}, "")


def _lost(step, k: int, before, lost: dict) -> str | None:
    """The first name the snapshot could not keep (unpicklable, or a secret) that the step's cells from
    its k-th on read (themselves, or through the notebook's functions they call); None if none."""
    if not lost:
        return None
    try:
        after = analysis.analyze([c.source for c in step.cells[k:]], modules=before.modules,
                                 functions=before.functions)
    except SyntaxError:
        return next(iter(lost))
    read = set(after.reads) | set(after.maybe) | set(after.optional)
    return next((n for n in lost if n in read), None)


def _sees_itself(failure: dict, cell: int, source: str, before) -> str | None:
    """Why running the (fixed) failing cell from its first line on the state its failed run left could
    differ from running it once: the failed run's statements up to the failing one changed a name the
    cell reads before assigning it. None if not."""
    frames = [f for f in failure.get("frames") or [] if f.get("cell") == cell and f.get("function") == "<module>"]
    try:
        known = {"modules": before.modules, "functions": before.functions}
        reads = set(analysis.analyze([source], **known).reads)
        if frames and frames[-1].get("source") is not None:
            ran = [s for s in analysis.parse(frames[-1]["source"]).body if s.lineno <= frames[-1]["line"]]
            done = analysis.analyze([ast.unparse(s) for s in ran], **known)
        else:  # where it stopped is not known: the cell as it is now stands for what ran
            done = analysis.analyze([source], **known)
    except SyntaxError:
        return None  # the cell fails again at once, as it would in a full rerun
    seen = reads & (set(done.writes) | set(done.changed) | set(done.maybe))
    if seen:
        return (f"cell {cell} changed {min(seen)!r} before it failed, and reads it: running it again from its "
                "first line would see the change")
    return None


def apply(spec: dict, cont: dict, flow: Flow, run_id: str) -> dict:
    """The task spec running the step from its failing cell on, with the snapshot and the files it wrote."""
    step = flow.steps[spec["step"]]
    kernel_spec = dict(spec["kernel_spec"], snapshot={"variables": cont["variables"], "modules": cont["modules"]})
    return dict(spec, stepbook=stepbook.build(flow, step, run_id, spec["index"], start=cont["from"]),
                kernel_spec=kernel_spec,
                files_in={**(spec.get("files_in") or {}), **(cont["files"].get("written") or {})},
                continued={"run": cont["run"], "cell": cont["cell"], "line": cont["line"], "files": cont["files"]})
