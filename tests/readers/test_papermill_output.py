"""The papermill drop-in: `jupyter flow run in.ipynb out.ipynb` writes one executed notebook, as papermill does."""
from __future__ import annotations

import json
import re

import nbformat
import pytest
from conftest import SCENARIOS, cli, tagged_notebook

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


# -- the same notebook as papermill's, option by option (real papermill is the oracle) -------------------
PAPERMILL_CORPUS = SCENARIOS.parent / "corpus" / "papermill"
TIMES = ("start_time", "end_time", "duration")


def _normal(nb) -> dict:
    """The notebook without what differs from run to run: times (kept: whether there is one), cell ids,
    which output file it went to, and jupyter_flow's own metadata."""
    nb = json.loads(json.dumps(nb))
    meta = nb["metadata"]
    meta.pop("jupyter_flow", None)
    meta["papermill"].pop("output_path", None)
    meta["papermill"].update({k: meta["papermill"].get(k) is not None for k in TIMES})
    for cell in nb["cells"]:
        cell.pop("id", None)
        cell["metadata"].pop("jupyter_flow", None)
        if "papermill" in cell["metadata"]:
            cell["metadata"]["papermill"].update({k: cell["metadata"]["papermill"].get(k) is not None for k in TIMES})
        if "execution" in cell["metadata"]:
            cell["metadata"]["execution"] = sorted(cell["metadata"]["execution"])
    return nb


def _differences(expected, got, path="") -> list[str]:
    if isinstance(expected, dict) and isinstance(got, dict):
        return [d for k in sorted(set(expected) | set(got)) for d in (
            [f"{path}.{k}: only papermill has it"] if k not in got else
            [f"{path}.{k}: only jupyter_flow has it"] if k not in expected else
            _differences(expected[k], got[k], f"{path}.{k}"))]
    if isinstance(expected, list) and isinstance(got, list) and len(expected) == len(got):
        return [d for i, (a, b) in enumerate(zip(expected, got)) for d in _differences(a, b, f"{path}[{i}]")]
    return [] if expected == got else [f"{path}: papermill {expected!r:.200}, jupyter_flow {got!r:.200}"]


