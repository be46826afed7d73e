"""The tag grammar, form by form: Kubeflow Kale's tags as Kale reads them, our own step options,
and a warning naming the cell for everything accepted but not used (no kernels needed)."""
import json
from pathlib import Path

import pytest
from conftest import SCENARIOS
from hypothesis import given, settings
from hypothesis import strategies as st

from jupyter_flow.errors import FlowError
from jupyter_flow.flow.dag import build_flow
from jupyter_flow.flow.notebook import parse

GiB = 2**30


def notebook(*cells, kernel=None, metadata=None):
    """A notebook from (source, tags) pairs, parsed."""
    raw = {"nbformat": 4, "nbformat_minor": 5, "metadata": dict(metadata or {}), "cells": [
        {"cell_type": "code", "metadata": {"tags": list(tags)}, "source": source, "outputs": [],
         "execution_count": None} for source, tags in cells]}
    if kernel:
        raw["metadata"]["kernelspec"] = kernel
    return parse(raw, Path("t.ipynb"))


def sources(block) -> list[str]:
    return [c.source for c in block.cells]


# -- block: / step: ----------------------------------------------------------------------------------
@pytest.mark.parametrize("tag", ["block:", "step:"])
def test_a_step_tag_without_a_name_continues_the_block_above(tag):
    nb = notebook(("a = 1", ["block:load"]), ("b = a", [tag]), ("c = b", ["step:use"]), ("d = c", [tag]))
    assert sources(nb.steps["load"]) == ["a = 1", "b = a"]
    assert sources(nb.steps["use"]) == ["c = b", "d = c"]
    assert not nb.warnings


def test_block_name_is_step_name():
    nb = notebook(("a = 1", ["block:load"]), ("b = a", ["step:load"]))
    assert list(nb.steps) == ["load"] and sources(nb.steps["load"]) == ["a = 1", "b = a"]


def test_a_nameless_block_after_functions_joins_the_functions_as_in_kale():
    nb = notebook(("import os", ["imports"]), ("def f(): pass", ["functions"]), ("def g(): pass", ["block:"]),
                  ("x = f()", ["step:a"]))
    assert [c.source for c in nb.shared] == ["import os", "def f(): pass", "def g(): pass"]


def test_a_special_tag_wins_over_a_step_name_with_a_warning():
    nb = notebook(("x = 1", ["step:a"]), ("scratch = 2", ["step:a", "skip"]), ("import os", ["step:b", "imports"]))
    assert sources(nb.steps["a"]) == ["x = 1"]
    assert [c.source for c in nb.skipped] == ["scratch = 2"] and [c.source for c in nb.shared] == ["import os"]
    assert any("cell 2 ('scratch = 2'): tag 'step:a' is ignored" in w and "'skip'" in w for w in nb.warnings)


def test_two_step_names_on_one_cell_are_an_error():
    with pytest.raises(FlowError, match=r"cell 1 \('x = 1'\) has tags 'step:a' and 'block:b'"):
        notebook(("x = 1", ["step:a", "block:b"]))


# -- limit: ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tag, resource, amount", [
    ("limit:nvidia.com/gpu:1", "gpu", 1),
    ("limit:amd.com/gpu:2", "gpu", 2),
    ("limit:gpu:1", "gpu", 1),
    ("limit:cpu:500m", "cpu", 0.5),
    ("limit:cpu:2", "cpu", 2),
    ("limit:cpu:1.5", "cpu", 1.5),
    ("limit:memory:2Gi", "memory", 2 * GiB),
    ("limit:memory:512M", "memory", 512_000_000),
    ("limit:memory:1e9", "memory", 1_000_000_000),
])
def test_kale_limit_forms_keep_their_kubernetes_meaning(tag, resource, amount):
    nb = notebook(("x = 1", ["step:a", tag]))
    assert nb.steps["a"].options["limit"] == {resource: amount}
    assert not nb.warnings


@pytest.mark.parametrize("tag, words", [
    ("limit:cpu:lots", "not a Kubernetes cpu quantity"),
    ("limit:cpu:2Gi", "not a Kubernetes cpu quantity"),
    ("limit:memory:2Gx", "not a Kubernetes memory quantity"),
    ("limit:nvidia.com/gpu:0.5", "not a whole number of GPUs"),
    ("limit:cpu", "malformed tag"),
])
def test_a_bad_limit_is_an_error_naming_the_cell(tag, words):
    with pytest.raises(FlowError) as info:
        notebook(("x = 1", ["step:a", tag]))
    assert str(info.value).startswith("cell 1 ('x = 1')") and words in str(info.value)


@pytest.mark.parametrize("tag", ["limit:ephemeral-storage:1Gi", "label:team:ml", "annotation:example.com/owner:me"])
def test_kubernetes_pod_settings_we_do_not_use_are_warned_about(tag):
    nb = notebook(("x = 1", ["step:a", tag]))
    assert "limit" not in nb.steps["a"].options
    assert nb.warnings == [f"cell 1 ('x = 1'): tag {tag!r} is a Kubernetes pod setting that jupyter_flow does "
                           "not use; it is ignored"]


