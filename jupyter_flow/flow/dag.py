"""The Flow: steps, parameters and the edges between steps, inferred from data flow or `prev:` tags.

A step without `prev:` depends on the last earlier step (notebook order) that writes each name it
reads. A step with `prev:` depends on those steps, and takes each name it reads from its nearest
ancestor that writes it (Kale semantics). Only the names a step reads cross an edge.

Files are data too: a step that reads a file depends on the last earlier step (notebook order) that
writes it, and a step that writes a file on the last earlier one that writes it and on the steps in
between that read it (top to bottom they saw the older content). The files come from the code
(`analysis`) and from what each step did in the last run (`history`). A step with `prev:` gets a
file edge only where its `prev:` ancestors do not already order the two steps. A file edge that
would close a cycle (only `prev:` pointing down the notebook can make one) is left out with a warning.
"""
from __future__ import annotations

import ast
import bisect
import heapq
import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path

from jupyter_flow.errors import FlowError
from jupyter_flow.flow import analysis, equivalence, languages, notebook, several
from jupyter_flow.flow.notebook import Cell
from jupyter_flow.store.neutral import WHAT_CROSSES


@dataclass
class Parameter:
    name: str
    value: object  # the literal default, or None when the default is an expression
    type: str  # int, float, str, bool, list, dict, NoneType ... or "expression"
    source: str  # the right-hand side as written

    def to_json(self) -> dict:
        return {"value": self.value, "type": self.type, "source": self.source}


@dataclass
class Step:
    name: str
    cells: list[Cell]
    explicit_prev: list[str]
    options: dict
    reads: list[str] = field(default_factory=list)
    writes: list[str] = field(default_factory=list)
    inputs: dict[str, str] = field(default_factory=dict)  # name read -> upstream step writing it
    params: list[str] = field(default_factory=list)  # parameter names the step reads
    prev: list[str] = field(default_factory=list)  # every direct upstream step
    metrics: list[str] = field(default_factory=list)  # names printed by a pipeline-metrics cell
    maybe: list[str] = field(default_factory=list)  # names read and passed where they may change in place
    verify: dict[str, list[str]] = field(default_factory=dict)  # input -> later steps that read it too
    files_read: list[str] = field(default_factory=list)  # files it may read, from the code and the last run
    files_written: list[str] = field(default_factory=list)  # (POSIX paths relative to the notebook's folder
    # when inside it, else absolute), and files it may write or remove
    file_edges: dict[str, list[str]] = field(default_factory=dict)  # upstream step -> the files ordering them
    language: str = "python"  # its kernel's language (see languages.py)

    @property
    def foreach(self) -> dict | None:
        return self.options.get("foreach")

    def source(self) -> str:
        return "\n\n".join(c.source for c in self.cells)


