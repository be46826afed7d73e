"""Cache and reuse, and why each task runs.

A task's cache key is made from named parts (`cache_parts`): the code of each cell (the shared
cells and the step's, normalised), the kernel, the hashes of its inputs, the parameters it reads,
its foreach index, a `pip:` step's packages and the jupyter_flow version. The parts are kept in
the task record, so a later run or plan can say which one changed.

A finished earlier task with the same key (of the resumed run first, then of any run through the
cache index) is reused only when, besides, nothing else it depended on changed: no file it read
(`files.changes`), no installed version of a package it imported, and it touched no network (unless
tagged `cache:trust`). Reusing it restores the files it wrote into the notebook's folder.

`Cache.decide` is the one rule, for the runtime and for `plan` alike; every task records its
`reason`. Nothing here starts a kernel or imports papermill: a run served from the cache starts none.
"""
from __future__ import annotations

import ast
import json
import subprocess
from dataclasses import dataclass

from jupyter_flow._version import __version__
from jupyter_flow.errors import FlowError
from jupyter_flow.execution.files import changes, restore
from jupyter_flow.execution.task import now
from jupyter_flow.flow import analysis
from jupyter_flow.flow.dag import Flow
from jupyter_flow.store import Store, layout, records
from jupyter_flow.store.blobs import new_hash
from jupyter_flow.store.layout import task_key
from jupyter_flow.store.preview import elide
from jupyter_flow.store.status import DONE, Status

PREVIOUS_RUNS = 10  # how many of the flow's latest runs are searched for a step's last task (to say what changed)


def cache_parts(flow: Flow, parameters: dict, name: str, index: int, refs: dict, packages: list | None = None) -> dict:
    """What the cache key of task `index` of step `name` is made from, as plain JSON. `refs`: its
    input hashes by name; `packages`: a `pip:` step's requirements and resolved versions."""
    step = flow.steps[name]
    shared = {id(c) for c in flow.shared}
    parts = {
        "version": __version__, "kernel": step.options.get("kernel", flow.kernel),
        "cells": [{"cell": c.index + 1, "shared": id(c) in shared, "code": analysis.normalized(c.source)}
                  for c in flow.shared + step.cells],
        "inputs": refs,
        "params": {p: _param(flow, parameters, p) for p in step.params},
        "foreach": index if step.foreach else None,
    }
    if packages:
        parts["pip"] = packages
    return json.loads(json.dumps(parts, default=repr))


def _param(flow: Flow, given: dict, name: str):
    """A parameter's part of the key: its given value, or its default; a value given equal to the
    literal default (same type) is the default, so passing `-p lr 0.1` where the cell says 0.1 reruns nothing."""
    default = flow.parameters[name]
    if name in given and not (default.type != "expression" and type(given[name]) is type(default.value)
                              and given[name] == default.value):
        return given[name]
    return {"default": default.source}


def cache_key(parts: dict) -> str:
    """The key of `parts`: the code's text, not where its cells are, so moving a cell keeps it."""
    payload = {k: v for k, v in parts.items() if k != "cells"}
    payload["code"] = [c["code"] for c in parts["cells"]]
    h = new_hash()
    h.update(json.dumps(payload, sort_keys=True, default=repr).encode())
    return h.hexdigest()


@dataclass
class Decision:
    """Run the task, or reuse `old` (an earlier task's record, as `status` reused or cached); and why."""
    reason: str
    old: dict | None = None
    status: str | None = None
    old_key: str | None = None

    @property
    def origin(self) -> str | None:
        return _source(self.old, self.old_key)["run_id"] if self.old else None