def test_kale_steps_defaults_give_every_step_a_limit_and_warn_about_labels():
    nb = notebook(("x = 1", ["step:a"]), ("y = x", ["step:b", "limit:cpu:4"]),
                  metadata={"kubeflow_notebook": {"steps_defaults": ["limit:cpu:1", "limit:memory:1Gi",
                                                                     "label:access-rok:true"]}})
    assert nb.steps["a"].options["limit"] == {"cpu": 1, "memory": GiB}
    assert nb.steps["b"].options["limit"] == {"cpu": 4, "memory": GiB}
    assert len(nb.warnings) == 1 and "'label:access-rok:true'" in nb.warnings[0]


# -- untagged cells, prev: and what Kale ignores -----------------------------------------------------
def test_untagged_cells_before_the_first_step_do_not_run_and_are_named():
    nb = notebook(("!pip install -r requirements.txt", []), ("x = 1", ["step:a"]))
    assert [c.source for c in nb.skipped] == ["!pip install -r requirements.txt"]
    assert nb.warnings == ["cell 1 ('!pip install -r requirements.txt') comes before the first step and has no "
                           "tag, so it does not run (Kale ignores it too); tag it imports, step:NAME or skip"]


def test_untagged_cells_after_a_leading_parameters_cell_are_shared_by_every_step():
    nb = notebook(("n = 3", ["pipeline-parameters"]), ("items = list(range(n))", []), ("x = items", ["step:a"]))
    assert [c.source for c in nb.shared] == ["items = list(range(n))"] and not nb.warnings


@pytest.mark.parametrize("tag", ["imports", "functions", "skip", "pipeline-parameters", "pipeline-metrics"])
def test_prev_on_a_cell_that_is_not_a_step_is_ignored_with_a_warning(tag):
    source = "print(x)" if tag == "pipeline-metrics" else "y = 2"
    nb = notebook(("x = 1", ["step:a"]), (source, [tag, "prev:nowhere"]), ("z = x", ["step:b"]))
    assert nb.steps["b"].prev == []
    assert nb.warnings == [f"cell 2 ({source!r}): tag 'prev:nowhere' is ignored on a {tag} cell; move it to the "
                           "cell tagged step:NAME"]


def test_prev_on_a_cell_continuing_a_step_is_ignored_as_in_kale():
    nb = notebook(("x = 1", ["step:a"]), ("y = 1", ["step:b"]), ("z = 1", ["block:", "prev:pre"]))
    assert nb.steps["b"].prev == [] and sources(nb.steps["b"]) == ["y = 1", "z = 1"]
    assert "tag 'prev:pre' is ignored on a cell that continues a step" in nb.warnings[0]


def test_our_step_options_still_apply_to_the_whole_step():
    nb = notebook(("x = [1]", ["step:a"]), ("y = x", ["step:b", "prev:a", "retry:2", "timeout:5", "catch"]),
                  ("z = y", ["kernel:python3", "cache:disabled"]))
    assert nb.steps["b"].prev == ["a"]
    assert nb.steps["b"].options == {"retry": 2, "timeout": 5.0, "catch": True, "kernel": "python3", "cache": False}


@pytest.mark.parametrize("tag, hint", [("stpe:load", "step:load"), ("imprts", "imports"), ("lable:x:y", "label:x:y")])
def test_near_misses_of_our_tags_are_errors_with_a_suggestion(tag, hint):
    with pytest.raises(FlowError, match=f"unknown tag '{tag}'; did you mean"):
        notebook(("x = 1", [tag]))


def test_foreign_tags_are_left_alone():
    nb = notebook(("x = 1", ["step:a", "hide-input", "remove_cell"]))
    assert sources(nb.steps["a"]) == ["x = 1"] and not nb.warnings


# -- pipeline-metrics ---------------------------------------------------------------------------------
def test_a_metric_printing_a_parameter_is_recorded_not_dropped():
    flow = build_flow(SCENARIOS / "kale_metrics_parameter.ipynb")
    assert {m for s in flow.steps.values() for m in s.metrics} == {"total", "alpha"}
    assert not flow.warnings


# -- other languages ----------------------------------------------------------------------------------
BASH = {"name": "bash", "display_name": "Bash", "language": "bash"}


def test_a_notebook_in_another_language_without_steps_is_one_step_of_all_its_cells():
    nb = notebook(("x=1", ["parameters"]), ("echo $x", []), ("echo done", ["skip"]), kernel=BASH)
    assert not nb.python and list(nb.steps) == ["main"]
    assert sources(nb.steps["main"]) == ["x=1", "echo $x", "echo done"]  # as papermill runs it


