"""Build the notebook one task executes: parameters, shared cells, inputs, the step, outputs.

The user's cells are copied as cells, never pasted into generated code. The only generated code is
two calls into `jupyter_flow.execution.in_kernel` whose argument is plain data (a dict of strings and
numbers). Each cell's `metadata.jupyter_flow` says where it came from, so an error in the executed
notebook maps back to the source notebook's cell.
"""
from __future__ import annotations

import copy
import json
import os

from jupyter_flow.flow import languages
from jupyter_flow.flow.analysis import to_python
from jupyter_flow.flow.dag import Flow, Step
from jupyter_flow.flow.notebook import Cell


def build(flow: Flow, step: Step, run_id: str, index: int, start: int = 0) -> dict:
    """The step notebook as an nbformat v4 dict; `with_begin` fills in what the kernel receives.
    `start`: the step's first cell to run (a step continued from its failing cell, see
    runtime/continuing.py; the begin cell then loads the failure snapshot).
    A step in another language than the notebook's (a `kernel:` tag) runs none of the notebook's
    shared cells; its first cell gives it the parameters' defaults in its language (papermill's
    translators), and papermill injects the run's values after it."""
    if not languages.supported(flow.notebook.language):
        return _as_papermill_runs_it(flow, run_id)
    params = flow.notebook.parameters
    if languages.same(step.language, flow.notebook.language):
        setup = sorted(flow.shared + ([params] if params is not None else []), key=lambda c: c.index)
        cells = [_cell(c.source, "parameters", c.index, tags=["parameters"], of=c) if c is params
                 else _cell(c.source, "shared", c.index, of=c) for c in setup]  # in notebook order, as papermill does
    else:
        cells = [_cell(_defaults(flow, step), "parameters", tags=["parameters"])]
    cells.append(_cell("", "begin"))
    cells += [_cell(c.source, "step", c.index, of=c) for c in step.cells[start:]]
    cells.append(_cell(_finish(flow, step), "finish"))
    metadata = copy.deepcopy(flow.notebook.raw.get("metadata", {}))
    kernel = step.options.get("kernel", flow.kernel)
    if (metadata.get("kernelspec") or {}).get("name") != kernel:
        metadata["kernelspec"] = {"name": kernel, "display_name": kernel, "language": step.language}
    if not languages.same(step.language, flow.notebook.language):
        metadata["language_info"] = {"name": step.language}
    metadata["jupyter_flow"] = {"flow": flow.name, "step": step.name, "run_id": run_id, "index": index,
                                "source": str(flow.path)}
    for i, cell in enumerate(cells):
        cell["id"] = f"jf-{i}"
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": metadata, "cells": cells}


def _defaults(flow: Flow, step: Step) -> str:
    """The parameters' literal defaults as code of the step's language (papermill's translator)."""
    from papermill.translators import translate_parameters  # lazy: papermill costs 0.4 s; a cache hit builds no step

    values = {n: p.value for n, p in flow.parameters.items() if p.type != "expression"}
    if not values:
        return ""
    kernel = step.options.get("kernel", flow.kernel)
    return translate_parameters(kernel, step.language, values, "Parameters (the notebook's defaults)")


def _finish(flow: Flow, step: Step) -> str:
    """The finish cell: Python's names the outputs another language's steps read (stored also in
    the neutral format, see store/neutral.py)."""
    lang = languages.get(step.language)
    if lang is not None and not languages.is_python(step.language):
        return lang.finish_code
    crossing: dict = {}
    if all(languages.is_python(s.language) for s in flow.steps.values()):
        return "_jf.finish()"
    for name, readers in _readers(flow, step).items():
        foreign = {r: flow.steps[r].language for r in readers if not languages.is_python(flow.steps[r].language)}
        if foreign:
            crossing[name] = foreign
    return f"_jf.finish(crossing={crossing!r})" if crossing else "_jf.finish()"


def _readers(flow: Flow, step: Step) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for other in flow.steps.values():
        for name, producer in other.inputs.items():
            if producer == step.name:
                found.setdefault(name, []).append(other.name)
    return found


def _as_papermill_runs_it(flow: Flow, run_id: str) -> dict:
    """A notebook in another language: its own cells, unchanged (papermill injects parameters after
    the cell tagged `parameters`), each marked with its place in the source notebook."""
    nb = copy.deepcopy(flow.notebook.raw)
    for i, cell in enumerate(nb["cells"]):
        cell.setdefault("metadata", {})["jupyter_flow"] = {"role": "step", "source_cell": i}
        cell["id"] = f"jf-{i}"
    nb.setdefault("metadata", {})["jupyter_flow"] = {
        "flow": flow.name, "step": "main", "run_id": run_id, "index": 0, "source": str(flow.path)}
    return dict(nb, nbformat=4, nbformat_minor=5)


