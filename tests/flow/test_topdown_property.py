"""The promise, tested on generated notebooks: a pipeline gives the values of running the notebook
top to bottom in one kernel, or it is refused or warned about before it starts (or, for a change in
place that no analysis can see, it stops with an error naming the step and the variable).

Steps read, write, change in place (methods, aliases, loops, notebook functions, module functions,
calls the analysis cannot see into), delete and rebind three shared list names; they define
functions that read or change globals and call them in later steps, redefine a builtin, use names
in shell lines, draw from a seeded global random generator, and continue earlier steps. They also
write, append to, read and remove files named by literal paths (and a constant path expression): the
pipeline's values and the files it leaves are those of top to bottom.
"""
import json
import os
import pickle
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import jupyter_flow
from jupyter_flow.errors import FlowError
from jupyter_flow.flow.dag import build_flow

pytestmark = pytest.mark.slow

NAMES = ["x", "y", "z"]
FILES = ["f0.txt", "f1.txt"]
IMPORTS = "import bisect\nimport heapq\nimport os\nimport pathlib\nimport random\nrandom.seed(0)\nDATA = 'f1'"


@st.composite
def notebooks(draw) -> list[tuple[str, str]]:
    """(step tag, source) of the step cells, in order; a step may continue an earlier one
    (`step:s0`, `step:s1`, `step:s0`); every name used is defined at that point top to bottom."""
    defined: list[str] = []
    files: list[str] = []  # the files that exist at this point, top to bottom
    functions: list[tuple[str, str]] = []  # (function, the global it uses)
    steps = []
    for s in range(draw(st.integers(2, 4))):
        lines = []
        for j in range(draw(st.integers(1, 3))):
            k = draw(st.integers(0, 9))
            r = f"r{s}{j}"
            if not defined:
                n = draw(st.sampled_from(NAMES))
                lines.append(f"{n} = [{k}, {k + 1}]")
                defined.append(n)
                continue
            n = draw(st.sampled_from(defined))
            m = draw(st.sampled_from(NAMES))
            live = [(f, g) for f, g in functions if g in defined]
            ops = {
                "assign": f"{m} = [{k}]",
                "copy": f"{m} = list({n})",
                "alias": f"{m} = {n}",
                "read": f"{r} = sum({n}) * 10 + len({n})",
                "append": f"{n}.append({k})",
                "augment": f"{n} += [{k}]",
                "pop": f"{r} = {n}.pop() if {n} else None",
                "alias_change": f"_a = {n}\n_a.append({k})",
                "loop": f"for _d in [{n}]:\n    _d.append({k})",
                "function": f"def _add(l):\n    l.append({k})\n\n_add({n})",
                "module": f"bisect.insort({n}, {k})",
                "unseen": f"{r} = heapq.heappop({n}) if {n} else None",
                "delete": f"del {n}",
                "define_reader": f"def f{s}{j}():\n    return sum({n})",
                "define_changer": f"def f{s}{j}():\n    {n}.append({k})",
                "draw": f"{r} = random.random()",
                "shell": f"_o = !echo {{sum({n})}} ${n}\n{r} = int(_o[0].split()[0])",
                "redefine_builtin": f"def sum(l):\n    return {k}",
            }
            if live:
                f, _ = draw(st.sampled_from(live))
                ops["call"] = f"{r} = {f}()"
            file = draw(st.sampled_from(FILES))
            ops["write_file"] = f"open({file!r}, 'w').write(str(sum({n})))"
            ops["append_file"] = f"with open({file!r}, 'a') as _f:\n    _f.write('{k}')"
            ops["write_path"] = "pathlib.Path(DATA + '.txt').write_text(str(len(" + n + ")))"
            if file in files:
                ops["read_file"] = f"{r} = len(open({file!r}).read()) * 10 + {k}"
                ops["remove_file"] = f"os.remove({file!r})"
            if "f1.txt" in files:
                ops["read_path"] = f"{r} = len(pathlib.Path(f'{{DATA}}.txt').read_text()) + {k}"
            kind = draw(st.sampled_from(sorted(ops)))
            lines.append(ops[kind])
            if kind in ("assign", "copy", "alias") and m not in defined:
                defined.append(m)
            elif kind == "delete":
                defined.remove(n)
            elif kind.startswith("define_"):
                functions.append((f"f{s}{j}", n))
            elif kind in ("write_file", "append_file") and file not in files:
                files.append(file)
            elif kind == "write_path" and "f1.txt" not in files:
                files.append("f1.txt")
            elif kind == "remove_file":
                files.remove(file)
        names = [f"s{i}" for i in range(len(steps) - 1)]  # an earlier step, not the one just above
        tag = draw(st.sampled_from(names)) if names and draw(st.integers(0, 4)) == 0 else f"s{len(steps)}"
        steps.append((tag, "\n".join(lines)))
    return steps


