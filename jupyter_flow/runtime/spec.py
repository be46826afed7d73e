"""The task spec: everything an executor needs to run one task, as plain data (JSON- and pickle-able)."""
from __future__ import annotations

from .. import stepbook
from ..dag import Flow
from ..store.records import DONE
from .readiness import Task


class Specs:
    """Builds the specs of one run's tasks; what depends only on the flow is worked out once."""

    def __init__(self, flow: Flow, store_url: str, run_id: str, parameters: dict, cwd: str, preload: list[str]):
        self.flow, self.store_url, self.run_id, self.parameters = flow, store_url, run_id, parameters
        self.cwd, self.preload = cwd, preload
        self.needed: dict[str, dict[str, list[str]]] = {n: {} for n in flow.steps}  # producer -> var -> readers
        for s in flow.steps.values():
            for var, producer in s.inputs.items():
                self.needed[producer].setdefault(var, []).append(s.name)
        self.last_step = list(flow.notebook.steps)[-1] if flow.notebook.steps else None

    def inputs(self, name: str, tasks: dict[str, list[Task]]) -> tuple[dict, dict]:
        """(refs for the kernel, metadata for task.json) of the names step `name` reads."""
        refs, meta = {}, {}
        for var, producer in self.flow.steps[name].inputs.items():
            done = tasks[producer]
            outs = [t.record.get("outputs", {}).get(var) for t in done]
            if any(o is None for o in outs):
                bad = next(t for t, o in zip(done, outs) if o is None)
                why = (f"step {producer!r} failed ({bad.record.get('error', {}).get('message', '')}) and is "
                       "tagged catch" if bad.status not in DONE else f"step {producer!r} did not assign it")
                refs[var] = {"missing": why}
                meta[var] = {"missing": why}
            elif self.flow.steps[producer].foreach:
                refs[var] = {"hashes": [o["hash"] for o in outs]}
                meta[var] = {"hashes": refs[var]["hashes"], "type": "list", "length": len(outs),
                             "size": sum(o.get("size", 0) for o in outs), "preview": f"{len(outs)} values from {producer}"}
            else:
                refs[var] = {"hash": outs[0]["hash"]}
                meta[var] = outs[0]
        return refs, meta

    def build(self, task: Task, refs: dict, meta: dict, cache_key: str | None, executor: str) -> dict:
        step = self.flow.steps[task.step]
        foreach = {**step.foreach, "index": task.index} if step.foreach else None
        return {
            "store": self.store_url, "flow": self.flow.name, "run_id": self.run_id, "step": task.step,
            "index": task.index, "attempt": task.attempt, "attempts": task.attempts,
            "kernel": step.options.get("kernel", self.flow.kernel), "cwd": self.cwd, "preload": self.preload,
            "timeout": step.options.get("timeout"), "limit": step.options.get("limit", {}),
            "parameters": self.parameters, "pip": step.options.get("pip"), "input_meta": meta, "cache_key": cache_key, "executor": executor,
            "foreach": foreach,
            "stepbook": stepbook.build(self.flow, step, self.run_id, task.index),
            "ends_notebook": task.step == self.last_step,  # no step follows it in the notebook
            "kernel_spec": {
                "store": self.store_url, "run_id": self.run_id, "step": task.step, "index": task.index,
                "inputs": refs, "producers": step.inputs, "writes": step.writes, "needed": self.needed[task.step], "metrics": step.metrics,
                "verify": step.verify, "foreach": foreach,
            },
        }