def _both(tmp_path, notebook, *options, papermill_code=0, flow_code=0):
    """Run `papermill NOTEBOOK out.ipynb OPTIONS` and `jupyter flow run NOTEBOOK out.ipynb OPTIONS`, each
    in a folder of its own; return both output notebooks and jupyter_flow's process."""
    import subprocess

    folders = tmp_path / "papermill", tmp_path / "flow"
    for folder in folders:
        folder.mkdir(exist_ok=True)
    proc = subprocess.run(["papermill", str(notebook), "out.ipynb", "--no-progress-bar", *map(str, options)],
                          cwd=folders[0], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == papermill_code, proc.stderr
    ours = cli("run", notebook, "out.ipynb", "--quiet", *options, cwd=folders[1], check=flow_code)
    return [nbformat.read(str(f / "out.ipynb"), as_version=4) for f in folders] + [ours]


def _assert_same(tmp_path, notebook, *options, **codes):
    expected, got, proc = _both(tmp_path, notebook, *options, **codes)
    assert not _differences(_normal(expected), _normal(got)), "\n".join(_differences(_normal(expected), _normal(got)))
    return got, proc


@pytest.mark.parametrize("notebook, options, code", [
    ("simple_execute.ipynb", ["-p", "msg", "hello"], 0),
    ("simple_execute.ipynb", [], 0),
    ("no_parameters.ipynb", [], 0),
    ("nb_version_4.4.ipynb", ["-p", "var", 5], 0),
    ("report_mode_test.ipynb", ["--report-mode", "-p", "a", 7], 0),
    ("result_no_exec.ipynb", [], 0),
    ("test_notebooknode_io.ipynb", [], 0),
    ("sysexit0.ipynb", [], 0),
    ("systemexit.ipynb", [], 0),
    ("sysexit1.ipynb", [], 1),
    ("line_magic_error.ipynb", [], 1),
])
def test_papermills_test_notebooks_give_papermills_output_notebook(store, tmp_path, notebook, options, code):
    _assert_same(tmp_path, PAPERMILL_CORPUS / notebook, *options, papermill_code=code, flow_code=code)


def _steps_notebook(folder):
    """A pipeline with markdown, an empty cell, shared imports, parallel steps and a cell that may fail."""
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    nb = new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nb.cells = [
        new_markdown_cell("# Steps"),
        new_code_cell("import math", metadata={"tags": ["imports"]}),
        new_code_cell("n = 3\nfail = False\nlabel = 'run'", metadata={"tags": ["parameters"]}),
        new_code_cell("data = list(range(n))\nprint('loaded', data)", metadata={"tags": ["step:load"]}),
        new_code_cell(""),
        new_markdown_cell("## two at once"),
        new_code_cell("total = sum(data)\ntotal", metadata={"tags": ["step:total"]}),
        new_code_cell("roots = [math.sqrt(d) for d in data]\nprint(len(roots))", metadata={"tags": ["step:roots"]}),
        new_code_cell("if fail:\n    raise ValueError(f'total is {total}')\nprint(label, total, len(roots))",
                      metadata={"tags": ["step:report"]}),
        new_markdown_cell("the end"),
    ]
    nbformat.write(nb, str(folder / "steps.ipynb"))
    return folder / "steps.ipynb"


def test_a_pipeline_without_parameters_has_no_injected_cell_and_every_cell_as_papermill_has_it(store, tmp_path):
    got, _ = _assert_same(tmp_path, _steps_notebook(tmp_path))
    assert not any("injected-parameters" in c.metadata.tags for c in got.cells)
    assert got.metadata.papermill.parameters == {}
    assert [c.metadata.papermill.status for c in got.cells] == ["completed"] * len(got.cells)
    assert [c.execution_count for c in got.cells if c.cell_type == "code"] == [1, 2, 3, None, 4, 5, 6]
    assert all(set(c.metadata.execution) >= {"iopub.status.busy", "shell.execute_reply"}
               for c in got.cells if c.cell_type == "code" and c.source)


def test_a_failing_pipeline_gives_papermills_notebook_banner_and_all(store, tmp_path):
    got, _ = _assert_same(tmp_path, _steps_notebook(tmp_path), "-p", "fail", "True", "-p", "n", 4,
                          papermill_code=1, flow_code=1)
    assert got.cells[0].metadata.tags == ["papermill-error-cell-tag"]
    assert "In [7]" in got.cells[0].source  # the failing cell's count, as in its traceback
    assert "In[7]" in got.cells[-2].outputs[-1].traceback[2]
    assert got.cells[-1].metadata.papermill.status == "pending"  # after the failure, as papermill leaves it


def test_papermills_output_as_input_replaces_its_injected_cell(store, tmp_path):
    """(a) the injected cell of an earlier papermill run is replaced when parameters are given, run as it
    is when none are; the values are papermill's."""
    import papermill

    first = tmp_path / "first.ipynb"
    papermill.execute_notebook(str(_steps_notebook(tmp_path)), str(first), parameters={"n": 5, "label": "old"},
                               progress_bar=False)
    got, _ = _assert_same(tmp_path, first, "-p", "n", 2)
    assert [c.metadata.tags for c in got.cells].count(["injected-parameters"]) == 1
    assert "run 1 2" in _text(got.cells[-2])  # label is the default again, as papermill has it
    got, _ = _assert_same(tmp_path, first)
    assert "old 10 5" in _text(got.cells[-2])


def test_parameter_options_read_as_papermill_reads_them(store, tmp_path):
    """(b) -p whatever the default's type; -r text; -y and -b YAML; -f a file; papermill's order among them."""
    import base64

    path = tagged_notebook(tmp_path, [
        (["parameters"], "ts = '2024'\nitems = [0]\nx = 1.5\nflag = True\nn = 3\nday = 'monday'"),
        (["step:show"], "for v in (ts, items, x, flag, n, day):\n    print(repr(v), type(v).__name__)"),
    ])
    (tmp_path / "p.yaml").write_text("n: 5\nday: 2024-01-01\n")
    encoded = base64.b64encode(b"x: 2.5\nflag: false\n").decode()
    got, proc = _assert_same(tmp_path, path, "-p", "ts", "20240101", "-p", "items", "[1, 2]", "-p", "x", 3,
                             "-r", "n", 7, "-p", "n", 6, "-f", tmp_path / "p.yaml", "-b", encoded,
                             "-y", "flag: true")
    assert _text(got.cells[-1]) == ("20240101 int\n'[1, 2]' str\n3 int\nTrue bool\n'7' str\n"
                                    "'2024-01-01' str\n")
    assert "-p ts: 20240101 is an int where the parameters cell has a str" in proc.stderr  # a warning, not an error
    got, _ = _assert_same(tmp_path, path, "-y", "items: [1, 2]\nx: 3", "-p", "flag", "False")
    assert _text(got.cells[-1]).splitlines()[1:4] == ["[1, 2] list", "3 int", "False bool"]


def test_text_for_a_number_is_refused_naming_the_option_that_passes_text(store, tmp_path):
    from conftest import one_line_error, run_dirs

    path = tagged_notebook(tmp_path, [(["parameters"], "epochs = 10"), (["step:a"], "print(epochs)")])
    error = one_line_error(cli("run", path, "-p", "epochs", "abc"))
    assert "-p epochs: expected an int like 10, got 'abc' (str); -r epochs abc passes it as text" in error
    assert not run_dirs(store)


def test_kernel_and_cwd_as_papermill_has_them(store, tmp_path):
    """(d) -k runs a notebook whose kernel the user does not have; --cwd is where the cells run."""
    from conftest import one_line_error

    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "conda-env-old-py", "display_name": "old",
                                                           "language": "python"}})
    nb.cells = [nbformat.v4.new_code_cell("import os\nprint(os.getcwd())")]
    nbformat.write(nb, str(tmp_path / "old.ipynb"))
    error = one_line_error(cli("run", tmp_path / "old.ipynb"))
    assert "'conda-env-old-py' (its metadata) is not installed" in error and "or run with -k NAME" in error
    assert "'nope' (-k) is not installed" in one_line_error(cli("run", tmp_path / "old.ipynb", "-k", "nope"))
    (tmp_path / "work").mkdir()
    got, _ = _assert_same(tmp_path, tmp_path / "old.ipynb", "-k", "python3", "--cwd", tmp_path / "work")
    assert _text(got.cells[0]) == f"{tmp_path / 'work'}\n"
    assert got.metadata.kernelspec.name == "conda-env-old-py"  # as papermill leaves it
    assert "--cwd" in one_line_error(cli("run", tmp_path / "old.ipynb", "-k", "python3", "--cwd", tmp_path / "nope"))


