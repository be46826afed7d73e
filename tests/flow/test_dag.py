"""Tags, data-flow inference and the `jupyter flow dag` views (no kernels needed)."""
import json

import pytest
from conftest import EXAMPLES, SCENARIOS, cli

from jupyter_flow.errors import FlowError
from jupyter_flow.flow.dag import build_flow


def test_quickstart_has_two_parallel_feature_branches():
    flow = build_flow(EXAMPLES / "quickstart.ipynb")
    steps = flow.to_json()["steps"]
    prev = {s["name"]: s["prev"] for s in steps}
    assert prev["scale_features"] == ["load"] and prev["select_features"] == ["load"]
    assert set(prev["train"]) >= {"scale_features", "select_features"}


def test_json_view_lists_every_upstream_and_parameters():
    proc = cli("dag", SCENARIOS / "explicit_prev.ipynb", "--format", "json", check=0)
    dag = json.loads(proc.stdout)
    assert dag["flow"] == "explicit_prev"
    assert dag["parameters"]["n"]["value"] == 3
    steps = {s["name"]: s for s in dag["steps"]}
    assert set(steps) == {"load", "transform", "stats", "report"}
    assert set(steps["report"]["prev"]) == {"stats", "load"}
    for step in steps.values():
        assert set(step) >= {"name", "prev", "reads", "writes", "foreach", "options"}


def test_foreach_shows_in_json_and_mermaid():
    dag = json.loads(cli("dag", SCENARIOS / "foreach.ipynb", "--format", "json", check=0).stdout)
    measure = next(s for s in dag["steps"] if s["name"] == "measure")
    assert measure["foreach"] == {"var": "words", "item": "word"}
    mermaid = cli("dag", SCENARIOS / "foreach.ipynb", "--format", "mermaid", check=0).stdout
    assert mermaid.startswith("graph TD") and "make_words -->|words| measure" in mermaid


def test_text_view_names_edges_and_warnings():
    text = cli("dag", SCENARIOS / "undefined_name.ipynb", check=0).stdout
    assert "b  <- a (x)" in text
    assert "warning: step 'b' reads 'offset'" in text


def test_flow_name_comes_from_metadata_when_set(tmp_path):
    raw = json.loads((SCENARIOS / "linear.ipynb").read_text())
    raw["metadata"]["jupyter_flow"] = {"flow": "renamed"}
    path = tmp_path / "x.ipynb"
    path.write_text(json.dumps(raw))
    assert build_flow(path).name == "renamed"


def test_a_notebook_without_step_tags_is_one_step():
    flow = build_flow(SCENARIOS / "no_steps.ipynb")
    assert list(flow.steps) == ["main"]


@pytest.mark.parametrize("notebook, words", [
    ("cycle.ipynb", ["cycle", "a -> b -> a"]),
    ("unknown_prev.ipynb", ["nonexistent", "cell"]),
    ("bad_tag.ipynb", ["step:Bad Name", "step:NAME"]),
    ("typo_tag.ipynb", ["stpe:load", "step:load"]),
    ("two_parameters.ipynb", ["second parameters cell"]),
    ("broken.ipynb", ["not valid notebook JSON", "line"]),
])
def test_bad_notebooks_are_errors_naming_the_problem(notebook, words):
    with pytest.raises(FlowError) as info:
        build_flow(SCENARIOS / notebook)
    for word in words:
        assert word in str(info.value)


# -- files are edges ---------------------------------------------------------------------------------
def test_a_file_written_then_read_is_an_edge_in_every_view():
    flow = build_flow(SCENARIOS / "file_edge.ipynb")
    assert flow.steps["read"].prev == ["write"] and flow.steps["read"].files_read == ["out.txt"]
    assert "  read  <- write (file out.txt)" in flow.to_text().splitlines()
    assert "write -->|file out.txt| read" in flow.to_mermaid()
    read = next(s for s in flow.to_json()["steps"] if s["name"] == "read")
    assert read["file_edges"] == {"write": ["out.txt"]} and read["files_read"] == ["out.txt"]


def test_a_path_the_code_does_not_spell_out_gets_its_edge_from_the_last_run():
    assert build_flow(SCENARIOS / "file_history.ipynb").steps["read"].prev == []
    flow = build_flow(SCENARIOS / "file_history.ipynb",
                      history={"write": {"read": [], "written": ["out.txt"]}, "read": {"read": ["out.txt"]}})
    assert flow.steps["read"].file_edges == {"write": ["out.txt"]}
    assert "  read  <- write (file out.txt)" in flow.to_text().splitlines()