@dataclass
class Flow:
    name: str
    path: Path
    kernel: str
    notebook: notebook.Notebook
    parameters: dict[str, Parameter]
    steps: dict[str, Step]  # in topological order (notebook order where free)
    shared: list[Cell]
    warnings: list[str]

    def step(self, name: str) -> Step:
        if name not in self.steps:
            raise FlowError(f"no step {name!r} in {self.path.name}; its steps are: {', '.join(self.steps)}")
        return self.steps[name]

    def downstream(self, name: str) -> list[str]:
        """`name` and every step that depends on it, directly or not, in order."""
        found = {name}
        for step in self.steps.values():
            if found & set(step.prev) or found & set(step.inputs.values()):
                found.add(step.name)
        return [s for s in self.steps if s in found]

    def edge_label(self, step: str, up: str) -> list[str]:
        """What the edge up -> step carries: the names it reads from `up`, then `file PATH` for each file."""
        s = self.steps[step]
        return sorted(n for n, src in s.inputs.items() if src == up) + [f"file {f}" for f in s.file_edges.get(up, [])]

    def readers(self, step: str) -> set[str]:
        """Names written by `step` that some other step reads from it."""
        return {n for s in self.steps.values() for n, src in s.inputs.items() if src == step}

    def kernels(self) -> set[str]:
        return {s.options.get("kernel", self.kernel) for s in self.steps.values()}

    def to_json(self) -> dict:
        return {
            "flow": self.name,
            "path": str(self.path),
            "kernel": self.kernel,
            "notebooks": self.notebook.notebooks or [self.path.name],
            "parameters": {n: p.to_json() for n, p in self.parameters.items()},
            "steps": [{
                "name": s.name, "language": s.language, "prev": s.prev, "reads": s.reads, "writes": s.writes,
                "foreach": s.foreach, "options": {k: v for k, v in s.options.items() if k != "foreach"},
                "params": s.params, "metrics": s.metrics,
                "edges": {up: sorted(n for n, src in s.inputs.items() if src == up) for up in s.prev},
                "files_read": s.files_read, "files_written": s.files_written, "file_edges": s.file_edges,
                "cells": [c.index for c in s.cells], "cell_ids": [c.id for c in s.cells],
            } for s in self.steps.values()],
            "warnings": self.warnings,
        }

    def to_text(self) -> str:
        lines = [f"flow {self.name}  ({self.path})"]
        if self.notebook.notebooks:
            lines.append("notebooks: " + ", ".join(self.notebook.notebooks))
        if self.parameters:
            lines.append("parameters: " + ", ".join(f"{n}={p.source}" for n, p in self.parameters.items()))
        for s in self.steps.values():
            fan = f"  [foreach {s.foreach['item']} in {s.foreach['var']}]" if s.foreach else ""
            ups = ", ".join(f"{up} ({', '.join(self.edge_label(s.name, up)) or 'order'})" for up in s.prev)
            lines.append(f"  {s.name}{fan}  <- {ups or '(start)'}")
            opts = {k: v for k, v in s.options.items() if k != "foreach"}
            if opts:
                lines.append("      options: " + ", ".join(f"{k}={v}" for k, v in opts.items()))
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def to_mermaid(self) -> str:
        lines = ["graph TD"]
        for s in self.steps.values():
            label = f"{s.name}<br/>foreach {s.foreach['var']}" if s.foreach else s.name
            lines.append(f'    {s.name}["{label}"]')
        for s in self.steps.values():
            for up in s.prev:
                names = self.edge_label(s.name, up)
                lines.append(f"    {up} -->|{', '.join(names)}| {s.name}" if names else f"    {up} --> {s.name}")
        return "\n".join(lines)


