"""What runs inside a step's kernel: load its inputs, save its outputs, snapshot it on failure.

The step notebook calls `begin(spec)` before the step's cells and `finish()` after them; on an
exception the task runner calls `snapshot()` in the same kernel. Results are written as JSON into
the task's local folder for the runner to pick up. Imports stay light (no papermill, no nbformat).

Files: an audit hook (`sys.addaudithook`, installed by `warm` as the kernel boots, so the shared
cells are seen too, else by `begin`) records the files the step opens, renames, removes and lists,
and the network connections it makes (see `_Files`); `finish` stores the files it wrote under the
notebook's folder as blobs (unless they hold a secret: see secrets.save_file) and fingerprints those
it read (see files.py).
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import json
import linecache
import numbers
import os
import site
import sys
import tempfile
import threading
import types
from importlib import metadata

from jupyter_flow.errors import FlowError
from jupyter_flow.execution import secrets
from jupyter_flow.execution.files import fingerprint, recorded
from jupyter_flow.store import open_store
from jupyter_flow.store.blobs import hash_value
from jupyter_flow.store.neutral import save_neutral
from jupyter_flow.store.preview import describe, type_name

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


class SecretValue(Exception):
    """A value a later step reads holds a secret, which is never stored."""


def _secrets() -> secrets.Secrets:
    """The secrets of the environment (and the notebook's names), read once per task when it first
    saves a value, after the step's cells ran (`begin` and `snapshot` forget the last task's)."""
    if _state.get("secrets") is None:
        _state["secrets"] = secrets.current((_state["spec"] or {}).get("secrets", ()))
    return _state["secrets"]


def _save(store, value) -> tuple[str, int]:
    """Store `value` as a blob: (hash, size); raises secrets.Withheld instead if it holds a secret."""
    return secrets.save_value(store, value, _secrets())


def _described(value) -> dict:
    """A stored value's preview (see preview.describe), with no secret in its text."""
    meta = describe(value)
    if isinstance(meta.get("preview"), str):
        meta["preview"] = _secrets().scrub(meta["preview"])
    return meta


def _secret_needed(spec: dict, name: str, reason: str) -> str:
    readers = ", ".join(map(repr, spec["needed"][name]))
    var = reason.partition("$")[2]
    fix = (f"read it from the environment in step {readers} itself (os.environ[{var!r}])" if var else
           f"create it in step {readers} itself from that step's environment")
    return (f"step {spec['step']!r}: {name!r} {reason}, and step {readers} reads it; secrets are never stored, "
            f"so they do not pass between steps: {fix}, and pass only what is not secret")


class ChangedInPlace(Exception):
    """The step changed an input in place, unseen by the analysis, and a later step reads the old value."""


