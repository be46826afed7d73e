"""What runs inside a step's kernel: load its inputs, save its outputs, snapshot it on failure.

The step notebook calls `begin(spec)` before the step's cells and `finish()` after them; on an
exception the task runner calls `snapshot()` in the same kernel. Results are written as JSON into
the task's local folder for the runner to pick up. Imports stay light (no papermill, no nbformat).
"""
from __future__ import annotations

import json
import numbers
import os
import sys
import types

from .preview import describe, type_name

_state: dict = {"spec": None, "metrics": {}}


class UnpicklableValue(Exception):
    """A value a later step needs cannot be pickled."""


def record(name: str, value):
    """Record a scalar metric on the current task and run. Outside a run it only remembers it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"jupyter_flow.record({name!r}, ...): a metric is a number, got {type_name(value)}")
    _state["metrics"][str(name)] = float(value) if not isinstance(value, numbers.Integral) else int(value)
    return value


def warm(store_url: str) -> None:
    """Run while the kernel boots: import what `begin` and `finish` need, the store's driver included."""
    import cloudpickle  # noqa: F401

    from .store import open_store

    open_store(store_url)


def _namespace() -> dict:
    return sys.modules["__main__"].__dict__


def _store():
    from .store import open_store

    return open_store(_state["spec"]["store"])


def begin(spec: dict) -> None:
    """Put the step's inputs (and its foreach item) into the kernel's namespace."""
    _state["spec"] = spec
    _state["metrics"] = {}
    ns = _namespace()
    store = _store()
    for name, ref in spec["inputs"].items():
        if "missing" in ref:
            print(f"jupyter_flow: {name!r} is missing: {ref['missing']}", file=sys.stderr)
            continue
        ns[name] = ([store.load_value(h, name) for h in ref["hashes"]] if "hashes" in ref
                    else store.load_value(ref["hash"], name))
    fe = spec.get("foreach")
    if fe:
        ns[fe["item"]] = list(ns[fe["var"]])[fe["index"]]


def finish() -> None:
    """Store every value the step wrote; fail if a later step needs one that cannot be pickled."""
    spec = _state["spec"]
    ns = _namespace()
    store = _store()
    outputs, warnings = {}, []
    for name in spec["writes"]:
        if name not in ns:
            continue
        value = ns[name]
        if isinstance(value, types.ModuleType) and name not in spec["needed"]:
            continue
        try:
            digest, size = store.save_value(value)
        except Exception as e:  # noqa: BLE001 - pickling can raise anything
            problem = f"{name!r} ({type_name(value)}) cannot be pickled ({e.__class__.__name__}: {e})"
            if name in spec["needed"]:
                readers = ", ".join(spec["needed"][name])
                raise UnpicklableValue(
                    f"step {spec['step']!r}: {problem}, and step {readers} reads it; create it in the step "
                    "that uses it, or pass something picklable (e.g. a path instead of an open file)") from None
            warnings.append(f"{problem}; not stored (no later step reads it)")
            continue
        outputs[name] = {"hash": digest, "size": size, **describe(value)}
    for name in spec.get("metrics", []):
        if name in ns:
            try:
                record(name, ns[name])
            except TypeError as e:
                warnings.append(str(e))
    _write_result("result.json", {"outputs": outputs, "warnings": warnings, "metrics": _state["metrics"]})


def snapshot() -> None:
    """After an exception: store every picklable user variable, as the failure snapshot."""
    ns = _namespace()
    store = _store()
    variables, unpicklable, modules = {}, {}, {}
    for name, value in list(ns.items()):
        if name.startswith("_") or name in _IPYTHON_NAMES:
            continue
        if isinstance(value, types.ModuleType):
            modules[name] = value.__name__
            continue
        try:
            digest, size = store.save_value(value)
        except Exception:  # noqa: BLE001 - listed by name and type instead
            unpicklable[name] = type_name(value)
            continue
        variables[name] = {"hash": digest, "size": size, **describe(value)}
    _write_result("failure.json", {"variables": variables, "unpicklable": unpicklable, "modules": modules,
                                   "metrics": _state["metrics"]})


_IPYTHON_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}


def _write_result(name: str, payload: dict) -> None:
    path = os.path.join(_state["spec"]["workdir"], name)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, default=str)
    os.replace(tmp, path)
