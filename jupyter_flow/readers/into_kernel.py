"""Pull a task's state into the current kernel: its failure snapshot, inputs or outputs; IPython magics.

Works from any machine that can read the store: a colleague's failed run loads the same way. A
failure snapshot's failing frames become the kernel's last exception, so `%debug` walks them.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import json
import linecache
import shlex
import sys
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from jupyter_flow.errors import FlowError, NotFound
from jupyter_flow.store import layout, open_store, records
from jupyter_flow.store.preview import elide, summary

STATES = ("failure", "inputs", "outputs")
PREFETCH = 4  # blobs a load downloads at once


class Loaded(dict):
    """What `load` returns: name -> value. It also compares equal to the list of its names, which is
    what `load` returned before it returned the values (code written then keeps working)."""

    def __eq__(self, other):
        return list(self) == other if isinstance(other, list) else super().__eq__(other)

    def __ne__(self, other):
        return not self == other

    __hash__ = None  # type: ignore[assignment]  # as dict's


def load(run_id: str, step: str, store=None, into: dict | None = None, state: str | None = None, index: int = 0,
         cells: bool = False, quiet: bool = False) -> Loaded:
    """A task's variables, returned as {name: value}. They are also put into `into` if given, else
    into the notebook's namespace when called in IPython (through the shell's `push`, as `%who`
    then sees them); plain Python gets them only as the returned dict.

    state: "failure" (the variables when the step raised; the default for a failed task), "inputs"
    (what the step received), or "outputs" (what it stored; the default for a finished task).
    cells=True also inserts the step's source as the next cell (in JupyterLab), or prints it.
    """
    store = open_store(store)
    run = records.find_run(store, run_id)
    task = records.read_task(store, run, step, index)
    state = state or ("failure" if task.failure else "outputs" if task.outputs else "inputs")
    if state not in STATES:
        raise FlowError(f"state={state!r}: choose one of {', '.join(STATES)}")
    refs, modules, unpicklable, frames = _refs(store, run, task, state)
    blobs = _Prefetch(store, refs, frames)
    values = Loaded()
    for name, meta in refs.items():
        if "missing" in meta:
            continue
        values[name] = ([blobs.load_value(h, name) for h in meta["hashes"]] if "hashes" in meta
                        else blobs.load_value(meta["hash"], name))
    for alias, module in modules.items():
        try:
            values[alias] = importlib.import_module(module)
        except ImportError:
            unpicklable[alias] = f"module {module} (not importable here)"
    shell = _shell() if into is None else None
    if into is not None:
        into.update(values)
    elif shell is not None:
        shell.push(dict(values))
    if not quiet:
        _print_table(run, step, index, state, refs, modules, unpicklable)
        for name, why in ((task.failure or {}).get("withheld", {}) if state == "failure" else {}).items():
            print(f"  {name}  (not loaded: it {why}; secrets are never stored: read it from your own environment)")
    if frames:
        _post_mortem(blobs, run, task, frames, into if into is not None else shell.user_ns if shell else dict(values),
                     quiet)
    if cells:
        _insert_cells(store, run, step)
    return values


class _Prefetch:
    """Every blob a load needs, downloaded, checked and unpickled at once (PREFETCH threads: on an object
    store each is mostly waiting on the network), and each once: a value that is both a variable and a
    local of a failing frame (one hash) is one download and one object, as it was one object in the
    failed step. `load_value` as Store's."""

    def __init__(self, store, refs: dict, frames: list[dict]):
        self.store = store
        wanted: dict[str, str | None] = {}  # digest -> the name its errors give
        for name, meta in refs.items():
            for digest in meta.get("hashes") or ([meta["hash"]] if "hash" in meta else []):
                wanted.setdefault(digest, name)
        for frame in frames:
            for name, meta in (frame.get("locals") or {}).items():
                if name.isidentifier():
                    wanted.setdefault(meta["hash"], name)
            if frame.get("exception"):
                wanted.setdefault(frame["exception"]["hash"], None)
        pool = ThreadPoolExecutor(PREFETCH)
        self.futures = {digest: pool.submit(store.load_value, digest, name) for digest, name in wanted.items()}
        pool.shutdown(wait=False)  # what was submitted still runs; the threads end with it

    def load_value(self, digest: str, name: str | None = None):
        future = self.futures.get(digest)
        return future.result() if future is not None else self.store.load_value(digest, name)


