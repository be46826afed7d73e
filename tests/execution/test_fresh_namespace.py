"""A fresh namespace per task: nothing one task of a foreach leaves behind in its kernel (a global, a
changed attribute of an imported module, a changed builtin, the working directory, an environment
variable, a sys.path entry) is seen by a later task of the same step, even when the tasks run one
after another in one runner (`--max-workers 1`), where reusing a kernel would be cheapest. Issue 20
asked whether kernels could be reused across a step's tasks: this is the promise any reuse must keep.
"""
import json

import pytest
from conftest import tagged_notebook
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.slow

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