def build_flow(path: str | Path, raw: dict | None = None, history: dict | None = None,
               with_: list | tuple = ()) -> Flow:
    """Read the notebook at `path` (or take its content as `raw`, e.g. unsaved edits) and infer its DAG.
    `history`: the files each step read and wrote in the last run, `{step: {"read": [PATH...],
    "written": [PATH...]}}` (see runtime.doors.last_files). `with_`: more notebooks of the flow (see
    several.py). Raises FlowError naming the cell at fault."""
    nb = several.read(path, with_) if raw is None else several.parse(raw, Path(path), with_)
    if not languages.supported(nb.language):  # papermill's way: one step, the notebook as it is, never cached
        main = Step("main", nb.steps["main"].cells, [], {"cache": False}, language=nb.language)  # (no reads seen)
        return Flow(name=nb.name, path=Path(path).resolve(), kernel=nb.kernel, notebook=nb, parameters={},
                    steps={"main": main}, shared=[], warnings=nb.warnings)
    parameters = _parameters(nb.parameters, nb.language)
    shared_usage = _analyze(nb.shared, "shared cells", language=nb.language)
    functions = dict(shared_usage.functions)
    setup = sorted(nb.shared + ([nb.parameters] if nb.parameters else []), key=lambda c: c.index)
    constants = setup_constants = (analysis.analyze([c.source for c in setup]).constants if nb.python
                                   else {})  # e.g. `path = 'data.csv'`
    folder = Path(path).resolve().parent
    steps: dict[str, Step] = {}
    usages: dict[str, analysis.Usage] = {}
    warnings = list(nb.warnings)
    for block in nb.steps.values():
        step = Step(block.name, block.cells, list(block.prev), dict(block.options),
                    language=languages.step_language(block.options, nb.kernel, nb.language))
        item = {step.foreach["item"]} if step.foreach else set()
        if languages.is_python(step.language):
            usage = _analyze(block.cells, f"step {block.name!r}", item, shared_usage.modules, functions, constants)
            functions.update(usage.functions)
            constants = usage.constants
        else:
            usage = _analyze(block.cells, f"step {block.name!r}", item, language=step.language)
        done = (history or {}).get(block.name) or {}
        step.files_read = _paths(usage.files_read, done.get("read"), folder)
        step.files_written = _paths(usage.files_written, done.get("written"), folder)
        step.reads = usage.reads + usage.builtins
        step.writes = [w for w in usage.writes if w not in item]
        step.maybe = usage.maybe
        if step.foreach and step.foreach["var"] not in step.reads:
            step.reads.insert(0, step.foreach["var"])
        steps[block.name], usages[block.name] = step, usage
    _check_prev(nb, steps)
    if nb.python:
        equivalence.check_split_steps(nb, usages, shared_usage.modules, setup_constants)
    equivalence.kernel_state(usages)
    evaluated = _evaluated_parameters(steps, parameters)
    if evaluated:
        steps = {evaluated.name: evaluated, **steps}
    shared_params = [n for n in shared_usage.reads if n in parameters]  # e.g. a helper function's globals
    optional = {name: usage.optional for name, usage in usages.items()}
    for step in steps.values():
        if not languages.is_python(step.language):  # R reads columns and base functions by name: no warnings
            optional[step.name] = set(step.reads)
    starred = _star_imports(steps, usages, parameters, shared_usage)
    writers = _Writers(steps)
    for step in steps.values():
        _infer_inputs(step, steps, writers, parameters, set(shared_usage.writes), optional.get(step.name, set()),
                      warnings, step.name in starred)
        step.params += [n for n in shared_params if n not in step.params]
    _check_shells(steps, usages)
    _check_crossing(steps, usages, shared_usage.modules)
    _file_edges(steps, warnings)
    _verify_lists(steps)
    warnings += equivalence.random_state(shared_usage, usages) + equivalence.shared_objects(usages)
    _assign_metrics(nb, steps, parameters, warnings)
    order = _topological(nb, steps)
    return Flow(name=nb.name, path=Path(path).resolve(), kernel=nb.kernel, notebook=nb, parameters=parameters,
                steps={n: steps[n] for n in order}, shared=nb.shared, warnings=warnings)


def _analyze(cells: list[Cell], where: str, bound=(), modules=None, functions=None, constants=None,
             language: str = "python") -> analysis.Usage:
    if not languages.is_python(language):
        return _analyze_other(cells, where, bound, language)
    for cell in cells:
        try:
            analysis.parse(cell.source)
        except SyntaxError as e:
            raise FlowError(f"{cell.label()} in {where}: SyntaxError on line {e.lineno}: {e.msg}; fix the cell") \
                from None
    return analysis.analyze([c.source for c in cells], set(bound), modules, functions, constants)


def _analyze_other(cells: list[Cell], where: str, bound, language: str) -> analysis.Usage:
    """A step in another language: its reads and writes (the rest of a Usage stays empty); the
    functions it defines are kept in `functions` by name (they cannot cross to another language)."""
    from jupyter_flow.flow.analysis_r import RSyntaxError  # lazy: its regex compiles in 40 ms; R steps only

    found = languages.get(language)
    for cell in cells:
        try:
            found.analyze([cell.source])
        except RSyntaxError as e:
            raise FlowError(f"{cell.label()} in {where} ({found.name}): {e}; fix the cell") from None
    usage = found.analyze([c.source for c in cells])
    return analysis.Usage(reads=[n for n in usage.reads if n not in bound], writes=list(usage.writes),
                          functions=dict.fromkeys(usage.functions), modules={},
                          files_read=usage.files_read, files_written=usage.files_written)