def _refs(store, run, task, state):
    if state == "inputs":
        return task.inputs, {}, {}, []
    if state == "outputs":
        return task.outputs, {}, {}, []
    try:
        failure = records.read_failure(store, task)
    except NotFound:
        raise NotFound(f"step {task.step!r} of run {run.id} has no failure snapshot (status "
                       f"{task.status}); use state='inputs' or state='outputs'") from None
    return (failure["variables"], failure.get("modules", {}), dict(failure.get("unpicklable", {})),
            failure.get("frames") or [])


class FailureLoaded(Exception):
    """Stands in for a failed task's exception whose class cannot be loaded here."""


def _post_mortem(store, run, task, frames: list[dict], ns: dict, quiet: bool) -> None:
    """Make the failure the last exception of this kernel, so `%debug` (or `pdb.pm()`) opens the
    debugger on it: `up`/`down` through the failing frames, their locals printable, `list` showing
    the cell. Each stored frame becomes a real frame: a code object named after the frame's
    function, placed at its file name (the cell's source registered with linecache.lazycache),
    raising at its line with its locals as arguments; the frames are chained into a traceback with
    types.TracebackType. IPython's `showtraceback` displays it and keeps it as the last one."""
    tb = None
    for frame in reversed(frames):
        lineno, frame_obj = _frame(store, run, task, frame, ns)
        tb = types.TracebackType(tb, frame_obj, 0, lineno)
    error = task.error or {}
    value = None
    if frames[-1].get("exception"):
        try:
            value = store.load_value(frames[-1]["exception"]["hash"])
        except Exception:  # noqa: BLE001 - made in another environment: its type and message stand in
            value = None
    if not isinstance(value, BaseException):
        value = FailureLoaded(f"{error.get('type', 'Exception')}: {error.get('message', '')}")
    # IPython's %debug starts one frame in (it skips its own run_code frame): this one stands for it
    tb = types.TracebackType(tb, inspect.currentframe(), 0, inspect.currentframe().f_lineno)
    value = value.with_traceback(tb)
    shell = _shell()
    if shell is not None:
        shell.showtraceback((type(value), value, tb), tb_offset=1)
    else:
        sys.last_type, sys.last_value, sys.last_traceback = type(value), value, tb
    if not quiet:
        print(f"The failure of {task.step}[{task.index}] is this kernel's last exception: %debug opens the "
              f"debugger on its {len(frames)} frame(s) (up/down, p NAME, list).")


def _frame(store, run, task, frame: dict, ns: dict):
    """(line, a frame object standing for `frame`): see _post_mortem."""
    line = max(int(frame.get("line") or 1), 1)
    where = f"cell {frame['cell']}" if frame.get("cell") else None
    filename = frame.get("file") or "?"
    if frame.get("source") is not None:
        # not a file (lazycache needs that), but named after one: debuggers show it as a path
        filename = f"{run.notebook or task.step}, {where or 'a cell'} of step {task.step}, run {run.id}"
        linecache.lazycache(filename, {"__name__": filename, "__loader__": _Source(frame["source"])})
    values = {}
    for name, meta in (frame.get("locals") or {}).items():
        try:
            if name.isidentifier():
                values[name] = store.load_value(meta["hash"], name)
        except Exception:  # noqa: BLE001, S112 - a local that cannot load here is left out
            continue
    function = frame.get("function") or "<module>"
    try:
        if function == "<module>":  # a cell: its names are the notebook's (the snapshot just loaded)
            exec(compile("\n" * (line - 1) + "1 / 0", filename, "exec"), ns)  # noqa: S102 - our own code
        else:
            outer = compile(f"def _f({', '.join(values)}):\n    1 / 0", filename, "exec")
            code = next(c for c in outer.co_consts if isinstance(c, types.CodeType))
            code = code.replace(co_firstlineno=line - 1, co_name=function, co_qualname=function)
            types.FunctionType(code, ns)(*values.values())
    except ZeroDivisionError as e:
        return line, e.__traceback__.tb_next.tb_frame
    raise AssertionError("the stand-in frame did not raise")


