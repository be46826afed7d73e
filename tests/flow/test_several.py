"""One flow across notebooks (issue 24): notebooks a notebook's metadata names (or `with_`) join one
DAG, as if concatenated; `prev:OTHER.ipynb:STEP`; clashing step names qualified; each step records
its notebook; runs and resumes; bad input is one line, exit 2, nothing written."""
import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import EXAMPLES, cli

import jupyter_flow
from jupyter_flow.errors import FlowError
from jupyter_flow.flow.dag import build_flow

KERNEL = {"name": "python3", "display_name": "Python 3", "language": "python"}


def write(path: Path, cells: list[tuple[list[str], str]], notebooks=None, kernel=KERNEL) -> Path:
    meta = {"kernelspec": kernel}
    if notebooks is not None:
        meta["jupyter_flow"] = {"notebooks": notebooks}
    raw = {"nbformat": 4, "nbformat_minor": 5, "metadata": meta,
           "cells": [{"cell_type": "code", "id": f"c{i}", "metadata": {"tags": tags}, "source": source,
                      "outputs": [], "execution_count": None} for i, (tags, source) in enumerate(cells)]}
    path.write_text(json.dumps(raw))
    return path


@pytest.fixture
def pair(tmp_path):
    """The README's example, notebooks/two_notebooks: prepare.ipynb (names report.ipynb in its
    metadata: n = 4, load: x = list(range(n)), total: t = sum(x)) and report.ipynb (scale = 10,
    load: y = [v * scale for v in x], summary: t + sum(y) + math.floor(2.5) with prev:prepare.ipynb:total)."""
    for name in ("prepare.ipynb", "report.ipynb"):
        shutil.copy(EXAMPLES / "two_notebooks" / name, tmp_path / name)
    return tmp_path / "prepare.ipynb"


def test_a_later_notebooks_step_depends_on_the_earlier_one_that_writes_what_it_reads(pair):
    flow = build_flow(pair)
    assert list(flow.steps) == ["load", "total", "report_load", "summary"]
    assert flow.steps["report_load"].inputs == {"x": "load"}
    assert flow.steps["summary"].prev == ["total", "report_load"]  # prev:prepare.ipynb:total, prev:load (its own)
    assert flow.steps["summary"].inputs == {"t": "total", "y": "report_load"}
    assert {n: s.options["notebook"] for n, s in flow.steps.items()} == {
        "load": "prepare.ipynb", "total": "prepare.ipynb", "report_load": "report.ipynb", "summary": "report.ipynb"}
    assert set(flow.parameters) == {"n", "scale"} and flow.warnings == []
    assert flow.to_json()["notebooks"] == ["prepare.ipynb", "report.ipynb"]


def test_dag_shows_the_notebooks_and_the_edges_between_them(pair):
    text = cli("dag", pair, check=0).stdout
    assert "notebooks: prepare.ipynb, report.ipynb" in text
    assert "report_load  <- load (x)" in text and "summary  <- total (t), report_load (y)" in text
    mermaid = cli("dag", pair, "--format", "mermaid", check=0).stdout
    assert "load -->|x| report_load" in mermaid


def test_with_joins_notebooks_the_metadata_does_not_name(tmp_path):
    first = write(tmp_path / "a.ipynb", [(["step:make"], "x = 2")])
    write(tmp_path / "b.ipynb", [([], "y = x * 3")])  # no step tags: one step named after the notebook
    flow = build_flow(first, with_=[tmp_path / "b.ipynb"])
    assert list(flow.steps) == ["make", "b"] and flow.steps["b"].inputs == {"x": "make"}
    assert build_flow(first).notebook.notebooks == []  # alone without it
    with pytest.raises(FlowError, match=r"^--with nope\.ipynb: no such notebook \(.*nope\.ipynb\); check the path$"):
        build_flow(first, with_=[tmp_path / "nope.ipynb"])