# Libraries whose classes (CapWords names) make model objects, which cannot cross languages.
MODEL_LIBRARIES = ("sklearn", "torch", "tensorflow", "keras", "xgboost", "lightgbm", "catboost", "statsmodels")
_RETURNS_SELF = ("fit", "partial_fit", "set_params")  # an estimator's methods that return the estimator


def _check_crossing(steps: dict[str, Step], usages: dict[str, analysis.Usage], shared_modules: dict) -> None:
    """What surely cannot cross from one language to another, before anything runs: a function, a
    module, or a model object made where it is seen (`model = LinearRegression().fit(X, y)`, a class
    of MODEL_LIBRARIES called, then only methods that return it); what only the run knows is checked
    at the producing step's end."""
    for step in steps.values():
        for name, producer in step.inputs.items():
            up = steps[producer]
            if producer not in usages or languages.same(up.language, step.language):
                continue
            usage = usages[producer]
            model = _model_object(up, name, {**shared_modules, **usage.modules}) if languages.is_python(
                up.language) else None
            kind = ("a function" if name in usage.functions else "a module" if name in usage.modules
                    else f"a {model} object" if model else None)
            if kind:
                raise FlowError(f"step {step.name!r} ({step.language}) reads {name!r}, which step {producer!r} "
                                f"({up.language}) binds to {kind}: it cannot cross to another language; "
                                f"{WHAT_CROSSES}. Define it in step {step.name!r}, or pass plain data")


def _model_object(step: Step, name: str, modules: dict) -> str | None:
    """The class (`sklearn.linear_model.LinearRegression`) of the model object the step's last
    top-level binding of `name` surely makes, or None."""
    value = None
    for cell in step.cells:
        try:
            tree = analysis.parse(cell.source)
        except SyntaxError:
            return None
        for stmt in tree.body:
            if isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in stmt.targets):
                value = stmt.value
    while isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute) and value.func.attr in _RETURNS_SELF:
        value = value.func.value  # LinearRegression().fit(X, y) is the LinearRegression()
    if not isinstance(value, ast.Call):
        return None
    parts, func = [], value.func
    while isinstance(func, ast.Attribute):
        parts.insert(0, func.attr)
        func = func.value
    if not isinstance(func, ast.Name) or func.id not in modules:
        return None
    path = ".".join([modules[func.id], *parts])
    top, last = path.partition(".")[0], path.rpartition(".")[2]
    return path if top in MODEL_LIBRARIES and last[:1].isupper() else None


def _paths(predicted: list[str], recorded: list[str] | None, folder: Path) -> list[str]:
    """Files as the runtime records them: POSIX paths relative to the notebook's folder when inside
    it, else absolute; the code's predictions first, then what the last run recorded."""
    found = {}
    for path in predicted:
        relative = posixpath.normpath(path)
        if os.path.isabs(relative) or relative.startswith(".."):
            full = os.path.normpath(os.path.join(folder, path))
            relative = os.path.relpath(full, folder)
            relative = full if relative.startswith("..") else Path(relative).as_posix()
        found[relative] = None
    found.update(dict.fromkeys(p for p in recorded or () if isinstance(p, str)))
    return list(found)