class _Source:
    """A loader that only gives source: linecache.lazycache's way to know a file that is not on disk."""

    def __init__(self, source: str):
        self.source = source

    def get_source(self, name):
        return self.source


def _shell():
    try:
        from IPython import get_ipython  # plain Python callers do not pay for IPython's import
    except ImportError:
        return None
    return get_ipython()


def _print_table(run, step, index, state, refs, modules, unpicklable) -> None:
    label = {"failure": "failure snapshot", "inputs": "inputs", "outputs": "outputs"}[state]
    print(f"Loaded {label} of {step}[{index}] from run {run.id} ({run.flow}, {run.user}):")
    rows = [(n, summary(m), elide(m.get("preview") or m.get("missing", ""), 60)) for n, m in refs.items()]
    rows += [(alias, "module", module) for alias, module in modules.items()]
    width = max([len(r[0]) for r in rows] + [4])
    twidth = max([len(r[1]) for r in rows] + [4])
    for name, kind, preview in rows:
        print(f"  {name:<{width}}  {kind:<{twidth}}  {preview}")
    for name, kind in unpicklable.items():
        print(f"  {name:<{width}}  {kind:<{twidth}}  (not loaded: could not be pickled)")


def step_source(store, run, step: str) -> str:
    """The step's cells as they were when the run was made (from the run's copy of the notebook)."""
    from jupyter_flow.flow.several import parse  # 0.2 s (nbformat): only when the cells are asked for

    raw = json.loads(store.read_bytes(layout.run_file(run.flow, run.id, "notebook.ipynb")))
    nb = parse(raw, Path(run.notebook))
    return "\n\n".join(c.source for c in nb.steps[step].cells)


def _insert_cells(store, run, step) -> None:
    source = step_source(store, run, step)
    shell = _shell()
    if shell is not None and getattr(shell, "kernel", None) is not None:
        shell.set_next_input(source, replace=False)
        print(f"Inserted the source of step {step!r} as the next cell.")
    else:
        print(f"# --- source of step {step!r} ---\n{source}")


def _load_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Load a task's state into this kernel.")
    parser.add_argument("run_id")
    parser.add_argument("step")
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--store")
    parser.add_argument("--cells", action="store_true", help="also insert the step's source as the next cell")
    group = parser.add_mutually_exclusive_group()
    for state in STATES:
        group.add_argument(f"--{state}", dest="state", action="store_const", const=state)
    return parser


MAGIC_COMMANDS = ("load",)  # `%flow COMMAND ...`


def register_magics(ipython) -> None:
    """`%flow load RUN STEP [--index N] [--store URL] [--cells] [--failure|--inputs|--outputs]`, and
    `%flow_load ...`, its earlier name. Errors are one line on stderr, nothing loaded."""
    parsers = {"load": _load_parser("%flow load"), "flow_load": _load_parser("%flow_load")}

    def run(parser, words):
        try:
            args = parser.parse_args(words)
        except SystemExit:  # argparse printed the usage and what is wrong
            return
        try:
            load(args.run_id, args.step, store=args.store, into=ipython.user_ns, state=args.state,
                 index=args.index, cells=args.cells)
        except FlowError as e:
            print(f"error: {e}", file=sys.stderr)

    def flow(line):
        words = shlex.split(line)
        if not words or words[0] not in MAGIC_COMMANDS:
            print(f"error: %flow needs a command: {', '.join(MAGIC_COMMANDS)} (e.g. %flow load RUN_ID STEP)",
                  file=sys.stderr)
            return
        run(parsers[words[0]], words[1:])

    def flow_load(line):
        run(parsers["flow_load"], shlex.split(line))

    ipython.register_magic_function(flow, "line", "flow")
    ipython.register_magic_function(flow_load, "line", "flow_load")