class Cache:
    """Decides, for each task of one run (or of a plan), whether an earlier task can stand in for it."""

    def __init__(self, store: Store, flow: Flow, run_id: str | None, cwd: str, origin: dict | None = None,
                 no_cache: bool = False, from_step: str | None = None):
        """`cwd`: the notebook's folder, where its steps read and write files; `origin`: the resumed run."""
        self.store, self.flow, self.run_id, self.cwd, self.origin = store, flow, run_id, cwd, origin
        self.no_cache, self.from_step = no_cache, from_step
        self.rerun = set(flow.downstream(from_step)) if from_step else set()
        self._versions: dict[str, str | None] = {}
        self._r_versions: dict[tuple, dict[str, str]] = {}
        self._recent: list[str] | None = None
        self._sound: set[str] = set()  # blobs found whole in this run: each is read and hashed once

    # -- the rule --------------------------------------------------------------------------------
    def decide(self, name: str, index: int, parts: dict, key: str, restored: dict | None = None) -> Decision:
        """`restored`: {PATH: {"hash", "size"}} of files that steps reused before this one will have restored
        (a plan's view of the folder; at run time they are on disk already)."""
        step = self.flow.steps[name]
        if name in self.rerun:
            return Decision(f"rerun from step {self.from_step} (resume)")
        use_cache = not self.no_cache and bool(step.options.get("cache", True))
        if not use_cache and not self.origin:
            return Decision("--no-cache" if self.no_cache else "cache:disabled")
        candidates = []
        if self.origin:
            candidates.append((Status.REUSED, task_key(self.flow.name, self.origin["id"], name, index)))
        if use_cache:
            try:
                hit = self.store.read_json(layout.cache_entry(key))
                candidates.append((Status.CACHED, task_key(hit["flow"], hit["run_id"], hit["step"], hit["index"])))
            except (FlowError, KeyError, TypeError):
                pass
        stale = None
        for status, old_key in candidates:
            old = self._read(layout.in_task(old_key, layout.TASK_RECORD))
            if old is None or old.get("cache_key") != key or old.get("status") not in DONE:
                continue
            why = self._stale(name, old, restored or {})
            if why is None:
                run = _source(old, old_key)["run_id"]
                return Decision(f"reused from run {run} (nothing it depends on changed)", old, status, old_key)
            stale = stale or why
        if stale:
            return Decision(stale)
        return Decision(self._what_changed(name, index, parts, use_cache))

    def _stale(self, name: str, old: dict, restored: dict) -> str | None:
        """Why the finished task `old`, of the same key, cannot stand in for this one; None if it can."""
        step = self.flow.steps[name]
        run = _source(old, None)["run_id"]
        files = old.get("files")
        if files is None and self.flow.notebook.python:
            return f"its result in run {run} does not say which files it read (an older jupyter_flow); it runs once"
        files = files or {}
        digests = [o["hash"] for o in old.get("outputs", {}).values()] + [
            f["hash"] for f in files.get("written", {}).values() if "withheld" not in f]  # a secret: never stored
        if not all(self._blob_ok(d) for d in digests):
            return f"a value or file it stored in run {run} is gone or damaged; it runs again to store it"
        changed = self._changed_files(files.get("read") or {}, restored)
        if changed:
            return f"file {changed}"
        kernel = step.options.get("kernel", self.flow.kernel)
        if "pip" not in step.options and kernel in ("python3", "python"):
            for dist, version in (old.get("packages") or {}).items():
                installed = self._installed(dist)
                if installed != version:
                    return f"package {dist} {version} -> {installed or 'not installed'}"
        elif step.language == "R" and old.get("packages"):
            installed_r = self._installed_r(kernel, sorted(old["packages"]))
            for package, version in sorted(old["packages"].items()):
                if installed_r.get(package) != version:
                    return f"R package {package} {version} -> {installed_r.get(package) or 'not installed'}"
        if files.get("network") and step.options.get("cache") != "trust":
            return "touched the network (tag cache:trust to reuse)"
        return None

    def _blob_ok(self, digest: str) -> bool:
        """Whether blob `digest` is there and matches its hash (store.blob_ok), checked once per run."""
        if digest not in self._sound and self.store.blob_ok(digest):
            self._sound.add(digest)
        return digest in self._sound

    def _changed_files(self, read: dict, restored: dict) -> str | None:
        """The first file of `read` whose content differs now, as files.changes says it; a file in
        `restored` is compared with what will be restored there."""
        for path, was in read.items():
            if path not in restored:
                changed = changes({path: was}, self.cwd)
            elif restored[path]["hash"] != was.get("hash"):
                changed = [f"{path} changed ({was.get('size')} -> {restored[path].get('size')} bytes)"]
            else:
                changed = []
            if changed:
                return changed[0]
        return None

    def _installed_r(self, kernel: str, packages: list[str]) -> dict[str, str]:
        """The versions the R of kernelspec `kernel` has of `packages` (one R process per run and kernel;
        only for an R step that could be reused): {package: version}, without the ones it lacks."""
        key = (kernel, tuple(packages))
        if key not in self._r_versions:
            from jupyter_client.kernelspec import KernelSpecManager  # lazy: 0.15 s; only for R steps

            try:
                r = KernelSpecManager().get_kernel_spec(kernel).argv[0]
                code = ("for (p in commandArgs(TRUE)) cat(p, tryCatch(as.character(utils::packageVersion(p)), "
                        "error = function(e) ''), '\\n')")
                out = subprocess.run([r, "--slave", "--no-save", "-e", code, "--args", *packages], capture_output=True,
                                     text=True, timeout=120).stdout
            except Exception:  # no such kernel, no R, or R failed: nothing counts as installed
                out = ""
            self._r_versions[key] = {p: v for p, v, *_ in (line.split() + [""] for line in out.splitlines()) if v}
        return self._r_versions[key]

    def _installed(self, dist: str) -> str | None:
        if dist not in self._versions:
            from importlib import metadata  # lazy: 40 ms; only a step that imports packages asks

            try:
                found = metadata.distribution(dist)
            except metadata.PackageNotFoundError:
                found = None
            # its Version header, without parsing the whole METADATA file (a long description: 3 ms a package)
            headers = ((found.read_text("METADATA") or "").split("\n\n", 1)[0] if found else "").splitlines()
            version = next((h[len("Version:"):].strip() for h in headers if h.startswith("Version:")), None)
            self._versions[dist] = version or (found.version if found else None)
        return self._versions[dist]

    # -- what changed since the step's last task ---------------------------------------------------
    def _what_changed(self, name: str, index: int, parts: dict, use_cache: bool) -> str:
        old = self._previous(name, index)
        if old is None:
            return "no earlier run" if use_cache else ("--no-cache" if self.no_cache else "cache:disabled")
        run = old["run_id"]
        if old.get("cache_parts"):
            changed = diff(self.flow, name, old["cache_parts"], parts)
            if changed:
                return changed
        elif old.get("cache_key") != cache_key(parts):
            return f"its code, inputs or parameters changed since run {run}"
        if not use_cache:
            return "--no-cache" if self.no_cache else "cache:disabled"
        if old.get("status") not in DONE:
            return f"it did not succeed in run {run} ({old.get('status')})"
        return f"no stored result of it (run {run}'s is no longer in the cache)"

    def _previous(self, name: str, index: int) -> dict | None:
        """The step's task in the resumed run, else in the flow's latest run that has one."""
        if self.origin:
            return self._read(layout.task_json(self.flow.name, self.origin["id"], name, index))
        if self._recent is None:
            names = records.run_ids(self.store, self.flow.name)  # the ledger's: not every run folder listed
            self._recent = [r for r in names if layout.RUN_ID.match(r) and r != self.run_id][:PREVIOUS_RUNS]
        for run_id in self._recent:
            found = self._read(layout.task_json(self.flow.name, run_id, name, index))
            if found is not None:
                return found
        return None

    def _read(self, key: str) -> dict | None:
        try:
            record = self.store.read_json(key)
        except FlowError:
            return None
        return record if isinstance(record, dict) else None

    # -- reusing ---------------------------------------------------------------------------------
    def take(self, run_id: str, name: str, index: int, decision: Decision, parts: dict, key: str) -> dict | None:
        """Reuse `decision.old` as this run's task: restore the files it wrote, write its record.
        None if a file cannot be restored (the task then runs)."""
        old = decision.old
        written = (old.get("files") or {}).get("written") or {}
        if written:
            try:
                restore(self.store, written, self.cwd)
            except (OSError, FlowError) as e:
                decision.reason = f"cannot restore the files it wrote ({e})"
                return None
        source = _source(old, decision.old_key)
        record = dict(old, run_id=run_id, flow=self.flow.name, step=name, index=index, status=decision.status,
                      origin=source, started=now(), ended=now(), duration=0.0, attempt=0, attempts=[],
                      cache_key=key, cache_parts=parts, reason=decision.reason,
                      notebook=old.get("notebook") or layout.in_task(source["key"], layout.TASK_NOTEBOOK))
        records.write_task(self.store, record)
        return record