def test_a_notebook_in_another_language_with_steps_is_refused_in_one_line():
    with pytest.raises(FlowError) as info:
        notebook(("x=1", ["step:a"]), kernel=BASH)
    assert str(info.value) == ("cell 1 ('x=1'): tag 'step:a' needs a Python kernel, but this notebook's kernel "
                               "'bash' runs bash; remove its step tags to run it as one step, as papermill does")


# -- the scenario notebooks ---------------------------------------------------------------------------
def test_kale_scenarios_build():
    flow = build_flow(SCENARIOS / "kale_block_continues.ipynb")
    assert [c.source for c in flow.shared][-1].startswith("def triple")
    assert flow.steps["combine"].prev == ["load"] and flow.steps["combine"].inputs == {"values": "load"}
    assert "root = " in flow.steps["combine"].source()
    limits = {n: s.options.get("limit") for n, s in build_flow(SCENARIOS / "kale_limits.ipynb").steps.items()}
    assert limits == {"gpu_nvidia": {"gpu": 1, "cpu": 2}, "gpu_amd": {"gpu": 1, "cpu": 2},
                      "small": {"cpu": 0.5, "memory": 2 * GiB}, "other": {"cpu": 2}}
    flow = build_flow(SCENARIOS / "kale_untagged_first.ipynb")
    assert len(flow.warnings) == 1 and flow.warnings[0].startswith("cell 2 (\"print('setting up')")
    flow = build_flow(SCENARIOS / "kale_prev_on_shared.ipynb")
    assert flow.steps["transform"].prev == ["load"] and len(flow.warnings) == 3


# -- nothing is dropped silently ----------------------------------------------------------------------
KALE_TAGS = st.sampled_from(["", "imports", "functions", "skip", "pipeline-parameters", "pipeline-metrics",
                             "block:", "step:", "block:a", "step:b", "block:c", "prev:a", "limit:cpu:500m",
                             "limit:nvidia.com/gpu:1", "label:x:y", "annotation:k:v", "limit:hugepages-2Mi:1Gi"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(KALE_TAGS, max_size=3), min_size=1, max_size=10))
def test_every_cell_runs_once_or_is_skipped_with_a_reason(cell_tags):
    cells = [(f"print({i})" if "pipeline-metrics" in tags else f"v{i} = {i}", [t for t in tags if t])
             for i, tags in enumerate(cell_tags)]
    try:
        nb = notebook(*cells)
    except FlowError as e:  # refused before anything runs, naming a cell
        assert str(e).startswith("cell ")
        return
    placed = [c.source for block in nb.steps.values() for c in block.cells] + [c.source for c in nb.shared]
    placed += [c.source for c in nb.metrics] + [c.source for c in nb.skipped]
    placed += [nb.parameters.source] if nb.parameters else []
    for source, tags in cells:
        assert "\n".join(placed).count(source) == 1, (source, tags)
    for cell in nb.skipped:
        assert "skip" in cell.tags or any(w.startswith(cell.label()) for w in nb.warnings)
    for cell in [c for b in nb.steps.values() for c in b.cells] + nb.shared + nb.skipped:
        for tag in cell.tags:
            if tag.startswith(("label:", "annotation:", "limit:hugepages")):
                assert any(tag in w for w in nb.warnings)


def test_every_kale_notebook_of_the_corpus_parses():
    for path in sorted((SCENARIOS.parent / "corpus").glob("**/*.ipynb")):
        raw = json.loads(path.read_text())
        if any("block:" in t or "step:" in t for c in raw["cells"] for t in c.get("metadata", {}).get("tags", [])):
            build_flow(path)


@pytest.mark.parametrize("tag, value", [("cache:disabled", False), ("cache:trust", "trust")])
def test_cache_tags_are_step_options(tag, value):
    assert notebook(("x = 1", ["step:a", tag])).steps["a"].options == {"cache": value}


@pytest.mark.parametrize("tag", ["cache:trsut", "cache:enabled"])
def test_a_misspelled_cache_tag_names_both_forms(tag):
    with pytest.raises(FlowError, match=rf"cell 1 \('x = 1'\): malformed tag '{tag}'; write cache:disabled or "
                                        "cache:trust"):
        notebook(("x = 1", ["step:a", tag]))


def test_cells_above_the_parameters_cell_run_before_it():
    plain = notebook(("import os", []), ("base = os.path.join('a', 'b')", ["parameters"]), ("path = base", []))
    assert [c.source for c in plain.shared] == ["import os"] and sources(plain.steps["main"]) == ["path = base"]
    tagged = notebook(("!pip install x", []), ("import os", []), ("base = os.path.join('a', 'b')", ["parameters"]),
                      ("path = base", ["step:a"]))
    assert [c.source for c in tagged.shared] == ["import os"]  # the parameters cell needs it
    assert [c.source for c in tagged.skipped] == ["!pip install x"]  # as in Kale: it does not run
    assert len(tagged.warnings) == 1 and "cell 1 ('!pip install x')" in tagged.warnings[0]
