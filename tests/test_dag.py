"""Tags, data-flow inference and the `jupyter flow dag` views (no kernels needed)."""
import json

import pytest
from conftest import EXAMPLES, SCENARIOS, cli

from jupyter_flow.dag import build_flow
from jupyter_flow.errors import FlowError


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
