"""The papermill drop-in: one output notebook for a whole run, as `papermill in.ipynb out.ipynb` writes it.

The executed step notebooks of a run are merged back into the source notebook's cell order: the
parameters cell followed by papermill's `injected-parameters` cell, every code cell with the
outputs and `metadata.papermill` (status, times, exception) of the task that ran it, and
`metadata.papermill` for the notebook. A failed run is written too, with papermill's error banner
and the traceback in place. Cells of a foreach step hold the outputs of all its tasks, in order.
Shared cells (`imports`, `functions`) run in every step; they show the outputs of their first run.
Input and output may be any fsspec URL.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from .errors import FlowError, NotFound

CELL_ROLES = ("parameters", "shared", "step")


@contextlib.contextmanager
def local_notebook(url: str):
    """A local path for the notebook at `url` (a path, or any fsspec URL: s3://, gs://, http://...)."""
    if "://" not in str(url) or str(url).startswith("file://"):
        path = Path(str(url).removeprefix("file://"))
        if not path.exists():
            raise FlowError(f"{url}: no such notebook")
        yield path
        return
    import fsspec

    folder = tempfile.mkdtemp(prefix="jupyter-flow-input-")
    target = Path(folder) / (os.path.basename(str(url).rstrip("/")) or "notebook.ipynb")
    try:
        with fsspec.open(url, "rb") as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
    except (OSError, ValueError, ImportError) as e:
        shutil.rmtree(folder, ignore_errors=True)
        raise FlowError(f"{url}: cannot read it ({e.__class__.__name__}: {e})") from None
    try:
        yield target
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def check_output(url: str) -> None:
    """Refuse an output location that cannot be written, before anything runs."""
    if not str(url).endswith(".ipynb"):
        raise FlowError(f"output {url}: give a path ending in .ipynb")
    if "://" not in str(url):
        folder = Path(url).resolve().parent
        if not folder.is_dir():
            raise FlowError(f"output {url}: folder {folder} does not exist; create it first")


def merge(store, run_id: str):
    """The run as one papermill-style notebook (nbformat NotebookNode)."""
    import nbformat

    from .client import get_run, read_task_file
    from .store import layout, open_store

    store = open_store(store)
    run = get_run(store, run_id)
    nb = nbformat.reads(store.read_bytes(layout.run_file(run["flow"], run["id"], "notebook.ipynb")).decode(), as_version=4)
    nb = nbformat.v4.upgrade(nb, from_version=4, from_minor=nb.nbformat_minor)  # cell ids, as papermill adds
    executed: dict[int, list] = {}  # source cell index -> executed copies (several for a foreach step)
    injected, notebook_meta = None, None
    for task in run["tasks"]:
        try:
            step_nb = nbformat.reads(read_task_file(store, run["id"], task["step"], task["index"], "output.ipynb"),
                                     as_version=4)
        except NotFound:
            continue  # the task never reached its kernel
        notebook_meta = notebook_meta or step_nb.metadata.get("papermill")
        step_cells = [c for c in step_nb.cells if c.metadata.get("jupyter_flow", {}).get("role") == "step"]
        for cell in step_nb.cells:
            info = cell.metadata.get("jupyter_flow", {})
            if "injected-parameters" in cell.metadata.get("tags", []):
                injected = injected or cell
            elif info.get("role") in CELL_ROLES:
                copies = executed.setdefault(info["source_cell"], [])
                if info["role"] == "step" or not copies:
                    copies.append(cell)
            elif cell.get("outputs") and step_cells:  # generated code that failed: show it on the step
                where = step_cells[0] if info.get("role") == "begin" else step_cells[-1]
                executed.setdefault(where.metadata["jupyter_flow"]["source_cell"], []).append(cell)
    cells, count = [], 0
    for index, cell in enumerate(nb.cells):
        cells.append(cell)
        if cell.cell_type != "code":
            continue
        copies = executed.get(index, [])
        cell.outputs = [o for c in copies for o in c.get("outputs", [])]
        cell.metadata["papermill"] = _cell_status(copies)
        count = count + 1 if copies else count
        cell.execution_count = count if copies else None
        if injected is not None and "parameters" in cell.metadata.get("tags", []):
            cells.append(_injected(injected))
    nb.cells = cells
    if injected is not None and not any("parameters" in c.metadata.get("tags", []) for c in nb.cells):
        nb.cells.insert(0, _injected(injected))
    nb.metadata["papermill"] = dict(notebook_meta or {}, input_path=run["notebook"], parameters=run["parameters"],
                                    start_time=run["created"],
                                    end_time=run.get("ended"), duration=run.get("duration"),
                                    exception=run["status"] != "succeeded" or None)
    nb.metadata["jupyter_flow"] = {"run_id": run["id"], "flow": run["flow"], "status": run["status"],
                                   "store": store.url}
    _mark_failure(nb)
    nbformat.validate(nb)
    return nb


def _cell_status(copies: list) -> dict:
    if not copies:
        return {"exception": None, "start_time": None, "end_time": None, "duration": None, "status": "pending"}
    metas = [c.metadata.get("papermill", {}) for c in copies]
    failed = any(m.get("exception") for m in metas)
    starts = [m["start_time"] for m in metas if m.get("start_time")]
    ends = [m["end_time"] for m in metas if m.get("end_time")]
    return {"exception": failed, "start_time": min(starts, default=None), "end_time": max(ends, default=None),
            "duration": sum(m.get("duration") or 0 for m in metas),
            "status": "failed" if failed else "completed"}


def _injected(cell):
    import nbformat

    new = nbformat.v4.new_code_cell(cell.source, metadata={"tags": ["injected-parameters"]})
    new.outputs, new.execution_count = cell.get("outputs", []), None
    return new


def _mark_failure(nb) -> None:
    """papermill's error banner on top and its anchor before the failing cell."""
    import nbformat
    from papermill.execute import ERROR_ANCHOR_MSG, ERROR_MARKER_TAG, ERROR_MESSAGE_TEMPLATE

    failing = next((i for i, c in enumerate(nb.cells) if c.metadata.get("papermill", {}).get("exception")), None)
    if failing is None:
        return
    banner = nbformat.v4.new_markdown_cell(ERROR_MESSAGE_TEMPLATE % nb.cells[failing].execution_count,
                                           metadata={"tags": [ERROR_MARKER_TAG]})
    anchor = nbformat.v4.new_markdown_cell(ERROR_ANCHOR_MSG, metadata={"tags": [ERROR_MARKER_TAG]})
    nb.cells.insert(failing, anchor)
    nb.cells.insert(0, banner)


def write(store, run_id: str, output: str, input_path: str | None = None):
    """Merge the run into one notebook and write it to `output` (a path or any fsspec URL)."""
    import fsspec
    import nbformat

    nb = merge(store, run_id)
    nb.metadata["papermill"]["output_path"] = str(output)
    if input_path:
        nb.metadata["papermill"]["input_path"] = str(input_path)
    with fsspec.open(str(output), "w", encoding="utf-8") as f:
        nbformat.write(nb, f)
    return nb


def execute_notebook(input_path, output_path, parameters: dict | None = None, **options):
    """`papermill.execute_notebook`, as a tracked pipeline: same arguments, same output notebook,
    and the same `PapermillExecutionError` when a cell raises. Other keyword arguments go to
    `jupyter_flow.run` (store, executor, max_workers...)."""
    from papermill.exceptions import PapermillExecutionError

    from .api import run

    check_output(str(output_path))
    with local_notebook(str(input_path)) as path:
        result = run(path, parameters=parameters, **options)
    nb = write(result.store, result.id, str(output_path), str(input_path))
    for index, cell in enumerate(nb.cells):
        errors = [o for o in cell.get("outputs", []) if o.output_type == "error"]
        if cell.metadata.get("papermill", {}).get("exception") and errors:
            raise PapermillExecutionError(index, cell.execution_count, cell.source, errors[0].ename,
                                          errors[0].evalue, errors[0].traceback)
    if result.status != "succeeded":
        raise FlowError(f"run {result.id} {result.status}: {(result.error or {}).get('message', '')}")
    return nb