def test_prepare_only_and_path_templates_as_papermill(store, tmp_path):
    from conftest import one_line_error

    got, _ = _assert_same(tmp_path, _steps_notebook(tmp_path), "--prepare-only", "-p", "n", 9)
    assert got.cells[3].metadata.tags == ["injected-parameters"] and all(
        not c.metadata.get("papermill") and c.execution_count is None for c in got.cells if c.cell_type == "code")
    cli("run", _steps_notebook(tmp_path), tmp_path / "out_{n}.ipynb", "-p", "n", 2, "--quiet", check=0)
    assert nbformat.read(str(tmp_path / "out_2.ipynb"), as_version=4).metadata.papermill.parameters == {"n": 2}
    # as papermill: only given parameters fill the path
    assert "Missing parameter 'label'" in one_line_error(cli("run", _steps_notebook(tmp_path), "{label}.ipynb"))


def test_papermill_options_that_cannot_apply_are_one_line_errors(store, tmp_path):
    from conftest import one_line_error, run_dirs

    path = _steps_notebook(tmp_path)
    assert "tag the step timeout:SECONDS" in one_line_error(cli("run", path, "--execution-timeout", 5))
    assert "--engine other" in one_line_error(cli("run", path, "--engine", "other"))
    assert not run_dirs(store)