def _parameters(cell: Cell | None, language: str = "python") -> dict[str, Parameter]:
    if cell is None:
        return {}
    if not languages.is_python(language):
        found = languages.get(language).parameters(cell.source)
        return {name: Parameter(name, value, kind, source) for name, (value, kind, source) in found.items()}
    try:
        tree = analysis.parse(cell.source)
    except SyntaxError as e:
        raise FlowError(f"{cell.label()} (parameters): SyntaxError on line {e.lineno}: {e.msg}") from None
    params: dict[str, Parameter] = {}
    for stmt in tree.body:
        target = stmt.targets[0] if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 else (
            stmt.target if isinstance(stmt, ast.AnnAssign) and stmt.value is not None else None)
        if not isinstance(target, ast.Name):
            continue
        source = ast.unparse(stmt.value)
        try:
            value = ast.literal_eval(stmt.value)
            kind = type(value).__name__
        except (ValueError, SyntaxError, TypeError):
            value, kind = None, "expression"
        params[target.id] = Parameter(target.id, value, kind, source)
    return params


def _check_prev(nb: notebook.Notebook, steps: dict[str, Step]) -> None:
    for step in steps.values():
        for up in step.explicit_prev:
            if up == step.name or up not in steps:
                cell = next((c for c in step.cells if f"prev:{up}" in c.tags), step.cells[0])
                what = "itself" if up == step.name else f"unknown step {up!r}"
                raise FlowError(f"{cell.label()}: prev:{up} names {what}; steps are: {', '.join(steps)}")


class _Writers:
    """The last step before a given one, in notebook order, that may write a name (a bisect, not a scan)."""

    def __init__(self, steps: dict[str, Step]):
        self.names = list(steps)
        self.position = {name: i for i, name in enumerate(self.names)}
        self.by_name: dict[str, list[int]] = {}
        for i, name in enumerate(self.names):
            for var in steps[name].writes:
                self.by_name.setdefault(var, []).append(i)

    def before(self, step: str, var: str) -> str | None:
        found = self.by_name.get(var, [])
        i = bisect.bisect_left(found, self.position[step])
        return self.names[found[i - 1]] if i else None


def _infer_inputs(step: Step, steps: dict[str, Step], writers: _Writers, parameters: dict, shared: set[str],
                  optional: set[str], warnings: list[str], starred: bool = False) -> None:
    """Where each name the step reads comes from: an upstream step, a parameter, or the shared cells.
    Names the shared cells define, builtins and `$name` in shell lines are inputs only when an
    earlier step rebinds them (`math = 5`, `def sum(...)`). `starred`: a star import (`from m import
    *`) may define any name the step reads."""
    reads = []
    for name in step.reads:
        if step.explicit_prev:
            producer = _nearest_writer(step, steps, name)
        else:
            producer = writers.before(step.name, name)
        if producer:
            step.inputs[name] = producer
        elif name in parameters:
            step.params.append(name)
        elif step.foreach and name == step.foreach["var"]:
            raise FlowError(f"step {step.name!r}: foreach:{name} but no earlier step or parameter defines {name!r}")
        elif name in shared or name in analysis.BUILTINS or name in optional or starred:
            continue
        else:
            warnings.append(f"step {step.name!r} reads {name!r}, which no earlier step or parameter defines")
        reads.append(name)
    step.reads = reads
    step.prev = list(step.explicit_prev) or list(dict.fromkeys(step.inputs.values()))


def _star_imports(steps: dict[str, Step], usages: dict[str, analysis.Usage], parameters: dict,
                  shared: analysis.Usage) -> set[str]:
    """The steps after a star import (`from m import *`), which may define any name. A name no step,
    parameter or shared cell defines is taken as written by the last star-importing step before the
    step that reads it (top to bottom, that import defined it); the steps where such names are not
    warned about (every step, if a shared cell star-imports)."""
    defined = set(parameters) | set(shared.writes) | analysis.BUILTINS | {n for s in steps.values() for n in s.writes}
    starred, last = set(), None
    for step in steps.values():
        if last:
            starred.add(step.name)
            optional = usages[step.name].optional if step.name in usages else set()
            wanted = [n for n in step.reads if n not in defined and n not in optional]
            steps[last].writes += [n for n in wanted if n not in steps[last].writes]
        if step.name in usages and usages[step.name].stars:
            last = step.name
            starred.add(step.name)
    return set(steps) if shared.stars else starred


