"""The plan: before anything runs, whether a run would reuse or run each step, and why.

It applies the runtime's own rule (`reuse.Cache.decide`) to each step in topological order, as if
the steps before it had run: a step whose upstream runs, runs ("input `x` from step `a`, which
runs"); the others are compared with the cache, through the values and files the reused steps
before them would give them. It reads records and files only: no kernel, no papermill.

One thing it cannot know: a step that runs may produce the same values as before, and then the
run reuses steps after it that the plan says run.
"""
from __future__ import annotations

from jupyter_flow.errors import FlowError
from jupyter_flow.flow.dag import Flow, Step
from jupyter_flow.flow.params import overrides, resolve
from jupyter_flow.runtime.readiness import Task
from jupyter_flow.runtime.reuse import Cache, cache_key, cache_parts
from jupyter_flow.runtime.spec import Specs
from jupyter_flow.store import Store, open_store


def plan(flow: Flow, store: Store | str | None = None, parameters: dict | None = None, no_cache: bool = False,
         cwd: str | None = None) -> list[dict]:
    """One dict per step, in order: {"step", "action": "run" | "reuse", "reason", "origin": the run
    that made the reused result, or None}. `parameters`: values for the parameters cell (checked as
    a run checks them: FlowError on a bad one); `cwd`: where the steps' files are (the notebook's folder)."""
    store = open_store(store)
    injected = overrides(flow, parameters)  # the values a run would inject (its cache keys hold these)
    values = {**resolve(flow), **injected}
    cwd = cwd or str(flow.path.parent)
    cache = Cache(store, flow, None, cwd, no_cache=no_cache)
    specs = Specs(flow, store.url, "plan", values, cwd, [])
    tasks: dict[str, list[Task]] = {}  # the reused steps' tasks, as the run would have them
    restored: dict[str, dict] = {}  # PATH -> {"hash", "size"} of the files reused steps would restore
    out = []
    for name, step in flow.steps.items():
        why = _upstream_runs(flow, step, tasks)
        if why:
            out.append({"step": name, "action": "run", "reason": why, "origin": None})
            continue
        decisions = []
        try:
            count = specs.fan_out(name, tasks) if step.foreach else 1
        except FlowError as e:
            count, why = 0, str(e)
        for index in range(count):
            refs, _ = specs.inputs(name, tasks)
            parts = cache_parts(flow, injected, name, index, refs, _pip_packages(step))
            decisions.append(cache.decide(name, index, parts, cache_key(parts), restored))
        ran = [d for d in decisions if not d.old]
        if why or ran:
            some = len(ran) < len(decisions) or any(d.reason != ran[0].reason for d in ran)
            which = f" (task {decisions.index(ran[0])}; {len(ran)} of {len(decisions)} tasks run)" if some else ""
            out.append({"step": name, "action": "run", "reason": why or ran[0].reason + which, "origin": None})
            continue
        tasks[name] = [Task(name, i, status=d.status, record=d.old) for i, d in enumerate(decisions)]
        for d in decisions:
            restored.update((d.old.get("files") or {}).get("written") or {})
        first = decisions[0] if decisions else None
        out.append({"step": name, "action": "reuse", "origin": first and first.origin,
                    "reason": first.reason if first else "foreach over an empty list: nothing to run"})
    return out


def _upstream_runs(flow: Flow, step: Step, reused: dict) -> str | None:
    """Why `step` runs because a step before it runs; None if every one before it is reused."""
    for up in dict.fromkeys([*step.prev, *step.inputs.values()]):
        if up in reused:
            continue
        names = [n for n, source in step.inputs.items() if source == up]
        if names:
            return f"input `{names[0]}` from step `{up}`, which runs"
        files = [f for f in getattr(step, "files_read", []) if f in getattr(flow.steps[up], "files_written", [])]
        if files:
            return f"file {files[0]} from step `{up}`, which runs"
        return f"after step `{up}`, which runs"
    return None


def _pip_packages(step: Step) -> list | None:
    """A `pip:` step's part of its cache key: its requirements and the versions of its environment,
    if it is built here (else the run builds it, and resolves them then)."""
    pip = step.options.get("pip")
    if not pip:
        return None
    from jupyter_flow.execution.envs import env_key, list_envs  # lazy: envs loads importlib.metadata; pip: only

    key = env_key(pip)
    return [pip, next((e["packages"] for e in list_envs() if e["key"] == key), None)]