@pytest.mark.parametrize("cells, edges", [
    # a writer after a reader: top to bottom the reader saw the old content
    ([("step:a", "t = open('data.csv').read()"), ("step:b", "open('data.csv', 'w').write('new')")],
     {"b": {"a": ["data.csv"]}}),
    # two writers: the later one's content stays
    ([("step:a", "open('f.txt', 'w').write('1')"), ("step:b", "open('f.txt', 'w').write('2')")],
     {"b": {"a": ["f.txt"]}}),
    # the reader takes the last writer before it; a later writer waits for the reader
    ([("step:a", "open('f.txt', 'w').write('1')"), ("step:b", "open('f.txt', 'w').write('2')"),
      ("step:c", "t = open('f.txt').read()"), ("step:d", "open('f.txt', 'w').write('3')")],
     {"b": {"a": ["f.txt"]}, "c": {"b": ["f.txt"]}, "d": {"b": ["f.txt"], "c": ["f.txt"]}}),
    # paths as the runtime records them: relative to the notebook's folder
    ([("parameters", "folder = 'data'"), ("step:a", "import os\nopen(os.path.join(folder, 'x.txt'), 'w')"),
      ("step:b", "t = open('./data/x.txt').read()")], {"b": {"a": ["data/x.txt"]}}),
    # a file nobody writes orders nothing
    ([("step:a", "t = open('input.csv').read()"), ("step:b", "u = open('input.csv').read()")], {}),
])
def test_file_edges_order_steps_as_top_to_bottom(tmp_path, cells, edges):
    flow = build_flow(write(tmp_path, cells))
    assert {s.name: s.file_edges for s in flow.steps.values() if s.file_edges} == edges
    assert all(set(files) <= set(flow.steps) for files in edges.values())


def test_with_prev_tags_a_file_edge_is_added_only_where_the_prev_ancestors_do_not_order_the_steps(tmp_path):
    covered = build_flow(write(tmp_path, [("step:a", "open('f.txt', 'w')"), ("step:b\nprev:a", "x = 1"),
                                          ("step:c\nprev:b", "t = open('f.txt').read()")]))
    assert covered.steps["c"].prev == ["b"] and covered.steps["c"].file_edges == {}
    uncovered = build_flow(write(tmp_path, [("step:a", "open('f.txt', 'w')"), ("step:b", "x = 1"),
                                            ("step:c\nprev:b", "t = open('f.txt').read()")]))
    assert uncovered.steps["c"].prev == ["b", "a"] and uncovered.steps["c"].file_edges == {"a": ["f.txt"]}


def test_a_file_edge_that_would_close_a_cycle_is_left_out_with_a_warning(tmp_path):
    flow = build_flow(write(tmp_path, [("step:a\nprev:b", "open('f.txt', 'w')"),
                                       ("step:b", "t = open('f.txt').read()")]))
    assert flow.steps["a"].prev == ["b"] and flow.steps["b"].prev == []
    assert any("step 'b' uses f.txt after step 'a'" in w and "cycle" in w for w in flow.warnings), flow.warnings


@pytest.mark.slow
def test_the_reader_sees_the_fresh_file_not_a_stale_one(run_flow, notebook_copy, top_to_bottom):
    path = notebook_copy("file_edge.ipynb")
    (path.parent / "out.txt").write_text("stale")
    run = run_flow(path)
    assert run["read"].artifacts["got"].value == "fresh" == top_to_bottom(path, ["got"])["got"]


@pytest.mark.slow
def test_the_next_run_orders_steps_by_the_files_the_last_run_recorded(run_flow, notebook_copy, store):
    from jupyter_flow.runtime import prepare

    path = notebook_copy("file_history.ipynb")
    (path.parent / "out.txt").write_text("stale")
    run_flow(path, expect=None)  # the steps race (nothing in the code says which file they share): the run says so
    flow = prepare(path, store=store).flow
    assert flow.steps["read"].file_edges == {"write": ["out.txt"]}
    (path.parent / "out.txt").write_text("stale")
    assert run_flow(path, no_cache=True)["read"].artifacts["got"].value == "fresh"


def write(tmp_path, cells) -> str:
    """A notebook from [(tags, source)], tags separated by newlines."""
    raw = {"nbformat": 4, "nbformat_minor": 5, "metadata": {"kernelspec": {"name": "python3"}}, "cells": [
        {"cell_type": "code", "metadata": {"tags": tags.split("\n")}, "source": source, "outputs": [],
         "execution_count": None} for tags, source in cells]}
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(raw))
    return path