def remember(store: Store, flow: str, run_id: str, step: str, index: int, key: str) -> None:
    """Later tasks with cache key `key` may reuse this succeeded one."""
    store.write_json(layout.cache_entry(key), {"flow": flow, "run_id": run_id, "step": step, "index": index})


def _source(old: dict, old_key: str | None) -> dict:
    """The task that really ran: a reused task's origin, else itself."""
    return old.get("origin") or {"run_id": old["run_id"], "flow": old["flow"], "step": old["step"],
                                 "index": old["index"], "key": old_key}


# -- saying what changed -------------------------------------------------------------------------
def diff(flow: Flow, name: str, old: dict, new: dict) -> str | None:
    """The first difference between two tasks' cache parts, as one line; None if they are the same."""
    if old.get("version") != new["version"]:
        return f"jupyter_flow {old.get('version')} -> {new['version']}"
    if old.get("kernel") != new["kernel"]:
        return f"kernel {old.get('kernel')} -> {new['kernel']}"
    code = _code_change(flow, old.get("cells") or [], new["cells"])
    if code:
        return code
    producers = flow.steps[name].inputs
    old_inputs = old.get("inputs") or {}
    for var, ref in new["inputs"].items():
        if old_inputs.get(var) != ref:
            where = f" (from step {producers[var]})" if var in producers else ""
            return f"input `{var}` changed{where}"
    old_params = old.get("params") or {}
    for param, value in new["params"].items():
        if param not in old_params or old_params[param] != value:
            before = _param_text(old_params[param]) if param in old_params else "unset"
            return f"parameter `{param}` changed ({before} -> {_param_text(value)})"
    if old.get("foreach") != new["foreach"]:
        return f"foreach index {old.get('foreach')} -> {new['foreach']}"
    if old.get("pip") != new.get("pip"):
        return "its pip: packages changed (tags or resolved versions)"
    if list(old_inputs) != list(new["inputs"]) or list(old_params) != list(new["params"]):
        return "it reads other inputs or parameters"
    return None


