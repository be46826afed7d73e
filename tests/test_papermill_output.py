"""The papermill drop-in: `jupyter flow run in.ipynb out.ipynb` writes one executed notebook, as papermill does."""
from __future__ import annotations

import re

import nbformat
import pytest

from conftest import SCENARIOS, cli

pytestmark = pytest.mark.slow
REPORT = SCENARIOS / "report.ipynb"


def _text(cell) -> str:
    """What a cell showed: its printed text and the value it ended with."""
    parts = []
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            parts.append(out.text)
        elif out.output_type == "execute_result":
            parts.append(out.data["text/plain"] + "\n")
    return "".join(parts)


def _code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code" and "injected-parameters" not in c.metadata.get("tags", [])]


def test_output_notebook_matches_papermill(store, tmp_path):
    import papermill

    out = tmp_path / "out.ipynb"
    cli("run", f"file://{REPORT}", out, "-p", "n", 5, check=0)
    nb = nbformat.read(str(out), as_version=4)
    nbformat.validate(nb)
    source = nbformat.read(str(REPORT), as_version=4)
    # the source's cells, in the source's order, with papermill's injected cell right after the parameters
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    assert tags.index(["injected-parameters"]) == tags.index(["parameters"]) + 1
    assert [c.source for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])] == \
        [c.source for c in source.cells]
    assert "n = 5" in nb.cells[tags.index(["injected-parameters"])].source
    assert nb.metadata.papermill.parameters["n"] == 5 and nb.metadata.papermill.exception is None
    assert nb.metadata.papermill.output_path == str(out)

    expected = tmp_path / "papermill.ipynb"
    papermill.execute_notebook(str(REPORT), str(expected), parameters={"n": 5}, progress_bar=False)
    reference = nbformat.read(str(expected), as_version=4)
    ours = {c.source: c for c in _code_cells(nb)}
    for cell in _code_cells(reference):
        if "skip" in cell.metadata.get("tags", []):
            assert ours[cell.source].metadata.papermill.status == "pending" and not ours[cell.source].outputs
            continue
        assert _text(ours[cell.source]) == _text(cell), cell.source  # the outputs of every step, as papermill
        assert ours[cell.source].metadata.papermill.status == "completed"
    counts = [c.execution_count for c in _code_cells(nb) if c.execution_count is not None]
    assert counts == sorted(counts) and len(counts) == len(set(counts))


def test_failed_run_still_writes_the_notebook_with_the_traceback_in_place(store, tmp_path):
    out = tmp_path / "out.ipynb"
    proc = cli("run", REPORT, out, "-p", "fail", "True", check=1)
    assert f"output notebook: {out}" in proc.stderr
    nb = nbformat.read(str(out), as_version=4)
    nbformat.validate(nb)
    assert nb.cells[0].metadata.tags == ["papermill-error-cell-tag"]  # papermill's banner
    failing = next(i for i, c in enumerate(nb.cells) if c.metadata.get("papermill", {}).get("exception"))
    assert "raise ValueError" in nb.cells[failing].source
    assert nb.cells[failing - 1].metadata.tags == ["papermill-error-cell-tag"]  # papermill's anchor
    error = nb.cells[failing].outputs[-1]
    assert error.output_type == "error" and error.ename == "ValueError" and error.evalue == "total is 3"
    assert "----> 2     raise ValueError" in re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(error.traceback))
    final = next(c for c in nb.cells if "message = " in c.source)
    assert final.metadata.papermill.status == "pending" and not final.outputs  # never ran
    assert nb.metadata.papermill.exception is True and nb.metadata.jupyter_flow.status == "failed"


def test_python_drop_in_with_fsspec_urls_and_papermills_exception(store):
    import fsspec
    from papermill.exceptions import PapermillExecutionError

    import jupyter_flow

    with fsspec.open("memory://in/report.ipynb", "wb") as f:
        f.write(REPORT.read_bytes())
    nb = jupyter_flow.execute_notebook("memory://in/report.ipynb", "memory://out/report.ipynb",
                                       parameters={"n": 4}, store=store)
    with fsspec.open("memory://out/report.ipynb", "r") as f:
        written = nbformat.read(f, as_version=4)
    assert written == nb and written.metadata.papermill.input_path == "memory://in/report.ipynb"
    assert "total 6" in _text(next(c for c in written.cells if "print('total'" in c.source))
    with pytest.raises(PapermillExecutionError, match="total is 6"):
        jupyter_flow.execute_notebook("memory://in/report.ipynb", "memory://out/failed.ipynb",
                                      parameters={"n": 4, "fail": True}, store=store)
    with fsspec.open("memory://out/failed.ipynb", "r") as f:
        assert nbformat.read(f, as_version=4).metadata.papermill.exception is True


def test_foreach_cells_hold_every_tasks_outputs_in_order(store, tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("items = [1, 2, 3]", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("print('item', x)", metadata={"tags": ["step:each", "foreach:x=items"]})]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(tmp_path / "each.ipynb"))
    cli("run", tmp_path / "each.ipynb", tmp_path / "out.ipynb", check=0)
    merged = nbformat.read(str(tmp_path / "out.ipynb"), as_version=4)
    assert _text(merged.cells[-1]) == "item 1\nitem 2\nitem 3\n"


def test_bad_output_path_is_refused_before_anything_runs(store, tmp_path):
    from conftest import one_line_error, run_dirs

    assert "give a path ending in .ipynb" in one_line_error(cli("run", REPORT, tmp_path / "out.txt"))
    assert "does not exist" in one_line_error(cli("run", REPORT, tmp_path / "nope" / "out.ipynb"))
    assert "cannot read it" in one_line_error(cli("run", "memory://nowhere/x.ipynb"))
    assert not run_dirs(store)