def with_begin(nb: dict, kernel_spec: dict) -> dict:
    """A copy of `nb` whose setup cell hands `kernel_spec` (plain data) to `in_kernel.begin`."""
    nb = dict(nb, cells=[dict(c) for c in nb["cells"]])
    lang = languages.get(language(nb))
    for cell in nb["cells"]:
        if cell["metadata"]["jupyter_flow"]["role"] == "begin":
            cell["source"] = (lang.begin_code(kernel_spec) if lang is not None
                              else f"import jupyter_flow.execution.in_kernel as _jf\n_jf.begin({kernel_spec!r})")
    return nb


def language(nb: dict) -> str:
    """The language of a step notebook's kernel (its metadata)."""
    return (nb.get("metadata", {}).get("kernelspec") or {}).get("language") or "python"


def _cell(source: str, role: str, source_cell: int | None = None, tags=(), of=None) -> dict:
    """A cell of the step notebook; `source_cell`: its place in the flow's cells; `of`: the user's
    Cell, whose notebook and place there are noted too in a flow of several notebooks (see several.py)."""
    meta: dict = {"jupyter_flow": {"role": role}}
    if source_cell is not None:
        meta["jupyter_flow"]["source_cell"] = source_cell
    if of is not None and of.notebook:
        meta["jupyter_flow"].update(notebook=of.notebook, position=of.position)
    if tags:
        meta["tags"] = list(tags)
    return {"cell_type": "code", "metadata": meta, "source": source, "outputs": [], "execution_count": None}


def failing_cell(executed: dict) -> dict | None:
    """Where the executed step notebook stopped: its cell index, role and source cell, and `where`:
    that cell as the user knows it (its place in their notebook and its first line)."""
    for i, cell in enumerate(executed.get("cells", [])):
        if cell.get("metadata", {}).get("papermill", {}).get("exception"):
            info = dict(cell["metadata"].get("jupyter_flow", {}), cell=i)
            info["where"] = _where(info, cell.get("source", ""))
            return info
    return None


def _where(info: dict, source) -> str | None:
    if info.get("role") in ("begin", "finish"):
        return {"begin": "the step's set-up (loading its inputs)", "finish": "the step's end (storing its outputs)"}[
            info["role"]]
    if "source_cell" not in info:
        return None
    label = Cell(info["source_cell"], "", "".join(source) if isinstance(source, list) else source, [],
                 info.get("notebook", ""), info.get("position")).label()
    return f"{info['role']} {label}" if info.get("role") in ("shared", "parameters") else label


def sets_up_kernel(nb: dict) -> bool:
    """Whether the step notebook hands the kernel to `jupyter_flow.execution.in_kernel` (Python steps do)."""
    return any(c.get("metadata", {}).get("jupyter_flow", {}).get("role") == "begin" for c in nb.get("cells", []))


def label_frames(failure_path: str, executed: dict) -> None:
    """Say which cell of the user's notebook each failing frame of a snapshot (failure.json, see
    in_kernel._frames) ran in: `cell` (its number, from 1) and `role`, matched by the cell's source."""
    try:
        with open(failure_path) as f:
            failure = json.load(f)
    except (OSError, ValueError):
        return
    by_source = {}
    for cell in executed.get("cells", []):
        where = cell.get("metadata", {}).get("jupyter_flow", {})
        source = "".join(cell.get("source", ""))
        if "source_cell" in where:
            for text in (source, to_python(source)):
                by_source.setdefault(text.strip(), where)
    for frame in failure.get("frames") or []:
        where = by_source.get((frame.get("source") or "").strip()) if frame.get("notebook") else None
        if where:
            frame.update(cell=where["source_cell"] + 1, role=where.get("role"))
    with open(failure_path + ".tmp", "w") as f:
        json.dump(failure, f, default=str)
    os.replace(failure_path + ".tmp", failure_path)


def frame_summary(frame: dict) -> dict:
    """A failing frame as the task record keeps it: where, and each local's type and short preview."""
    where = f"cell {frame['cell']}" if frame.get("cell") else frame.get("file")
    stored = {n: m.get("preview") or m.get("type", "") for n, m in (frame.get("locals") or {}).items()}
    unpicklable = {n: f"{t} (not stored: cannot be pickled)" for n, t in (frame.get("unpicklable") or {}).items()}
    withheld = {n: f"[secret removed] ({why})" for n, why in (frame.get("withheld") or {}).items()}
    return {"where": where, "function": frame.get("function"), "line": frame.get("line"),
            "notebook": bool(frame.get("notebook")), "locals": {**stored, **unpicklable, **withheld}}