def _param_text(value) -> str:
    """A parameter's value as given, or `default SOURCE` when the parameters cell's default stood."""
    if isinstance(value, dict) and set(value) == {"default"}:
        return f"default {elide(value['default'], 40)}"
    return elide(repr(value), 40)


def _code_change(flow: Flow, old: list[dict], new: list[dict]) -> str | None:
    """`code changed: cell 4, line 2 `x = 3``: the first cell whose code differs and its first changed line."""
    import difflib  # lazy: only a step whose code changed is told why (difflib: 1 ms of every start)

    by_number = {c.index + 1: c for c in flow.shared + [c for s in flow.steps.values() for c in s.cells]}
    matcher = difflib.SequenceMatcher(a=[c["code"] for c in old], b=[c["code"] for c in new], autojunk=False)
    for op, i1, _i2, j1, _j2 in matcher.get_opcodes():
        if op == "equal":
            continue
        if op == "delete":
            first = _first_line(old[i1]["code"])
            return f"code changed: a cell was removed (cell {old[i1]['cell']} of that run, `{first}`)"
        cell = new[j1]
        source = by_number[cell["cell"]].source if cell["cell"] in by_number else cell["code"]
        if op == "insert":
            return f"code changed: cell {cell['cell']} is new (`{_first_line(source)}`)"
        return f"code changed: cell {cell['cell']}, {_first_changed_line(old[i1]['code'], source)}"
    return None


def _first_line(source: str) -> str:
    return elide(next((line.strip() for line in source.splitlines() if line.strip()), ""), 60)


def _first_changed_line(old_code: str, source: str) -> str:
    """`line 2 `x = 3``: the first statement of `source` (as written) whose code differs from `old_code`'s."""
    lines = source.splitlines()
    try:
        old_stmts = [ast.unparse(s) for s in analysis.parse(old_code).body]
        new_body = analysis.parse(source).body
    except SyntaxError:
        old_lines = old_code.splitlines()
        n = next((i for i, line in enumerate(lines) if i >= len(old_lines) or old_lines[i] != line), len(lines))
        return f"line {n + 1} `{elide(lines[n].strip(), 60)}`" if n < len(lines) else "lines removed at its end"
    for k, stmt in enumerate(new_body):
        if k >= len(old_stmts) or ast.unparse(stmt) != old_stmts[k]:
            text = lines[stmt.lineno - 1].strip() if stmt.lineno <= len(lines) else ast.unparse(stmt)
            return f"line {stmt.lineno} `{elide(text, 60)}`"
    removed = _first_line(old_stmts[len(new_body)]) if len(old_stmts) > len(new_body) else ""
    end = new_body[-1].end_lineno if new_body else 0
    return f"`{removed}` removed after line {end}" if removed else "its code changed"
