"""Build the notebook one task executes: parameters, shared cells, inputs, the step, outputs.

The user's cells are copied as cells, never pasted into generated code. The only generated code is
two calls into `jupyter_flow.inkernel` whose argument is plain data (a dict of strings and
numbers). Each cell's `metadata.jupyter_flow` says where it came from, so an error in the executed
notebook maps back to the source notebook's cell.
"""
from __future__ import annotations

import copy

from .dag import Flow, Step


def build(flow: Flow, step: Step, run_id: str, index: int) -> dict:
    """The step notebook as an nbformat v4 dict; `with_begin` fills in what the kernel receives."""
    params = flow.notebook.parameters
    setup = sorted(flow.shared + ([params] if params is not None else []), key=lambda c: c.index)
    cells = [_cell(c.source, "parameters", c.index, tags=["parameters"]) if c is params
             else _cell(c.source, "shared", c.index) for c in setup]  # in notebook order, as papermill runs them
    cells.append(_cell("", "begin"))
    cells += [_cell(c.source, "step", c.index) for c in step.cells]
    cells.append(_cell("_jf.finish()", "finish"))
    metadata = copy.deepcopy(flow.notebook.raw.get("metadata", {}))
    kernel = step.options.get("kernel", flow.kernel)
    if (metadata.get("kernelspec") or {}).get("name") != kernel:
        metadata["kernelspec"] = {"name": kernel, "display_name": kernel, "language": "python"}
    metadata["jupyter_flow"] = {"flow": flow.name, "step": step.name, "run_id": run_id, "index": index, "source": str(flow.path)}
    for i, cell in enumerate(cells):
        cell["id"] = f"jf-{i}"
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": metadata, "cells": cells}


def with_begin(nb: dict, kernel_spec: dict) -> dict:
    """A copy of `nb` whose setup cell hands `kernel_spec` (plain data) to `inkernel.begin`."""
    nb = dict(nb, cells=[dict(c) for c in nb["cells"]])
    for cell in nb["cells"]:
        if cell["metadata"]["jupyter_flow"]["role"] == "begin":
            cell["source"] = f"import jupyter_flow.inkernel as _jf\n_jf.begin({kernel_spec!r})"
    return nb


def _cell(source: str, role: str, source_cell: int | None = None, tags=()) -> dict:
    meta: dict = {"jupyter_flow": {"role": role}}
    if source_cell is not None:
        meta["jupyter_flow"]["source_cell"] = source_cell
    if tags:
        meta["tags"] = list(tags)
    return {"cell_type": "code", "metadata": meta, "source": source, "outputs": [], "execution_count": None}


def failing_cell(executed: dict) -> dict | None:
    """Where the executed step notebook stopped: its cell index, role and source cell."""
    for i, cell in enumerate(executed.get("cells", [])):
        if cell.get("metadata", {}).get("papermill", {}).get("exception"):
            info = dict(cell["metadata"].get("jupyter_flow", {}))
            info["cell"] = i
            return info
    return None