def _check_shells(steps: dict[str, Step], usages: dict[str, analysis.Usage]) -> None:
    """The kernel's shell (`ip = get_ipython()`) cannot pass from one kernel to another: bound in a
    shared cell, every kernel has its own; bound in a step, a later step cannot receive it."""
    for step in steps.values():
        for name, producer in step.inputs.items():
            if producer in usages and name in usages[producer].shells:
                raise FlowError(f"step {step.name!r} uses {name!r}, which step {producer!r} binds to the IPython "
                                "shell (get_ipython()); a kernel's shell cannot pass to another step's kernel: "
                                f"bind it in the imports cell ({name} = get_ipython()), which every step runs")


def _file_edges(steps: dict[str, Step], warnings: list[str]) -> None:
    """Order the steps that share a file as top to bottom would (see the module's docstring)."""
    order = list(steps)
    position = {name: i for i, name in enumerate(order)}
    writers: dict[str, list[int]] = {}  # file -> positions of the steps that write it
    readers: dict[str, list[int]] = {}
    for i, name in enumerate(order):
        for file in steps[name].files_written:
            writers.setdefault(file, []).append(i)
        for file in steps[name].files_read:
            readers.setdefault(file, []).append(i)
    # inferred and file edges point up the notebook; only a prev: pointing down it can close a cycle
    downward = any(position.get(up, -1) > position[s.name] for s in steps.values() for up in s.explicit_prev)
    for i, name in enumerate(order):
        step = steps[name]
        wanted: dict[str, list[str]] = {}
        for file in dict.fromkeys(step.files_read + step.files_written):
            found = writers.get(file, [])
            last = found[bisect.bisect_left(found, i) - 1] if bisect.bisect_left(found, i) else None
            ups = [] if last is None else [last]
            if file in step.files_written:  # and the readers since that writer
                between = readers.get(file, [])
                since = bisect.bisect_right(between, -1 if last is None else last)
                ups += between[since:bisect.bisect_left(between, i)]
            for up in ups:
                wanted.setdefault(order[up], []).append(file)
        for up, files in wanted.items():
            if up not in step.prev and step.explicit_prev and _depends(steps, name, up):
                continue  # the user's prev: tags already put it after `up`
            if up not in step.prev and downward and _depends(steps, up, name):
                warnings.append(f"step {name!r} uses {', '.join(files)} after step {up!r} (notebook order), but "
                                f"prev: tags put {up!r} after {name!r}; the file edge is left out (it would make a "
                                "cycle): check the prev: tags")
                continue
            step.file_edges[up] = files
            if up not in step.prev:
                step.prev.append(up)


def _depends(steps: dict[str, Step], step: str, up: str) -> bool:
    """Whether `step` comes after `up` through the edges found so far."""
    todo, seen = [step], set()
    while todo:
        current = todo.pop()
        for parent in set(steps[current].prev) | set(steps[current].inputs.values()):
            if parent == up:
                return True
            if parent not in seen:
                seen.add(parent)
                todo.append(parent)
    return False


def _evaluated_parameters(steps: dict[str, Step], parameters: dict[str, Parameter]) -> Step | None:
    """A step that runs the parameters cell in a kernel and stores the value of each parameter whose
    default is an expression and that a foreach fans out over (`items = list(range(200))`)."""
    names = [s.foreach["var"] for s in steps.values()
             if s.foreach and getattr(parameters.get(s.foreach["var"]), "type", None) == "expression"]
    if not names:
        return None
    name = next(n for n in ("parameters", "parameters_", "evaluate_parameters") if n not in steps)
    evaluated = Step(name, [], [], {}, writes=list(dict.fromkeys(names)), params=list(dict.fromkeys(names)))
    for step in steps.values():
        if step.foreach and step.foreach["var"] in names:
            step.inputs[step.foreach["var"]] = name
    return evaluated