def test_a_notebook_may_list_itself_in_its_place(tmp_path):
    write(tmp_path / "a.ipynb", [(["step:make"], "x = 2")])
    second = write(tmp_path / "b.ipynb", [(["step:use"], "y = x * 3")], notebooks=["a.ipynb", "b.ipynb"])
    flow = build_flow(second)  # the flow seen from b.ipynb: a.ipynb's steps first
    assert list(flow.steps) == ["make", "use"] and flow.steps["use"].inputs == {"x": "make"}
    assert flow.name == "b"


def test_messages_name_the_notebook_and_its_own_cell_number(tmp_path):
    first = write(tmp_path / "a.ipynb", [(["step:make"], "x = 2")], notebooks=["b.ipynb"])
    write(tmp_path / "b.ipynb", [(["skip"], "pass"), (["step:use"], "y = (")])
    with pytest.raises(FlowError, match=r"^b\.ipynb cell 2 \('y = \('\) in step 'use': SyntaxError"):
        build_flow(first)


@pytest.mark.parametrize("second, notebooks, message", [
    (None, ["missing.ipynb"], r"^metadata\.jupyter_flow\.notebooks of a\.ipynb names missing\.ipynb: no such "
                              r"notebook \(.*missing\.ipynb\); check the path$"),
    ([(["step:use", "prev:other.ipynb:make"], "y = 1")], ["b.ipynb"],
     r"^b\.ipynb cell 1 \('y = 1'\): prev:other\.ipynb:make names notebook other\.ipynb, which is not in this flow "
     r"\(its notebooks: a\.ipynb, b\.ipynb\); add it to metadata\.jupyter_flow\.notebooks of a\.ipynb, or run with "
     r"--with other\.ipynb$"),
    ([(["step:use", "prev:a.ipynb:nope"], "y = 1")], ["b.ipynb"],
     r"^b\.ipynb cell 1 \('y = 1'\): prev:a\.ipynb:nope names no step of a\.ipynb; its steps are: make$"),
    ([(["parameters"], "n = 2"), (["step:use"], "y = n")], ["b.ipynb"],
     r"^parameter 'n' is 1 in a\.ipynb cell 1 \('n = 1'\) but 2 in b\.ipynb cell 1 \('n = 2'\); a flow has one "
     r"default per parameter"),
    (None, "b.ipynb", r"metadata\.jupyter_flow\.notebooks must be a list of notebook paths"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_is_written(tmp_path, second, notebooks, message):
    first = write(tmp_path / "a.ipynb", [(["parameters"], "n = 1"), (["step:make"], "x = n")], notebooks=notebooks)
    if second is not None:
        write(tmp_path / "b.ipynb", second)
    store = tmp_path / "store"
    proc = cli("run", first, "--store", store, check=2)
    line = proc.stderr.strip()
    assert line.startswith("error: ") and "\n" not in line and "Traceback" not in line, proc.stderr
    assert re.search(message, line[len("error: "):]), line
    assert not store.exists()
    with pytest.raises(FlowError):
        build_flow(first)


def test_a_prev_naming_another_notebook_in_a_notebook_run_alone_says_how_to_join_it(tmp_path):
    alone = write(tmp_path / "b.ipynb", [(["step:use", "prev:a.ipynb:make"], "y = 1")])
    proc = cli("dag", alone, check=2)
    assert "prev:a.ipynb:make names notebook a.ipynb, which is not in this flow (its notebooks: b.ipynb)" in proc.stderr
    same = write(tmp_path / "c.ipynb", [(["step:make"], "x = 1"), (["step:use", "prev:c.ipynb:make"], "y = 1")])
    assert build_flow(same).steps["use"].prev == ["make"]  # its own name: a plain prev:


def test_a_notebook_in_another_kernel_runs_its_steps_in_that_kernel(tmp_path):
    first = write(tmp_path / "a.ipynb", [(["step:make"], "x = 2")], notebooks=["b.ipynb"])
    write(tmp_path / "b.ipynb", [(["step:use"], "y <- x * 3")],
          kernel={"name": "ir", "display_name": "R", "language": "R"})
    flow = build_flow(first)
    assert flow.steps["use"].options["kernel"] == "ir" and flow.steps["use"].inputs == {"x": "make"}
    write(tmp_path / "b.ipynb", [(["imports"], "library(stats)"), (["step:use"], "y <- x * 3")],
          kernel={"name": "ir", "display_name": "R", "language": "R"})
    with pytest.raises(FlowError, match=r"^b\.ipynb cell 1 \('library\(stats\)'\): a shared or parameters cell of a "
                                        r"R notebook cannot join a flow whose first notebook \(a\.ipynb\) is python"):
        build_flow(first)


@pytest.mark.slow
def test_a_run_across_two_notebooks_gives_their_values_and_records_the_notebooks(pair, run_flow, store):
    run = run_flow(pair, parameters={"scale": 100})
    assert run["summary"].data.summary == 6 + (0 + 100 + 200 + 300) + 2
    record = json.loads(next(Path(store).glob("flows/prepare/runs/*/run.json")).read_text())
    assert {s["name"]: s["options"]["notebook"] for s in record["steps"]} == {
        "load": "prepare.ipynb", "total": "prepare.ipynb", "report_load": "report.ipynb", "summary": "report.ipynb"}


@pytest.mark.slow
def test_a_failed_step_of_the_second_notebook_is_fixed_and_resumed(pair, run_flow, store):
    report = pair.parent / "report.ipynb"
    raw = json.loads(report.read_text())
    cell = next(c for c in raw["cells"] if "step:summary" in c["metadata"].get("tags", []))
    cell["source"] = "summary = t + sum(y) + math.floor(2.5)\nraise ValueError('not yet')"
    report.write_text(json.dumps(raw))
    failed = run_flow(pair, expect="failed")
    assert failed["summary"].task.error["type"] == "ValueError"
    assert failed.error["message"].endswith("in report.ipynb cell 4 ('summary = t + sum(y) + math.floor(2.5)')")
    cell["source"] = "summary = t + sum(y) + math.floor(2.5)"  # the fix, in report.ipynb
    report.write_text(json.dumps(raw))
    resumed = jupyter_flow.resume(failed.id, store=store)
    assert resumed.status == "succeeded" and resumed["summary"].data.summary == 6 + 60 + 2
    for step in ("load", "total", "report_load"):  # the finished steps of both notebooks are not run again
        origin = resumed[step].task.origin
        assert resumed[step].status == "reused" and failed.id in origin["key"], origin


@pytest.mark.slow
def test_run_with_joins_a_notebook_and_resume_joins_it_again(tmp_path, store):
    """`jupyter flow run a.ipynb --with b.ipynb`: b's step reads what a's writes; b fails, is fixed, and
    `jupyter flow resume` joins b again (the run records each step's notebook) and reuses a's step."""
    first = write(tmp_path / "a.ipynb", [(["step:make"], "x = 2")])
    second = tmp_path / "sub" / "b.ipynb"
    second.parent.mkdir()
    write(second, [(["step:use"], "y = x * 3\nraise ValueError('not yet')")])
    dag = cli("dag", first, "--with", second, check=0).stdout
    assert "use  <- make (x)" in dag
    failed = cli("run", first, "--with", second, "--quiet", check=1)
    assert "ValueError" in failed.stderr
    run_id = json.loads(cli("runs", "--format", "json", check=0).stdout)[0]["id"]
    write(second, [(["step:use"], "y = x * 3")])  # the fix
    cli("resume", run_id, "--quiet", check=0)
    resumed = jupyter_flow.Run(json.loads(cli("runs", "--format", "json", check=0).stdout)[0]["id"], store)
    assert resumed["use"].data.y == 6 and resumed["make"].status == "reused"
    assert cli("run", first, "--with", tmp_path / "nope.ipynb", check=2).stderr.count("\n") == 1
