"""A fresh namespace per task: nothing one task of a foreach leaves behind in its kernel (a global, a
changed attribute of an imported module, a changed builtin, the working directory, an environment
variable, a sys.path entry) is seen by a later task of the same step, even when the tasks run one
after another in one runner (`--max-workers 1`), where reusing a kernel would be cheapest. Issue 20
asked whether kernels could be reused across a step's tasks: this is the promise any reuse must keep.

A kernel does serve several tasks of a step whose code is contained (flow/containment.py): the check
never admits code that leaves any of those behind, and the tasks of an admitted step give the same
values, records and executed notebooks in a reused kernel as in a fresh kernel each.
"""
import glob
import json
import os

import pytest
from conftest import tagged_notebook
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jupyter_flow.flow.containment import not_contained

KINDS = ("global", "module", "builtins", "cwd", "env", "sys.path")

WORK = """\
import builtins, json, os, sys
seen = sorted(kind for kind, present in {
    "global": "left_by_earlier" in globals(),
    "module": hasattr(json, "left_by_earlier"),
    "builtins": hasattr(builtins, "left_by_earlier"),
    "cwd": os.getcwd() != HOME,
    "env": "JF_LEFT_BY_EARLIER" in os.environ,
    "sys.path": "/jf-left-by-earlier" in sys.path,
}.items() if present)
if "global" in leave:
    left_by_earlier = 1
if "module" in leave:
    json.left_by_earlier = 1
if "builtins" in leave:
    builtins.left_by_earlier = 1
if "cwd" in leave:
    os.makedirs("elsewhere", exist_ok=True)
    os.chdir("elsewhere")
if "env" in leave:
    os.environ["JF_LEFT_BY_EARLIER"] = "1"
if "sys.path" in leave:
    sys.path.append("/jf-left-by-earlier")
"""


@pytest.mark.slow
@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(plan=st.lists(st.lists(st.sampled_from(KINDS), unique=True), min_size=2, max_size=5))
def test_no_task_sees_what_an_earlier_task_left(plan, tmp_path_factory, run_flow):
    folder = tmp_path_factory.mktemp("flow")
    plan[0] = list(KINDS)  # the first task leaves everything behind
    path = tagged_notebook(folder, [
        (["step:start"], f"HOME = {str(folder)!r}\nplans = {json.dumps(plan)}"),
        (["step:work", "foreach:leave=plans"], WORK),
        (["step:join"], "everything_seen = seen"),
    ])
    run = run_flow(path, max_workers=1, no_cache=True)
    assert run["join"].data.everything_seen == [[] for _ in plan]