def _verify_lists(steps: dict[str, Step]) -> None:
    """For each input a step may change in place unseen, the later steps (notebook order) that read
    the same value: top to bottom they would see the change (`in_kernel.finish` checks)."""
    order = list(steps)
    for step in steps.values():
        for name in step.maybe:
            source = step.inputs.get(name)
            if source:
                later = order[order.index(step.name) + 1:]
                step.verify[name] = [s for s in later if steps[s].inputs.get(name) == source]


def _nearest_writer(step: Step, steps: dict[str, Step], name: str) -> str | None:
    order = list(steps)
    frontier, seen = list(step.explicit_prev), set()
    while frontier:
        writers = [s for s in frontier if name in steps[s].writes]
        if writers:
            return max(writers, key=order.index)
        seen.update(frontier)
        frontier = [up for s in frontier for up in (steps[s].explicit_prev or _inferred_prev(steps[s], steps))
                    if up not in seen]
    return None


def _inferred_prev(step: Step, steps: dict[str, Step]) -> list[str]:
    names = list(steps)
    position = names.index(step.name)
    return [next(s for s in reversed(names[:position]) if n in steps[s].writes)
            for n in step.reads if any(n in steps[s].writes for s in names[:position])]


def _assign_metrics(nb: notebook.Notebook, steps: dict[str, Step], parameters: dict, warnings: list[str]) -> None:
    """Each name a pipeline-metrics cell prints is recorded by the last step that writes it; a
    parameter nobody rebinds by the last step (every step has the parameters)."""
    for cell in nb.metrics:
        for stmt in analysis.parse(cell.source).body:
            call = stmt.value if isinstance(stmt, ast.Expr) else None
            if not (isinstance(call, ast.Call) and getattr(call.func, "id", None) == "print"
                    and all(isinstance(a, ast.Name) for a in call.args)):
                raise FlowError(f"{cell.label()} (pipeline-metrics): line {stmt.lineno} is not print(name); "
                                "a metrics cell only names variables, e.g. print(accuracy)")
            for arg in call.args:
                writer = next((s for s in reversed(list(steps)) if arg.id in steps[s].writes), None)
                writer = writer or (list(steps)[-1] if arg.id in parameters and steps else None)
                if writer:
                    steps[writer].metrics.append(arg.id)
                else:
                    warnings.append(f"metric {arg.id!r} ({cell.label()}) is written by no step")


def _topological(nb: notebook.Notebook, steps: dict[str, Step]) -> list[str]:
    """Steps in dependency order, ties broken by notebook order (Kahn's algorithm with a heap)."""
    upstream = {s.name: set(s.prev) | set(s.inputs.values()) for s in steps.values()}
    position = {name: i for i, name in enumerate(steps)}
    downstream: dict[str, list[str]] = {name: [] for name in steps}
    for name, ups in upstream.items():
        for u in ups:
            downstream[u].append(name)
    missing = {name: len(ups) for name, ups in upstream.items()}
    ready = [position[name] for name, count in missing.items() if not count]
    heapq.heapify(ready)
    names, order = list(steps), []
    while ready:
        name = names[heapq.heappop(ready)]
        order.append(name)
        for d in downstream[name]:
            missing[d] -= 1
            if not missing[d]:
                heapq.heappush(ready, position[d])
    if len(order) < len(steps):
        raise FlowError(_cycle_message(nb, steps, upstream, [s for s in steps if missing[s]]))
    return order


def _cycle_message(nb, steps, upstream, remaining) -> str:
    start = remaining[0]
    path, node = [start], start
    while True:
        node = next(u for u in sorted(upstream[node]) if u in remaining)
        if node in path:
            cycle = path[path.index(node):] + [node]
            break
        path.append(node)
    cycle.reverse()
    cells = [c.label() for s in cycle[:-1] for c in steps[s].cells if any(t.startswith("prev:") for t in c.tags)]
    where = f" (prev: tags on {', '.join(dict.fromkeys(cells))})" if cells else ""
    return f"cycle among steps: {' -> '.join(cycle)}{where}; remove one of these prev: tags"