def record(name: str, value):
    """Record a scalar metric on the current task and run. Outside a run it only remembers it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"jupyter_flow.record({name!r}, ...): a metric is a number, got {type_name(value)}")
    _state["metrics"][str(name)] = float(value) if not isinstance(value, numbers.Integral) else int(value)
    return value


def warm(store_url: str) -> None:
    """Run while the kernel boots: import what `begin` and `finish` need, the store's driver included;
    start recording the files the kernel uses (its cells run only once a task has it)."""
    import cloudpickle  # noqa: F401 - warming: imported while the kernel boots, so that no task waits for it

    if not _fresh_names:  # the first time, in a fresh kernel: what its namespace holds besides ours
        _fresh_names.update((k, v) for k, v in _namespace().items() if k != "_jf")
    open_store(store_url)
    _record_files(store_url)


_fresh_names: dict = {}  # a fresh kernel's namespace (IPython's names, __main__'s __doc__, __spec__...)


def fresh(store_url: str) -> None:
    """Make this kernel, which ran a contained task (flow/containment.py), as a fresh warmed-up one again
    for the next task of the same step: IPython's reset (namespace, output cache, history, execution count
    back to 1), the names a fresh kernel's namespace holds that the reset drops (`_`, `__doc__`...), and
    `warm` again. Our own state is set anew by `begin` (the task's spec, metrics, secrets, files)."""
    from IPython import get_ipython  # lazy: imported in every kernel already; only a reused one calls this

    shell = get_ipython()
    for _ in range(4):  # IPython's last inputs (`_i`, `_ii`, `_iii`), which its reset keeps, back to "" as when fresh
        shell.history_manager.store_inputs(0, "")
    shell.reset(new_session=True)
    ns = _namespace()
    for name, value in _fresh_names.items():
        ns.setdefault(name, value)
    ns["_jf"] = sys.modules[__name__]
    _state.update(spec=None, metrics={}, secrets=None, plain=False)
    warm(store_url)


PLAIN_TYPES = (type(None), bool, int, float, complex, str, bytes)
PLAIN_CONTAINERS = (list, tuple, set, frozenset, dict)


def plain(value, budget: int = 10_000) -> bool:
    """Whether `value` is plain data: exactly builtin scalars and containers of them, at most `budget`
    items in all (a larger value is taken as not plain: checking it would cost more than a kernel)."""
    todo, seen = [value], 0
    while todo:
        item = todo.pop()
        seen += 1
        if seen > budget:
            return False
        kind = type(item)
        if kind in PLAIN_TYPES:
            continue
        if kind not in PLAIN_CONTAINERS:
            return False
        todo.extend(item.items() if kind is dict else item)
    return True


# -- files and network the step uses -------------------------------------------------------------------
_files: _Files | None = None  # what the task in this kernel used; None: record nothing (outside a task)
_local = threading.local()  # .busy: this thread is inside the hook (its own opens are not the step's)
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


class _Files:
    """Paths (absolute, normalised) the step read, wrote and removed, in the order first seen."""

    def __init__(self, ignore: tuple[str, ...]):
        self.ignore = ignore  # folder prefixes (ending in '/') whose files are not the step's
        self.read: dict[str, dict] = {}  # path -> its fingerprint (files.fingerprint) when first read
        self.written: dict[str, bool] = {}  # path -> whether the step only appended to it (a log)
        self.removed: dict[str, None] = {}
        self.network: dict[str, None] = {}
        self.paths: dict = {}  # path as the program gave it -> normalised, or None if ignored (until a chdir)

    def path(self, raw) -> str | None:
        if isinstance(raw, int) or raw is None:
            return None  # a file descriptor: its open was seen
        try:
            return self.paths[raw]
        except (KeyError, TypeError):  # TypeError: a path object that cannot be a key
            pass
        p = os.fsdecode(os.fspath(raw))
        p = os.path.normpath(p if p.startswith("/") else os.path.join(os.getcwd(), p))
        q = p + "/"
        if p.startswith(self.ignore) or "/__pycache__/" in q or "/.ipynb_checkpoints/" in q:
            p = None
        if len(self.paths) > 100_000:
            self.paths.clear()
        try:
            self.paths[raw] = p
        except TypeError:
            pass
        return p

    def on_read(self, p: str) -> None:
        """Fingerprint a file (or folder) when the step first opens (or lists) it, before it reads it:
        the value it read, whatever happens to the file later. A file the step wrote first is not a read."""
        if p not in self.read and p not in self.written:
            self.read[p] = fingerprint(p)

    def on_write(self, p: str, append: bool = False) -> None:
        self.removed.pop(p, None)
        self.written[p] = append and self.written.get(p, True)

    def on_remove(self, p: str) -> None:
        if p in self.written:
            del self.written[p]  # made and removed by the step: no trace of it remains
        else:
            self.removed[p] = None


def _on_open(files: _Files, args) -> None:
    p = files.path(args[0])
    if p is None:
        return
    flags = args[2] if isinstance(args[2], int) else 0
    if flags & os.O_ACCMODE != os.O_WRONLY and not flags & (os.O_TRUNC | os.O_EXCL):  # "w+": nothing to read
        files.on_read(p)
    if flags & _WRITE_FLAGS:
        files.on_write(p, append=bool(flags & os.O_APPEND) and not flags & os.O_TRUNC)


def _on_rename(files: _Files, args) -> None:
    src, dst = files.path(args[0]), files.path(args[1])
    if src is not None:
        files.on_remove(src)
    if dst is not None:
        files.on_write(dst)


def _on_remove(files: _Files, args) -> None:
    p = files.path(args[0])
    if p is not None:
        files.on_remove(p)


def _on_truncate(files: _Files, args) -> None:
    p = files.path(args[0])
    if p is not None:
        files.on_write(p)


def _on_list(files: _Files, args) -> None:
    caller = sys._getframe(2).f_code.co_filename
    if "importlib" in caller or "pkg_resources" in caller or caller.endswith("pkgutil.py"):
        return  # the import system or package metadata looking through sys.path, not the step
    p = files.path("." if args[0] is None else args[0])
    if p is not None:
        files.on_read(p)


def _on_chdir(files: _Files, args) -> None:
    files.paths.clear()  # relative paths name other files from now on


_store_calls = [0]  # begin/finish/snapshot running: their connections (an S3 store's) are not the step's


def _ours(func):
    """`func` reaches the store for the step; the connections made meanwhile, from any thread (fsspec
    talks to S3 from a thread of its own), are not network use of the step's code."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        _store_calls[0] += 1
        try:
            return func(*args, **kwargs)
        finally:
            _store_calls[0] -= 1
    return wrapper


def _on_connect(files: _Files, args) -> None:
    address = args[1]
    if _store_calls[0]:
        return
    if isinstance(address, tuple) and len(address) >= 2:  # internet sockets; a Unix socket is local
        files.network[f"{address[0]}:{address[1]}"] = None


_EVENTS = {"open": _on_open, "os.rename": _on_rename, "os.replace": _on_rename, "os.remove": _on_remove,
           "os.truncate": _on_truncate, "os.listdir": _on_list, "os.scandir": _on_list,
           "os.chdir": _on_chdir, "socket.connect": _on_connect}


def _audit(event: str, args) -> None:
    """The audit hook: cheap, a no-op outside a task, and it never raises (audit hooks cannot be removed)."""
    files = _files
    if files is None:
        return
    handler = _EVENTS.get(event)
    if handler is None or getattr(_local, "busy", False):
        return
    _local.busy = True
    try:
        handler(files, args)
    except Exception:  # noqa: BLE001, S110 - recording must never break the step
        pass
    finally:
        _local.busy = False


_hooked = False


def _record_files(store_url: str, workdir: str | None = None) -> None:
    """Start recording (again, for a new task); installs the hook once per kernel."""
    global _files, _hooked

    home = os.path.expanduser("~")
    folders = [sys.prefix, sys.base_prefix, sys.exec_prefix, *site.getsitepackages(), site.getusersitepackages(),
               os.path.join(home, ".cache"), os.path.join(home, ".ipython"), "/proc", "/dev", "/sys", workdir,
               os.path.join(tempfile.gettempdir(), f"ipykernel_{os.getpid()}"),  # the kernel's cell files
               os.path.dirname(os.path.abspath(__file__))]  # jupyter_flow's own modules (an editable install)
    here = os.getcwd() + "/"  # the notebook's folder: a folder holding it (sys.prefix...) does not hide it
    ignore = [f for f in (os.path.normpath(os.path.abspath(f)) + "/" for f in folders if f) if not here.startswith(f)]
    local_store = store_url.split("://", 1)[-1] if store_url.startswith(("file://", "local://")) or \
        "://" not in store_url else None
    if local_store:
        ignore.append(os.path.normpath(os.path.abspath(local_store)) + "/")
    _files = _Files(tuple(dict.fromkeys(ignore)))
    if not _hooked:
        sys.addaudithook(_audit)
        _hooked = True


def _files_used(spec: dict, store) -> dict:
    """What the step did with files (the record's `files`): stop recording, store the files it wrote
    under the notebook's folder; those it read were fingerprinted as it first opened them."""
    global _files
    files, _files = _files, None
    if files is None:
        return {}
    return recorded(store, spec.get("cwd") or os.getcwd(), files.read, files.written, files.removed, files.network,
                    _secrets())


def _packages(ns: dict) -> dict:
    """{distribution: version} of the installed packages whose modules, classes, functions or
    values the step's namespace holds (the standard library left out)."""
    tops = set()
    for name, value in list(ns.items()):
        if name.startswith("_") or name in _IPYTHON_NAMES:
            continue
        try:
            if isinstance(value, types.ModuleType):
                module = value.__name__
            elif isinstance(value, (type, types.FunctionType, types.BuiltinFunctionType)):
                module = value.__module__
            else:
                module = type(value).__module__
        except Exception:  # noqa: BLE001, S112 - an odd object: it says nothing about packages
            continue
        if isinstance(module, str):
            tops.add(module.partition(".")[0])
    tops -= set(sys.stdlib_module_names) | {"builtins", "__main__"}
    return {dist: version for top in sorted(tops) for dist, version in _distributions(top)}


_dist_map: dict | None = None


def _distributions(top: str) -> list[tuple[str, str]]:
    """(distribution, version) pairs providing top-level module `top`: the one of the same name when
    there is one (fast), else from the map of the installed distributions' modules (see _modules_map)."""
    global _dist_map
    for guess in dict.fromkeys((top, top.replace("_", "-"))):
        try:
            return [(metadata.distribution(guess).metadata["Name"], metadata.version(guess))]
        except (metadata.PackageNotFoundError, ValueError):
            pass
    if _dist_map is None:
        _dist_map = _modules_map()
    found = []
    for dist in _dist_map.get(top, []):
        try:
            found.append((dist, metadata.version(dist)))
        except metadata.PackageNotFoundError:
            continue
    return found


def _modules_map() -> dict:
    """importlib.metadata.packages_distributions() (0.2 to 1 s: it reads every distribution's file
    list), kept in the user's cache folder for as long as no folder of sys.path changes (installing or
    removing a package changes its folder's modification time)."""
    folders, here = [], os.getcwd()
    for p in [sys.executable, *sys.path]:
        if p in ("", ".", here):
            continue  # the notebook's folder changes all the time, and holds no installed package
        try:
            folders.append((p, os.stat(p or ".").st_mtime_ns))
        except OSError:
            continue
    key = hashlib.sha1(json.dumps(folders).encode()).hexdigest()[:16]
    cache = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "jupyter_flow",
                         f"modules-{key}.json")
    try:
        with open(cache) as f:
            return json.load(f)
    except (OSError, ValueError):
        pass
    found = metadata.packages_distributions()
    try:
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        with open(f"{cache}.{os.getpid()}.tmp", "w") as f:
            json.dump(found, f)
        os.replace(f"{cache}.{os.getpid()}.tmp", cache)
    except OSError:
        pass  # a read-only home: computed again next time
    return found


def _namespace() -> dict:
    return sys.modules["__main__"].__dict__


def _store():
    return open_store(_state["spec"]["store"])


@_ours
def begin(spec: dict) -> None:
    """Put the step's inputs (and its foreach item) into the kernel's namespace."""
    _state["spec"] = spec
    _state["metrics"] = {}
    _state["secrets"] = None
    if _files is None:  # not warmed up (a kernel started without our warm-up code)
        _record_files(spec["store"], spec.get("workdir"))
    else:
        if spec.get("workdir"):
            _files.ignore += (os.path.normpath(spec["workdir"]) + "/",)
            _files.paths.clear()
        # What the shared cells read is the step's too; what they write, every step's kernel writes.
        _files.written.clear()
        _files.removed.clear()
    ns = _namespace()
    _give(spec, ns)
    fe = spec.get("foreach") or {}
    # What the task was given is plain data: its kernel may serve the step's next task (see fresh)
    _state["plain"] = not spec.get("snapshot") and all(
        plain(ns[name]) for name in [*spec["inputs"], fe.get("item")] if name and name in ns)
    if spec.get("snapshot"):  # continued from its failing cell: what the cells before it computed
        _resume(spec["snapshot"], spec, ns)


def _resume(snapshot: dict, spec: dict, ns: dict) -> None:
    """Load a failure snapshot's variables and modules into `ns` (see runtime/continuing.py)."""
    _give(dict(spec, inputs=snapshot["variables"], foreach=None), ns)
    for alias, module in snapshot.get("modules", {}).items():
        ns[alias] = importlib.import_module(module)


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


@_ours
def finish(crossing: dict | None = None) -> None:
    """Store every value the step wrote; fail if a later step needs one that cannot be pickled.
    `crossing`: {name: {step: language}} of the values steps in another language read, stored also
    in the neutral format (see store/neutral.py); one that cannot cross fails the step, naming it."""
    spec = _state["spec"]
    ns = _namespace()
    store = _store()
    changed = _changed_inputs(spec, ns, store)
    outputs, withheld = {}, {}
    warnings = [f"{name!r} was changed in place by a call; stored as an output of this step" for name in changed]
    for name in spec["writes"] + changed:
        if name not in ns:
            continue
        value = ns[name]
        if isinstance(value, types.ModuleType) and name not in spec["needed"]:
            continue
        try:
            digest, size = _save(store, value)
        except secrets.Withheld as e:
            if name in spec["needed"]:
                raise SecretValue(_secret_needed(spec, name, str(e))) from None
            withheld[name] = str(e)
            warnings.append(f"{name!r} {e}: not stored (secrets never are)")
            continue
        except Exception as e:  # noqa: BLE001 - pickling can raise anything
            problem = f"{name!r} ({type_name(value)}) cannot be pickled ({e.__class__.__name__}: {e})"
            if name in spec["needed"]:
                readers = ", ".join(spec["needed"][name])
                raise UnpicklableValue(
                    f"step {spec['step']!r}: {problem}, and step {readers} reads it; create it in the step "
                    "that uses it, or pass something picklable (e.g. a path instead of an open file)") from None
            warnings.append(f"{problem}; not stored (no later step reads it)")
            continue
        outputs[name] = {"hash": digest, "size": size, **_described(value)}
        if name in (crossing or {}):
            outputs[name]["neutral"] = save_neutral(store, spec["step"], name, value, crossing[name])
    for name in spec.get("metrics", []):
        if name in ns:
            try:
                record(name, ns[name])
            except TypeError as e:
                warnings.append(str(e))
    used = _files_used(spec, store)
    warnings += [f"file {path} {meta['withheld']}: not stored (secrets never are)"
                 for path, meta in used.get("written", {}).items() if "withheld" in meta]
    _write_result("result.json", {"outputs": outputs, "warnings": warnings, "metrics": _state["metrics"],
                                  "withheld": withheld, "files": used, "packages": _packages(ns),
                                  "plain_inputs": bool(_state.get("plain"))})


def _changed_inputs(spec: dict, ns: dict, store) -> list[str]:
    """The inputs this step changed in place through calls the analysis cannot see into.

    Each is re-hashed: if a later step reads the same value, top to bottom it would see the change,
    so the step fails naming the variable; otherwise the changed value is stored as an output."""
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


@_ours
def snapshot(spec: dict | None = None, parameters: dict | None = None) -> None:
    """After an exception: store every picklable user variable, as the failure snapshot.

    A task stopped before its step's first cell ran passes `spec` and `parameters`: the snapshot then
    also holds the parameters and inputs the step was given, whatever had run of its set-up."""
    ns = _namespace()
    _state["secrets"] = None
    if spec is not None:
        _state["spec"] = spec
        ns.update(parameters or {})  # what papermill injects after the parameters cell
        _give(spec, ns, only_missing=True)
    store = _store()
    variables, unpicklable, modules, withheld = {}, {}, {}, {}
    for name, value in list(ns.items()):
        if name.startswith("_") or name in _IPYTHON_NAMES:
            continue
        if isinstance(value, types.ModuleType):
            modules[name] = value.__name__
            continue
        try:
            digest, size = _save(store, value)
        except secrets.Withheld as e:
            withheld[name] = str(e)
            continue
        except Exception:  # noqa: BLE001 - listed by name and type instead
            unpicklable[name] = type_name(value)
            continue
        variables[name] = {"hash": digest, "size": size, **_described(value)}
    try:  # best effort: what the step did with files before it failed
        used = {"files": _files_used(_state["spec"], store), "packages": _packages(ns)}
    except Exception:  # noqa: BLE001 - the snapshot matters more
        used = {}
    _write_result("failure.json", {"variables": variables, "unpicklable": unpicklable, "modules": modules,
                                   "withheld": withheld,
                                   "metrics": _state["metrics"], "frames": _frames(ns, store), **used})


def _frames(ns: dict, store) -> list[dict]:
    """The frames of the exception that stopped the step (IPython keeps it in `sys.last_traceback`):
    each frame running notebook code (its globals are the notebook's), plus the first library frame
    it called. Each: file, function, line, the cell's source, and the locals of a function's frame
    (values stored as blobs; what cannot be pickled named with its type). Oldest first."""
    tb = getattr(sys, "last_traceback", None)
    chain = []
    while tb is not None:
        chain.append((tb.tb_frame, tb.tb_lineno))
        tb = tb.tb_next
    frames, caller_is_notebook = [], False
    for frame, line in chain:
        notebook = frame.f_globals is ns
        if not (notebook or caller_is_notebook):
            continue
        caller_is_notebook = notebook
        code = frame.f_code
        entry = {"file": code.co_filename, "function": code.co_name, "line": line, "notebook": notebook,
                 "locals": {}, "unpicklable": {}}
        if notebook:
            entry["source"] = "".join(linecache.getlines(code.co_filename, frame.f_globals))
        if frame.f_locals is not frame.f_globals:  # a function's frame (a cell's locals are the snapshot)
            for name, value in frame.f_locals.items():
                try:
                    digest, size = _save(store, value)
                except secrets.Withheld as e:
                    entry.setdefault("withheld", {})[name] = str(e)
                    continue
                except Exception:  # noqa: BLE001 - named with its type instead
                    entry["unpicklable"][name] = type_name(value)
                    continue
                entry["locals"][name] = {"hash": digest, "size": size, **_described(value)}
        frames.append(entry)
    value = getattr(sys, "last_value", None)
    if frames and value is not None:
        try:
            frames[-1]["exception"] = {"hash": _save(store, value)[0], "type": type_name(value)}
        except Exception:  # noqa: BLE001, S110 - its type and message are in the task record
            pass
    return frames


_IPYTHON_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}


def _write_result(name: str, payload: dict) -> None:
    path = os.path.join(_state["spec"]["workdir"], name)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, default=str)
    os.replace(tmp, path)