# -- kernels reused by contained steps ---------------------------------------------------------------
# Statements a contained step may hold (`item` is the foreach item, an int); some read a name another one
# binds only sometimes, so a name left behind by an earlier task would change what a later one does.
CONTAINED = [
    "a = item * 2", "b = [i * item for i in range(3)]", 'c = {"k": item, "s": str(item)}', "a += 1",
    "print(a)", "b.append(item)", "c.update(k=len(b))", "if item % 2:\n    a = 1", "a", "d = sorted(b, reverse=True)",
    's = f"{item:>3}|{max(b) if b else 0}"', "del a", "e = a + 1", "total = sum(x for x in b if x > 1)",
    "b[0] = item", "print(s.upper(), sep=\"-\")", "t = (item, None)", "for i, x in enumerate(b):\n    a = i + x",
    "ok = a is None", "n = {k: v for k, v in zip(\"ab\", b)}", "item",
]
# What a task could leave behind, each way of doing it (KINDS, and more): never admitted.
LEAKS = {
    "global": ["global g\ng = 1"],
    "module": ["import json\njson.left_by_earlier = 1", "json.left_by_earlier = 1", 'setattr(json, "x", 1)',
               'vars(json)["x"] = 1', "json.__dict__.update(x=1)"],
    "builtins": ["builtins.left_by_earlier = 1", "__builtins__.left_by_earlier = 1", '__builtins__["x"] = 1',
                 "type(item).x = 1", "len.x = 1"],
    "cwd": ['import os\nos.chdir("elsewhere")', '%cd elsewhere', 'os.chdir("elsewhere")'],
    "env": ['os.environ["JF_LEFT_BY_EARLIER"] = "1"', "%env JF_LEFT_BY_EARLIER=1", "!export X=1",
            'os.putenv("X", "1")'],
    "sys.path": ['sys.path.append("/jf-left-by-earlier")', "from sys import path\npath.append(1)"],
    "kernel": ['get_ipython().user_ns["x"] = 1', 'In.append("x")', "Out[1] = 1", '_jf._state["x"] = 1',
               "_oh.clear()", 'exit.x = 1'],
    "code": ['exec("x = 1")', 'eval("1")', 'globals()["x"] = 1', 'compile("x", "f", "eval")', "__import__('os')",
             "(lambda: 0)()", "def f():\n    pass", "class C:\n    pass", "m = map(setattr, [b], ['x'], [1])",
             'open("f", "w").write("x")', "breakpoint()", 'f = b.append\nf(1)', "with c:\n    pass",
             "try:\n    a = 1\nexcept Exception:\n    pass", "import numpy as np", "len = sorted\nlen(b)",
             "x = item.__class__", 'x = "{0.__class__}".format', "async def f():\n    pass"],
}
EVERY_LEAK = [code for codes in LEAKS.values() for code in codes]


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_the_check_never_admits_code_that_leaves_something_behind(data):
    """A task's code: contained statements with leaks mixed in anywhere, over one or more cells."""
    statements = data.draw(st.lists(st.sampled_from(CONTAINED), max_size=6))
    leaks = data.draw(st.lists(st.sampled_from(EVERY_LEAK), min_size=1, max_size=3))
    for leak in leaks:
        statements.insert(data.draw(st.integers(0, len(statements))), leak)
    cut = data.draw(st.integers(0, len(statements)))
    cells = ["\n".join(statements[:cut]), "\n".join(statements[cut:])]
    assert not_contained(cells), cells


@settings(max_examples=100, deadline=None)
@given(statements=st.lists(st.sampled_from(CONTAINED), max_size=8))
def test_the_check_admits_the_contained_statements(statements):
    assert not_contained(["\n".join(statements)]) == ""


def _tasks(store: str, run_id: str, step: str) -> list[dict]:
    """Each task of `step`: its status, error, stored values and executed notebook's cells (outputs, counts)."""
    found = []
    for path in sorted(glob.glob(os.path.join(store, "flows", "*", "runs", run_id, step, "*", "task.json"))):
        record = json.load(open(path))
        cells = []
        if record.get("notebook"):
            nb = json.load(open(os.path.join(store, record["notebook"])))
            cells = [(c.get("execution_count"), [{k: v for k, v in o.items() if k != "metadata"}
                                                 for o in c.get("outputs", [])])
                     for c in nb["cells"] if c["metadata"].get("jupyter_flow", {}).get("role") != "begin"]
        found.append({"index": record["index"], "status": record["status"], "pid": record.get("kernel_pid"),
                      "error": (record.get("error") or {}).get("message"), "cells": cells,
                      "outputs": {n: m["hash"] for n, m in (record.get("outputs") or {}).items()}})
    return sorted(found, key=lambda t: t["index"])


@pytest.mark.slow
@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(statements=st.lists(st.sampled_from(CONTAINED), min_size=1, max_size=6),
       width=st.integers(3, 6))
def test_admitted_tasks_are_the_same_in_a_reused_kernel_as_in_fresh_ones(statements, width, tmp_path_factory,
                                                                           run_flow, store, monkeypatch):
    folder = tmp_path_factory.mktemp("flow")
    code = "\n".join(statements)
    path = tagged_notebook(folder, [(["step:start"], f"items = list(range({width}))"),
                                    (["step:work", "foreach:items"], code)])
    seen = {}
    for reuse in ("1", "0"):
        monkeypatch.setenv("JUPYTER_FLOW_REUSE_KERNELS", reuse)
        run = run_flow(path, max_workers=1, no_cache=True, expect=None)
        seen[reuse] = _tasks(store, run.id, "work")
    pids = {reuse: [t.pop("pid") for t in tasks] for reuse, tasks in seen.items()}
    assert seen["1"] == seen["0"], code
    assert len(set(pids["0"])) == width  # a fresh kernel each
    if all(t["status"] == "succeeded" for t in seen["1"]):
        assert len(set(pids["1"])) == 1, code  # one kernel served them all
