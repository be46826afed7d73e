"""Parameter options read as papermill's CLI reads them, proven against papermill's CLI itself
(in this process, with --prepare-only: nothing runs) on generated command lines."""
from __future__ import annotations

import nbformat
import pytest
from click.testing import CliRunner
from conftest import tagged_notebook
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from papermill.cli import papermill as papermill_cli

from jupyter_flow.errors import FlowError
from jupyter_flow.flow.dag import build_flow
from jupyter_flow.flow.params import from_options, resolve

NAMES = ["a", "b", "c"]
TEXTS = st.one_of(
    st.sampled_from(["True", "False", "None", "true", "none", "1", "-0", "007", "1_000", " 7 ", "1.5", "1e3", "nan",
                     "-inf", "[1, 2]", "{x: 1}", "2024-01-01", "'quoted'", "", "0x10", "1.", ".5"]),
    st.integers(-10**6, 10**6).map(str), st.floats(allow_nan=False).map(repr),
    st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=8))
OPTION = st.one_of(
    st.tuples(st.just("-p"), st.sampled_from(NAMES), TEXTS),
    st.tuples(st.just("-r"), st.sampled_from(NAMES), TEXTS),
    st.tuples(st.just("-y"), st.sampled_from(NAMES),
              st.sampled_from(["1", "x", "[1, 2]", "2024-01-01", "null", "1.5"])),
)


@pytest.fixture(scope="module")
def notebook(tmp_path_factory):
    folder = tmp_path_factory.mktemp("params")
    return tagged_notebook(folder, [(["parameters"], "a = None\nb = None\nc = None"), (["step:s"], "print(a, b, c)")])


def _papermill(notebook, argv: list[str]) -> dict:
    out = notebook.parent / "prepared.ipynb"
    result = CliRunner().invoke(papermill_cli, [str(notebook), str(out), "--prepare-only", *argv])
    assert result.exit_code == 0, result.output
    return nbformat.read(str(out), as_version=4).metadata.papermill.parameters


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(OPTION, max_size=6))
def test_values_are_papermills_whatever_the_options(notebook, options):
    argv, pairs, raw, yaml_texts = [], [], [], []
    for flag, name, text in options:
        if flag == "-y":
            argv += ["-y", f"{name}: {text}"]
            yaml_texts.append(f"{name}: {text}")
        else:
            argv += [flag, name, text]
            (pairs if flag == "-p" else raw).append((name, text))
    expected = _papermill(notebook, argv)
    given_ = from_options(pairs, raw, (), yaml_texts)
    ours = {name: value for _, name, value in given_}
    assert repr(sorted(ours.items())) == repr(sorted(expected.items()))  # repr: nan is nan
    values = resolve(build_flow(notebook), cli=given_)
    assert repr(sorted((n, values[n]) for n in ours)) == repr(sorted(ours.items()))  # None defaults: passed as given


def test_text_where_a_number_is_expected_is_refused_unless_raw(tmp_path):
    flow = build_flow(tagged_notebook(tmp_path, [(["parameters"], "n = 1\nname = 'x'\nitems = [1]"),
                                                  (["step:s"], "print(n, name, items)")]))
    with pytest.raises(FlowError, match="-r n abc passes it as text"):
        resolve(flow, cli=[("n", "abc")])
    assert resolve(flow, cli=from_options(raw=[("n", "abc")]))["n"] == "abc"
    values = resolve(flow, cli=[("name", "20240101"), ("items", "[1, 2]")])
    assert values["name"] == 20240101 and values["items"] == "[1, 2]"  # papermill's values
    assert [w.split(":")[0] for w in flow.warnings] == ["-r n", "-p name", "-p items"]
