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

from .errors import FlowError
from .preview import describe, type_name

_state: dict = {"spec": None, "metrics": {}}


class UnpicklableValue(Exception):
    """A value a later step needs cannot be pickled."""


class ValueNotLoadable(Exception):
    """An input cannot be loaded here: made in another environment (a missing module, another pickle)."""


def _not_loadable(name: str, spec: dict, e: Exception) -> str:
    producer = spec.get("producers", {}).get(name, "?")
    where = f"{name!r} from step {producer!r} cannot be loaded in step {spec['step']!r}"
    if isinstance(e, ModuleNotFoundError) and e.name:
        package = e.name.split(".")[0]
        return (f"{where}: it needs the package that provides module {package!r}, which is not installed in this "
                f"step's environment; add a pip:{package} tag to step {spec['step']!r} (or pass plain data)")
    return (f"{where} ({e.__class__.__name__}: {e}); the two steps likely have different versions of the "
            f"package that defines it: pin the same version in both (pip: tags), or pass plain data")


class ChangedInPlace(Exception):
    """The step changed an input in place, unseen by the analysis, and a later step reads the old value."""


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
    _give(spec, _namespace())


def _give(spec: dict, ns: dict, only_missing: bool = False) -> None:
    """Load the step's inputs (and its foreach item) into `ns`; with only_missing, the names not there
    yet, skipping any that cannot be loaded (a snapshot keeps what it can)."""
    store = _store()
    for name, ref in spec["inputs"].items():
        if "missing" in ref:
            if not only_missing:
                print(f"jupyter_flow: {name!r} is missing: {ref['missing']}", file=sys.stderr)
            continue
        if only_missing and name in ns:
            continue
        try:
            ns[name] = ([store.load_value(h, name) for h in ref["hashes"]] if "hashes" in ref
                        else _with_globals(store.load_value(ref["hash"], name), ns))
        except Exception as e:  # noqa: BLE001
            if only_missing:
                continue
            cause = e.__cause__ or e  # the store says which exception unpickling raised
            if isinstance(cause, FlowError):  # the store's own problem (a corrupt or missing blob) says itself
                raise
            raise ValueNotLoadable(_not_loadable(name, spec, cause)) from None
    fe = spec.get("foreach")
    if fe and (not only_missing or (fe["var"] in ns and fe["item"] not in ns)):
        ns[fe["item"]] = list(ns[fe["var"]])[fe["index"]]


def _with_globals(value, ns: dict):
    """A function another step defined, made to use this kernel's globals, as it does top to bottom
    (unpickled, it would keep copies of the globals it saw where it was defined)."""
    if not (isinstance(value, types.FunctionType) and value.__module__ == "__main__" and value.__globals__ is not ns):
        return value
    func = types.FunctionType(value.__code__, ns, value.__name__, value.__defaults__, value.__closure__)
    func.__kwdefaults__, func.__qualname__ = value.__kwdefaults__, value.__qualname__
    func.__dict__.update(value.__dict__)
    return func


def finish() -> None:
    """Store every value the step wrote; fail if a later step needs one that cannot be pickled."""
    spec = _state["spec"]
    ns = _namespace()
    store = _store()
    changed = _changed_inputs(spec, ns, store)
    outputs = {}
    warnings = [f"{name!r} was changed in place by a call; stored as an output of this step" for name in changed]
    for name in spec["writes"] + changed:
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


def _changed_inputs(spec: dict, ns: dict, store) -> list[str]:
    """The inputs this step changed in place through calls the analysis cannot see into.

    Each is re-hashed: if a later step reads the same value, top to bottom it would see the change,
    so the step fails naming the variable; otherwise the changed value is stored as an output."""
    from .store.blobs import hash_value

    changed = []
    for name, readers in spec.get("verify", {}).items():
        ref = spec["inputs"].get(name, {})
        current = hash_value(ns[name]) if "hash" in ref and name in ns else None
        if current in (None, ref.get("hash")) or current == hash_value(store.load_value(ref["hash"])):
            continue  # unchanged (the last test: the same value, pickled to other bytes)
        if readers:
            raise ChangedInPlace(
                f"step {spec['step']!r} changed {name!r} in place, and step {', '.join(map(repr, readers))} reads "
                f"{name!r} after it: top to bottom it would see the change. Fix: assign it in step "
                f"{spec['step']!r} ({name} = {name} after the call that changes it) so later steps take it from "
                "there, or pass a copy to that call")
        changed.append(name)
    return changed


def snapshot(spec: dict | None = None, parameters: dict | None = None) -> None:
    """After an exception: store every picklable user variable, as the failure snapshot.

    A task stopped before its step's first cell ran passes `spec` and `parameters`: the snapshot then
    also holds the parameters and inputs the step was given, whatever had run of its set-up."""
    ns = _namespace()
    if spec is not None:
        _state["spec"] = spec
        ns.update(parameters or {})  # what papermill injects after the parameters cell
        _give(spec, ns, only_missing=True)
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
