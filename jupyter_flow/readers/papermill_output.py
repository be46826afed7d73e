"""The papermill drop-in's reading side: one output notebook for a whole run, the one `papermill in.ipynb
out.ipynb` writes (the door itself, `execute_notebook`, is `jupyter_flow.api.execute_notebook`).

The notebook is made by papermill's own functions, in papermill's order: the source notebook with
papermill's defaults, `parameterize_notebook` when parameters are given (it replaces an
`injected-parameters` cell already there, else adds one after the parameters cell), then
`prepare_notebook_metadata` and `remove_error_markers`. Then what the engine would record is filled
in from the executed step notebooks of the run: each code cell's outputs, `metadata.execution` and
`metadata.papermill` (status, times, exception), execution counts in notebook order, markdown and
empty cells `completed` up to the first failure, and the notebook's `metadata.papermill` times and
`language_info`. A failed run gets papermill's error banner and anchor (`raise_for_execution_errors`).
Cells of a foreach step hold the outputs of all its tasks, in order; shared cells (`imports`,
`functions`) run in every step and show the outputs of their first run. Input and output may be
any fsspec URL.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

from jupyter_flow.errors import FlowError, NotFound
from jupyter_flow.readers.client import get_run, read_task_file
from jupyter_flow.store import layout, open_store

CELL_ROLES = ("parameters", "shared", "step")
INJECTED = "injected-parameters"
# papermill's execute_notebook keywords that change nothing here: the output notebook is written once,
# when the run ends (and when it fails)
NO_EFFECT = ("request_save_on_cell_execute", "autosave_cell_every")
# keywords that cannot apply, unless given papermill's default: (default, what to do instead)
CANNOT_APPLY = {
    "engine_name": ((None, "nbclient"), "steps run on jupyter_flow's own nbclient-based engine; drop it"),
    "start_timeout": ((60,), "kernels get papermill's default of 60 s to start; drop it"),
    "execution_timeout": ((None,), "tag the step timeout:SECONDS instead (it limits a whole step, not a cell)"),
}


@contextlib.contextmanager
def local_notebook(url: str):
    """A local path for the notebook at `url` (a path, or any fsspec URL: s3://, gs://, http://...)."""
    if "://" not in str(url) or str(url).startswith("file://"):
        path = Path(str(url).removeprefix("file://"))
        if not path.exists():
            raise FlowError(f"{url}: no such notebook")
        yield path
        return
    # only for a papermill-style call: the package and the CLI import light
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


def check_options(options: dict, flags: dict | None = None) -> None:
    """A one-line error for a papermill option that cannot apply to a pipeline run (`flags`: the
    command-line spelling of each keyword)."""
    for name, (defaults, instead) in CANNOT_APPLY.items():
        if name in options and options[name] not in defaults:
            given = f"{flags[name]} {options[name]}" if flags else f"{name}={options[name]!r}"
            raise FlowError(f"{given}: {instead}")


def paths(input_path, output_path, parameters: dict | None) -> tuple:
    """Input and output paths with their `{name}` fields filled in from the parameters, as papermill does
    (`out_{alpha}.ipynb`; `{pm[run_uuid]}` too). Paths without fields skip papermill's import."""
    if not any(c in str(p) for p in (input_path, output_path or "") for c in "{}"):
        return str(input_path), None if output_path is None else str(output_path)
    # only for a papermill-style call: the package and the CLI import light
    from papermill.exceptions import PapermillMissingParameterException
    from papermill.parameterize import add_builtin_parameters, parameterize_path

    values = add_builtin_parameters(parameters)
    try:
        return (parameterize_path(str(input_path), values),
                None if output_path is None else parameterize_path(str(output_path), values))
    except PapermillMissingParameterException as e:
        raise FlowError(f"{e} in the notebook paths {input_path} {output_path}; pass it with -p") from None


def merge(store, run_id: str, parameters: dict | None = None, input_path: str | None = None,
          output_path: str | None = None, report_mode: bool = False, kernel_name: str | None = None,
          language: str | None = None):
    """The run as the notebook papermill writes (an nbformat NotebookNode), and papermill's
    PapermillExecutionError for its first failing cell (None if no cell failed).
    `parameters`: the ones given for the run (papermill injects only those; none: no injected cell)."""
    # only for a papermill-style call: the package and the CLI import light
    import nbformat
    from papermill.exceptions import PapermillExecutionError
    from papermill.execute import (
        prepare_notebook_metadata,
        raise_for_execution_errors,
        remove_error_markers,
    )
    from papermill.parameterize import parameterize_notebook
    from papermill.version import version

    store = open_store(store)
    run = get_run(store, run_id)
    raw = store.read_bytes(layout.run_file(run["flow"], run["id"], "notebook.ipynb")).decode()
    nb = nbformat.reads(raw, as_version=4)
    nb = nbformat.v4.upgrade(nb, from_version=4, from_minor=nb.nbformat_minor)  # cell ids, as papermill adds
    executed, injected, step_meta = _executed(store, run, _flow(run, nb, parameters))
    copies = {id(cell): executed.get(index, []) for index, cell in enumerate(nb.cells)}
    if not parameters:  # papermill runs an injected cell already there; here it is part of the parameters cell
        params_cell = next((i for i, c in enumerate(nb.cells) if "parameters" in _tags(c)), None)
        for cell in nb.cells:
            if INJECTED in _tags(cell) and params_cell is not None:
                first = executed.get(params_cell, [])[:1]
                copies[id(cell)] = [nbformat.NotebookNode(dict(c, outputs=[])) for c in first]
    # papermill's load_notebook_node, parameterize_notebook, prepare_notebook_metadata, remove_error_markers
    if "papermill" not in nb.metadata:
        nb.metadata["papermill"] = {"default_parameters": {}, "parameters": {}, "environment_variables": {},
                                    "version": version}
    for cell in nb.cells:
        cell.metadata["tags"] = cell.metadata.get("tags", [])
    if parameters:
        nb = parameterize_notebook(nb, parameters, report_mode, kernel_name=kernel_name, language=language)
        new = next(c for c in nb.cells if INJECTED in _tags(c))
        copies[id(new)] = [injected] if injected is not None else []
    nb = prepare_notebook_metadata(nb, input_path or run["notebook"], output_path, report_mode)
    nb = remove_error_markers(nb)
    _fill(nb, copies, run)
    if step_meta.get("language_info"):
        nb.metadata["language_info"] = step_meta["language_info"]
    nb.metadata["jupyter_flow"] = {"run_id": run["id"], "flow": run["flow"], "status": run["status"],
                                   "store": store.url}
    try:
        raise_for_execution_errors(nb, None)  # papermill's banner and anchor, on this notebook (it writes nothing)
        error = None
    except PapermillExecutionError as e:
        error = e
    nbformat.validate(nb)
    return nb, error


def _flow(run: dict, nb, parameters: dict | None):
    """The run's flow, as `prepare` built it from the run's copy of the notebook."""
    # only for a papermill-style call: the package and the CLI import light
    import nbformat

    from jupyter_flow.flow.dag import build_flow
    from jupyter_flow.flow.params import replace_injected

    flow = build_flow(run["notebook"], raw=nbformat.from_dict(nb))
    return replace_injected(flow) if parameters else flow


def _places(flow, step: str) -> dict | None:
    """Where the cells of one of `step`'s notebooks come from in the run's notebook, by role, in order
    (a task reused from the cache ran another notebook, whose cell numbers may differ); None for a
    notebook in another language (its cells are the notebook's own)."""
    if not flow.notebook.python or step not in flow.steps:
        return None
    setup = flow.shared + ([flow.notebook.parameters] if flow.notebook.parameters else [])
    return {"setup": sorted(c.index for c in setup), "step": [c.index for c in flow.steps[step].cells]}


def _executed(store, run: dict, flow) -> tuple[dict, object, dict]:
    """({source cell index: its executed copies}, an executed injected-parameters cell, a step notebook's metadata)."""
    # only for a papermill-style call: the package and the CLI import light
    import nbformat

    executed: dict[int, list] = {}  # several copies for a foreach step
    injected, metadata = None, {}
    for task in run["tasks"]:
        try:
            step_nb = nbformat.reads(read_task_file(store, run["id"], task["step"], task["index"], "output.ipynb"),
                                     as_version=4)
        except NotFound:
            continue  # the task never reached its kernel
        metadata = metadata or step_nb.metadata
        places = _places(flow, task["step"])
        for cell in step_nb.cells:
            info = cell.metadata.get("jupyter_flow", {})
            left = places and places["step" if info.get("role") == "step" else "setup"]
            if info.get("role") in CELL_ROLES and left:
                info["source_cell"] = left.pop(0)
        step_cells = [c for c in step_nb.cells if c.metadata.get("jupyter_flow", {}).get("role") == "step"]
        for cell in step_nb.cells:
            info = cell.metadata.get("jupyter_flow", {})
            if INJECTED in _tags(cell):
                injected = injected or cell
            elif info.get("role") in CELL_ROLES:
                found = executed.setdefault(info["source_cell"], [])
                if info["role"] == "step" or not found:
                    found.append(cell)
            elif cell.get("outputs") and step_cells:  # generated code that failed: show it on the step
                where = step_cells[0] if info.get("role") == "begin" else step_cells[-1]
                executed.setdefault(where.metadata["jupyter_flow"]["source_cell"], []).append(cell)
    return executed, injected, metadata


def _fill(nb, copies: dict, run: dict) -> None:
    """What papermill's engine records, from the executed copies: every cell starts pending without
    outputs (notebook_start); a cell that ran gets its outputs, timing and status, and the next
    execution count; markdown and empty cells are completed until the first failure (notebook_complete)."""
    count, failed, last_end = 0, False, run["created"]
    for cell in nb.cells:
        ran = [c for c in copies.get(id(cell), []) if c.metadata.get("papermill", {}).get("start_time")]
        cell.metadata["papermill"] = _pending()
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs = [o for c in ran for o in c.get("outputs", [])]
            cell.execution_count = None
        if cell.cell_type == "code" and cell.source.strip() and ran:
            count += 1
            cell.execution_count = count
            if len(ran) == 1 and ran[0].get("execution_count"):  # its kernel counted its cells its own way
                _renumber(cell.outputs, ran[0].execution_count, count)
            cell.metadata["papermill"] = _status(ran)
            timing = [c.metadata["execution"] for c in ran if c.metadata.get("execution")]
            if timing:
                cell.metadata["execution"] = {**timing[-1], **{k: v for k, v in timing[0].items() if "idle" not in k
                                                                and k != "shell.execute_reply"}}
            last_end = cell.metadata["papermill"]["end_time"] or last_end
            failed = failed or cell.metadata["papermill"]["exception"]
        elif (cell.cell_type != "code" or not cell.source.strip()) and not failed:
            cell.metadata["papermill"] = dict(_pending(), exception=False, start_time=last_end, end_time=last_end,
                                              duration=0.0, status="completed")
    nb.metadata["papermill"].update(start_time=run["created"], end_time=run.get("ended"), duration=run.get("duration"),
                                 exception=True if failed or run["status"] != "succeeded" else None)


def _renumber(outputs: list, old: int, new: int) -> None:
    """The cell's count in its results, and `Cell In[old]` as `Cell In[new]` in its tracebacks."""
    for out in outputs:
        if out.output_type == "execute_result":
            out.execution_count = new
        elif out.output_type == "error":
            out.traceback = [line.replace(f"In[{old}]", f"In[{new}]") for line in out.traceback]


def _pending() -> dict:
    return {"exception": None, "start_time": None, "end_time": None, "duration": None, "status": "pending"}


def _status(copies: list) -> dict:
    metas = [c.metadata["papermill"] for c in copies]
    failed = any(m.get("exception") for m in metas)
    ends = [m["end_time"] for m in metas if m.get("end_time")]
    return {"exception": failed, "start_time": min(m["start_time"] for m in metas), "end_time": max(ends, default=None),
            "duration": sum(m.get("duration") or 0 for m in metas), "status": "failed" if failed else "completed"}


def _tags(cell) -> list:
    return cell.get("metadata", {}).get("tags") or []


def write(nb, output: str | None, stdout_file=None, stderr_file=None) -> None:
    """Write the notebook to `output` (a path or any fsspec URL; None: nowhere), and what its cells
    printed to `stdout_file` and `stderr_file` (open text files), as papermill's options do."""
    # only for a papermill-style call: the package and the CLI import light
    import fsspec
    import nbformat

    if output is not None:
        with fsspec.open(str(output), "w", encoding="utf-8") as f:
            nbformat.write(nb, f)
    for stream, target in (("stdout", stdout_file), ("stderr", stderr_file)):
        if target is not None:
            target.write("".join(o.text for c in nb.cells for o in c.get("outputs", [])
                                 if o.output_type == "stream" and o.name == stream))
            target.flush()


def log_outputs(store, on_event=None):
    """An on_event callback that logs what each task printed (INFO, logger `jupyter_flow.output`) when
    the task ends (papermill's log_output; papermill's own logger is kept quiet while tasks run), then
    calls `on_event`."""
    logger = logging.getLogger("jupyter_flow.output")

    def event(e: dict) -> None:
        if e.get("type") == "task" and e.get("status") not in ("running", None) and logger.isEnabledFor(logging.INFO):
            with contextlib.suppress(NotFound):
                text = read_task_file(store, e["run_id"], e["step"], e.get("index", 0), "log.txt")
                logger.info(f"Step {e['step']}[{e.get('index', 0)}] {e['status']}:\n{text}")
        if on_event is not None:
            on_event(e)

    return event


def prepare_notebook(path, output_path, parameters: dict | None, **options):
    """papermill's prepare_only: the parameterized notebook, executed by nobody (papermill writes it),
    after the same checks a run makes (unknown names, wrong types)."""
    # only for a papermill-style call: the package and the CLI import light
    import papermill

    from jupyter_flow.flow.dag import build_flow
    from jupyter_flow.flow.params import replace_injected, resolve

    resolve(replace_injected(build_flow(path)) if parameters else build_flow(path), parameters)
    papermill_options = {k: v for k, v in options.items() if k in ("report_mode", "kernel_name", "language")}
    return papermill.execute_notebook(str(path), output_path, parameters=parameters, prepare_only=True,
                                      progress_bar=False, **papermill_options)