def write(folder: Path, steps: list[str], name: str = "generated.ipynb", imports: bool = True,
          notebooks: list[str] | None = None) -> Path:
    """The notebook of these steps (after the imports cell); `notebooks`: the others of its flow."""
    cells = [("imports", IMPORTS)] * imports + [(f"step:{tag}", source) for tag, source in steps]
    metadata: dict = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    if notebooks:
        metadata["jupyter_flow"] = {"notebooks": notebooks}
    raw = {"nbformat": 4, "nbformat_minor": 5, "metadata": metadata,
           "cells": [{"cell_type": "code", "id": f"c{i}", "metadata": {"tags": [tag]}, "source": source,
                      "outputs": [], "execution_count": None} for i, (tag, source) in enumerate(cells)]}
    path = folder / name
    path.write_text(json.dumps(raw))
    return path


def top_to_bottom(path: Path) -> tuple[dict, dict]:
    """The values and the files of a run top to bottom (in a folder of its own)."""
    import nbformat
    import papermill

    folder = path.parent / "top_to_bottom"
    folder.mkdir()
    nb = nbformat.read(str(path), as_version=4)
    out = folder / "values.pkl"
    nb.cells.append(nbformat.v4.new_code_cell(
        "import pickle as _p\n"
        f"_p.dump({{_n: _v for _n, _v in globals().items() if isinstance(_v, (list, int, float, type(None)))}}, "
        f"open({str(out)!r}, 'wb'))"))
    papermill.execute_notebook(nb, str(folder / "out.ipynb"), progress_bar=False, cwd=str(folder))
    with open(out, "rb") as f:
        values = compared(pickle.load(f))
    return values, files_in(folder)


def files_in(folder: Path) -> dict:
    return {name: (folder / name).read_text() for name in FILES if (folder / name).exists()}


def compared(values: dict) -> dict:
    """The generated names (x, y, z, r..) that hold plain values."""
    return {n: v for n, v in values.items() if n[:1] in "xyzr" and isinstance(v, (list, int, float, type(None)))}


def pipeline_values(run, flow) -> dict:
    """Each name's value after the last step that stores or deletes it."""
    values = {}
    for step in flow.steps.values():
        artifacts = run[step.name].artifacts
        for name in step.writes:
            values.pop(name, None)
        values.update({n: a.value for n, a in artifacts.items()})
    return compared(values)


EXAMPLES = int(os.environ.get("TOPDOWN_EXAMPLES", "25"))  # each runs a pipeline and papermill: ~4 s here


@pytest.mark.timeout(120 + 15 * EXAMPLES)
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(steps=notebooks())
def test_pipeline_gives_the_values_of_top_to_bottom(steps, tmp_path_factory):
    folder = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp()))
    path = write(folder, steps)
    try:
        flow = build_flow(path)
    except FlowError as e:
        assert "continues step" in str(e), e  # refused before anything runs
        event("refused")
        return
    if flow.warnings:
        event("warned")
        return  # warned before anything runs
    expected, expected_files = top_to_bottom(path)
    run = jupyter_flow.run(path, store=str(folder / "store"), max_workers=2)
    program = "\n---\n".join(f"[{tag}]\n{source}" for tag, source in steps)
    if run.status == "failed":
        errors = [t.error["message"] for t in run.tasks if t.error]
        assert any("in place" in e for e in errors), (errors, program)  # an unseen change, named
        event("stopped: changed in place")
        return
    event("same values as top to bottom")
    if any(s.files_read or s.files_written for s in flow.steps.values()):
        event("steps use files")
    assert run.status == "succeeded"
    assert pipeline_values(run, flow) == expected, program
    assert files_in(folder) == expected_files, program
    shutil.rmtree(folder, ignore_errors=True)


SPLITS = int(os.environ.get("TOPDOWN_SPLIT_EXAMPLES", "12"))


@pytest.mark.timeout(120 + 15 * SPLITS)
@settings(max_examples=SPLITS, deadline=None, suppress_health_check=list(HealthCheck))
@given(steps=notebooks(), data=st.data())
def test_a_flow_split_across_two_notebooks_gives_the_values_of_both_run_top_to_bottom(steps, data,
                                                                                      tmp_path_factory):
    """The steps cut in two notebooks (first.ipynb, whose metadata names second.ipynb): the pipeline's
    values and files are those of the two notebooks concatenated and run top to bottom."""
    folder = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp()))
    cut = data.draw(st.integers(1, len(steps) - 1), label="steps in the first notebook")
    whole = write(folder, steps)  # the concatenation: first's cells, then second's
    first = write(folder, steps[:cut], "first.ipynb", notebooks=["second.ipynb"])
    write(folder, steps[cut:], "second.ipynb", imports=False)
    try:
        flow = build_flow(first)
    except FlowError as e:
        assert "continues step" in str(e), e
        event("refused")
        return
    if flow.warnings:
        event("warned")
        return
    expected, expected_files = top_to_bottom(whole)
    run = jupyter_flow.run(first, store=str(folder / "store"), max_workers=2)
    program = f"first.ipynb: {steps[:cut]}\nsecond.ipynb: {steps[cut:]}"
    if run.status == "failed":
        errors = [t.error["message"] for t in run.tasks if t.error]
        assert any("in place" in e for e in errors), (errors, program)
        event("stopped: changed in place")
        return
    event("same values as top to bottom")
    assert run.status == "succeeded"
    assert pipeline_values(run, flow) == expected, program
    assert files_in(folder) == expected_files, program
    shutil.rmtree(folder, ignore_errors=True)