def test_execute_notebook_takes_papermills_keywords(store, tmp_path):
    """(d) the Python door: every papermill keyword, same notebook, same streams in the files."""
    import io
    import logging

    import papermill

    import jupyter_flow

    path = _steps_notebook(tmp_path)
    (tmp_path / "work").mkdir()
    results = {}
    for name, execute in (("papermill", papermill.execute_notebook), ("flow", jupyter_flow.execute_notebook)):
        out, err = io.StringIO(), io.StringIO()
        extra = {"store": store} if name == "flow" else {}
        results[name] = execute(str(path), str(tmp_path / f"{name}.ipynb"), parameters={"n": 2}, kernel_name="python3",
                                cwd=str(tmp_path / "work"), log_output=True, progress_bar=False, stdout_file=out,
                                stderr_file=err, report_mode=True, request_save_on_cell_execute=False,
                                autosave_cell_every=0, start_timeout=60, engine_name=None, language="python", **extra)
        results[name].metadata.papermill.pop("output_path")
        assert out.getvalue() == "loaded [0, 1]\n2\nrun 1 2\n"
    assert not _differences(_normal(results["papermill"]), _normal(results["flow"]))
    assert all(c.metadata.jupyter.source_hidden for c in results["flow"].cells if c.cell_type == "code")
    with pytest.raises(jupyter_flow.FlowError, match="timeout:SECONDS"):
        jupyter_flow.execute_notebook(str(path), str(tmp_path / "x.ipynb"), execution_timeout=3, store=store)
    logging.getLogger("papermill").setLevel(logging.WARNING)


def test_resume_takes_the_kernel_and_folder_the_run_was_given(store, tmp_path):
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "conda-env-old-py", "display_name": "old",
                                                           "language": "python"}})
    nb.cells = [nbformat.v4.new_code_cell("print(open('flag.txt').read())")]
    nbformat.write(nb, str(tmp_path / "old.ipynb"))
    (tmp_path / "work").mkdir()
    run_id = cli("run", tmp_path / "old.ipynb", "-k", "python3", "--cwd", tmp_path / "work", "--quiet",
                 check=1).stdout.strip()
    (tmp_path / "work" / "flag.txt").write_text("there")
    cli("resume", run_id, "-k", "python3", "--cwd", tmp_path / "work", "--quiet", check=0)


def test_only_given_values_are_injected_so_a_default_the_cell_changes_stays_changed(store, tmp_path):
    """papermill injects the given parameters only: `x = 1; x += 1` leaves 2 unless -p x is given."""
    path = tagged_notebook(tmp_path, [(["parameters"], "x = 1\nx += 1\nitems = [1]\nitems.append(2)\ny = 5"),
                                      (["step:show"], "print(x, items, y)")])
    got, _ = _assert_same(tmp_path, path)
    assert _text(got.cells[-1]) == "2 [1, 2] 5\n"
    got, _ = _assert_same(tmp_path, path, "-p", "x", 1, "-p", "y", 6)  # 1 as given, though it is the default
    assert _text(got.cells[-1]) == "1 [1, 2] 6\n"


def test_inject_paths_stream_files_log_output_and_help_notebook(store, tmp_path):
    path = tagged_notebook(tmp_path, [
        (["parameters"], "PAPERMILL_INPUT_PATH = None\nPAPERMILL_OUTPUT_PATH = None\nn = 1"),
        (["step:show"],
         "import sys\nprint(PAPERMILL_INPUT_PATH, PAPERMILL_OUTPUT_PATH, n)\nprint('oops', file=sys.stderr)"),
    ])
    got, proc = _assert_same(tmp_path, path, "--inject-paths", "--stdout-file", "out.txt", "--stderr-file", "err.txt",
                             "--log-output")
    assert _text(got.cells[-1]) == f"{path} out.ipynb 1\noops\n"
    for name in ("out.txt", "err.txt"):
        assert (tmp_path / "flow" / name).read_text() == (tmp_path / "papermill" / name).read_text()
    assert f"{path} out.ipynb 1" in proc.stderr  # --log-output: what the step printed
    help_text = cli("run", path, "--help-notebook", check=0).stdout
    assert "  n: int (default 1)" in help_text and "PAPERMILL_INPUT_PATH: NoneType" in help_text
