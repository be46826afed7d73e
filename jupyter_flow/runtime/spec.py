"""The task spec: everything an executor needs to run one task, as plain data (JSON- and pickle-able)."""
from __future__ import annotations

from jupyter_flow.errors import FlowError
from jupyter_flow.flow import stepbook
from jupyter_flow.flow.dag import Flow
from jupyter_flow.runtime.readiness import Task
from jupyter_flow.store.status import DONE


class Specs:
    """Builds the specs of one run's tasks; what depends only on the flow is worked out once."""

    def __init__(self, flow: Flow, store_url: str, run_id: str, parameters: dict, cwd: str, preload: list[str],
                 tasks: dict[str, list[Task] | None] | None = None, injected: dict | None = None):
        self.flow, self.store_url, self.run_id, self.parameters = flow, store_url, run_id, parameters
        self.injected = parameters if injected is None else injected  # what the kernels get after the parameters cell
        self.cwd, self.preload = cwd, preload
        self.tasks = tasks if tasks is not None else {}  # the run's tasks by step, as the loop keeps them
        self.order = {n: i for i, n in enumerate(flow.notebook.steps)}
        self._files_after: dict[str, dict] = {}  # step -> the files there once it ended (see files_in)
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
                             "size": sum(o.get("size", 0) for o in outs),
                             "preview": f"{len(outs)} values from {producer}"}
            else:
                refs[var] = {"hash": outs[0]["hash"]}
                meta[var] = outs[0]
        return refs, meta

    def fan_out(self, name: str, tasks: dict[str, list[Task]]) -> int:
        """How many tasks foreach step `name` has, once the step its list comes from is done."""
        var = self.flow.steps[name].foreach["var"]
        producer = self.flow.steps[name].inputs.get(var)
        if producer is None:
            value = self.parameters.get(var)
            if not isinstance(value, (list, tuple)):
                raise FlowError(f"step {name!r}: foreach:{var} needs a list, but parameter {var} is {value!r}")
            return len(value)
        if self.flow.steps[producer].foreach:
            return len(tasks[producer])
        out = tasks[producer][0].record.get("outputs", {}).get(var, {})
        if "length" not in out:
            raise FlowError(f"step {name!r}: foreach:{var} needs a list, but step {producer!r} made "
                            f"{var} a {out.get('type', 'missing value')}")
        return out["length"]

    def files_in(self, name: str) -> dict:
        """{RELPATH: {"hash", "size", "mtime"[, "only_missing"]}} of the files step `name`'s ancestors wrote
        in this run, for its task to restore (another machine, a fresh folder). Where two wrote one file,
        the later in notebook order wins; a file one removed is left out. A file the step is not
        predicted to read is restored only where it is missing: a step that is not its ancestor may
        have written it since, as top to bottom would have (the ancestor's copy would be stale). Called once they all
        ended; each step's result is kept, so a chain of n steps costs O(n) however long it is."""
        after = self._files_after
        stack = self._upstream(name)
        while stack:  # the ancestors not worked out yet, each after its own upstream steps (no recursion)
            up = stack[-1]
            if up in after:
                stack.pop()
                continue
            missing = [u for u in self._upstream(up) if u not in after]
            if missing:
                stack += missing
                continue
            stack.pop()
            own = [t.record.get("files") or {} for t in self.tasks.get(up) or []]
            files = self._merged(up)
            if any(f.get("written") or f.get("removed") for f in own):
                files, order = dict(files), self.order.get(up, -1)
                for used in own:
                    files.update({path: (order, meta) for path, meta in (used.get("written") or {}).items()})
                    files.update({path: (order, None) for path in used.get("removed") or []})
            after[up] = files
        reads = set(self.flow.steps[name].files_read)  # what the code and the last run say it reads
        return {path: meta if path in reads else dict(meta, only_missing=True)
                for path, (_, meta) in self._merged(name).items() if meta is not None}

    def _upstream(self, name: str) -> list[str]:
        step = self.flow.steps[name]
        return sorted(set(step.prev) | set(step.inputs.values()), key=lambda n: self.order.get(n, -1))

    def _merged(self, name: str) -> dict:
        ups = [self._files_after[u] for u in self._upstream(name)]
        if len(ups) == 1:
            return ups[0]
        merged: dict = {}  # path -> (notebook position of the step that wrote it last, its meta or None if removed)
        for files in ups:
            for path, entry in files.items():
                if path not in merged or entry[0] > merged[path][0]:
                    merged[path] = entry
        return merged

    def build(self, task: Task, refs: dict, meta: dict, cache_key: str | None, executor: str) -> dict:
        step = self.flow.steps[task.step]
        foreach = {**step.foreach, "index": task.index} if step.foreach else None
        return {
            "store": self.store_url, "flow": self.flow.name, "run_id": self.run_id, "step": task.step,
            "index": task.index, "attempt": task.attempt, "attempts": task.attempts,
            "kernel": step.options.get("kernel", self.flow.kernel), "cwd": self.cwd, "preload": self.preload,
            "timeout": step.options.get("timeout"), "limit": step.options.get("limit", {}),
            "parameters": self.injected, "pip": step.options.get("pip"), "input_meta": meta, "cache_key": cache_key,
            "executor": executor,
            "foreach": foreach,
            "stepbook": stepbook.build(self.flow, step, self.run_id, task.index),
            "ends_notebook": task.step == self.last_step,  # no step follows it in the notebook
            "files_in": self.files_in(task.step),
            "kernel_spec": {
                "store": self.store_url, "run_id": self.run_id, "step": task.step, "index": task.index,
                "inputs": refs, "producers": step.inputs, "writes": step.writes, "needed": self.needed[task.step],
                "metrics": step.metrics,
                "verify": step.verify, "foreach": foreach, "secrets": self.flow.notebook.secrets,
            },
        }

