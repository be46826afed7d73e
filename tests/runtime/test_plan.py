"""`jupyter flow plan`: before anything runs, each step's reuse or run and why; and the run then does
what the plan said (a property over generated edits of code, parameters and files)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest
from conftest import cli, one_line_error, tagged_notebook
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jupyter_flow
from jupyter_flow.runtime.doors import flow_with_history
from jupyter_flow.runtime.plan import plan

pytestmark = pytest.mark.slow

CELLS = [
    (["parameters"], "lr = 0.1"),
    (["step:load"], "text = open('data.txt').read()"),
    (["step:count"], "n = len(text)"),
    (["step:scale"], "z = lr * 1"),
    (["step:write"], "open('out.txt', 'w').write(str(n + z))"),
    (["step:readout"], "back = open('out.txt').read()"),
    (["step:combine"], "total = n + z"),
]
STEPS = ["load", "count", "scale", "write", "readout", "combine"]


@pytest.fixture
def folder(tmp_path) -> Path:
    (tmp_path / "data.txt").write_text("abc")
    tagged_notebook(tmp_path, CELLS)
    return tmp_path


def set_cell(path: Path, index: int, source: str) -> None:
    nb = nbformat.read(path, as_version=4)
    nb.cells[index].source = source
    nbformat.write(nb, path)


def test_plan_lines_before_and_after_a_run(folder, store):
    nb = folder / "flow.ipynb"
    first = cli("plan", nb, check=0).stdout.splitlines()
    assert first[0].split() == ["▶", "load", "no", "earlier", "run"]
    assert first[1].split(maxsplit=2) == ["▶", "count", "input `text` from step `load`, which runs"]
    assert len(first) == len(STEPS)
    assert cli("run", nb, "--quiet", check=0).returncode == 0
    assert all(line.startswith("✓ ") and "nothing it depends on changed" in line
               for line in cli("plan", nb, check=0).stdout.splitlines())

    (folder / "data.txt").write_text("abcd")
    set_cell(nb, 3, "z = lr * 2  # twice")
    lines = {line.split()[1]: line.split(maxsplit=2)[2] for line in cli("plan", nb, "-p", "lr", "0.5",
                                                                      check=0).stdout.splitlines()}
    assert lines["load"] == "file data.txt changed (3 -> 4 bytes)"
    assert lines["scale"] == "code changed: cell 4, line 1 `z = lr * 2  # twice`"
    assert lines["readout"] == "file out.txt from step `write`, which runs"
    as_json = json.loads(cli("plan", nb, "--format", "json", check=0).stdout)["steps"]
    assert [s["step"] for s in as_json] == STEPS
    assert as_json[0] == {"step": "load", "action": "run", "reason": "file data.txt changed (3 -> 4 bytes)",
                          "origin": None}


def test_plan_bad_input_is_one_line_and_exit_2(folder, store):
    nb = folder / "flow.ipynb"
    assert "nope.ipynb" in one_line_error(cli("plan", folder / "nope.ipynb", check=2))
    assert "lr" in one_line_error(cli("plan", nb, "-p", "lr", "abc", check=2))
    assert "no parameter 'zz'" in one_line_error(cli("plan", nb, "-p", "zz", "1", check=2))
    assert "-p" in one_line_error(cli("plan", nb, "-p", "lr", check=2))
    assert not os.path.exists(store)  # nothing written


def test_plan_help_teaches_with_an_example():
    out = cli("plan", "--help", check=0).stdout
    assert "jupyter flow plan flow.ipynb -p lr 0.2" in out and "✓" in out and "▶" in out


# -- the run does what the plan said ------------------------------------------------------------------
EDITS = st.one_of(
    st.tuples(st.just("data"), st.sampled_from(["abc", "xyz", "abcd", "a"])),  # same length: same n
    st.tuples(st.just("lr"), st.sampled_from([0.1, 0.2])),
    st.tuples(st.just("code"), st.sampled_from(["z = lr * 1", "z = lr * 3", "z = lr * 1  # same code"])),
    st.tuples(st.just("out"), st.sampled_from(["remove", "scribble"])),  # a file a step wrote, changed by hand
)


def apply(folder: Path, edit: tuple) -> dict:
    kind, value = edit
    if kind == "data":
        (folder / "data.txt").write_text(value)
    elif kind == "code":
        set_cell(folder / "flow.ipynb", 3, value)
    elif kind == "out" and (folder / "out.txt").exists():
        if value == "remove":
            (folder / "out.txt").unlink()
        else:
            (folder / "out.txt").write_text("by hand")
    return {"lr": value} if kind == "lr" else {}


def test_the_run_does_what_the_plan_said(tmp_path_factory, store):
    folder = tmp_path_factory.mktemp("planned")
    (folder / "data.txt").write_text("abc")
    nb = tagged_notebook(folder, CELLS)
    seen = set()  # what the examples compared: reuse, and the first word of the reasons to run

    @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(EDITS, max_size=3))
    def check(edits):
        parameters = {}
        for edit in edits:
            parameters.update(apply(folder, edit))
        planned = {p["step"]: p for p in plan(flow_with_history(nb, store), store, parameters)}
        run = jupyter_flow.run(nb, parameters=parameters, store=store)
        assert run.status == "succeeded"
        for task in run.tasks:
            said, reason = planned[task.step], task.record["reason"]
            seen.add(said["action"] if said["action"] == "reuse" else said["reason"].split()[0])
            if said["reason"].endswith(", which runs"):
                continue  # it ran after all, or its upstream made the same values again and it was reused
            assert (said["action"], said["reason"]) == ("reuse" if task.status in ("cached", "reused") else "run",
                                                        reason), task.step
            if said["action"] == "reuse":
                assert said["origin"] == task.origin["run_id"]
        assert (folder / "out.txt").read_text() == run["readout"].data.back  # restored, or written again

    check()
    print(sorted(seen))
    assert {"reuse", "no", "file"} <= seen  # reuses, first runs, and runs for a file (not only because of upstream)
