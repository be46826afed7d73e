"""GET plan: what Run would do with each step of a saved notebook, and why, before anything runs;
POST plan/live: the same for the notebook's unsaved content."""
import json

import pytest


async def test_plan_before_any_run(api):
    code, plan, response = await api("plan", params={"path": "linear.ipynb"})
    assert code == 200, plan
    assert response.headers["Content-Type"].startswith("application/json")
    assert [s["step"] for s in plan["steps"]] == ["a", "b", "c", "d", "e"]
    assert {s["action"] for s in plan["steps"]} == {"run"}
    assert all(s["reason"] and s["origin"] is None for s in plan["steps"]), plan
    assert "`a`" in plan["steps"][1]["reason"]  # b runs because a does


@pytest.mark.parametrize("params,status", [
    ({}, 400),
    ({"path": ""}, 400),
    ({"path": "missing.ipynb"}, 404),
    ({"path": "notes.txt"}, 400),
    ({"path": "../linear.ipynb"}, 400),
    ({"path": "/etc/linear.ipynb"}, 400),
    ({"path": ".hidden/x.ipynb"}, 400),
    ({"path": "linear.ipynb", "parameters": "not json"}, 400),
    ({"path": "linear.ipynb", "parameters": "[1, 2]"}, 400),
    ({"path": "linear.ipynb", "parameters": json.dumps({"nope": 1})}, 400),
    ({"path": "linear.ipynb", "parameters": json.dumps({"start": "x"})}, 400),
])
async def test_bad_input_is_4xx_json(api, params, status):
    code, reply, response = await api("plan", params=params)
    assert code == status, reply
    assert response.headers["Content-Type"].startswith("application/json")
    assert reply["message"] and "steps" not in reply


@pytest.mark.slow
async def test_after_a_run_every_step_is_reused_until_something_changes(api, wait_run, root):
    _, started, _ = await api("runs", "POST", {"path": "linear.ipynb"})
    run = await wait_run(started["id"])
    assert run["status"] == "succeeded", run

    code, plan, _ = await api("plan", params={"path": "linear.ipynb"})
    assert code == 200
    assert [(s["action"], s["origin"]) for s in plan["steps"]] == [("reuse", run["id"])] * 5, plan

    code, plan, _ = await api("plan", params={"path": "linear.ipynb", "parameters": json.dumps({"start": 5})})
    assert code == 200
    assert [s["action"] for s in plan["steps"]] == ["run"] * 5, plan
    assert "start" in plan["steps"][0]["reason"], plan

    # unsaved edits: step c's code changed, so c and everything after it would run; nothing is written
    saved = (root / "linear.ipynb").read_text()
    nb = json.loads(saved)
    nb["cells"][4]["source"] = "c = b + 4"
    code, plan, _ = await api("plan/live", "POST", {"path": "linear.ipynb", "content": nb})
    assert code == 200, plan
    assert [s["action"] for s in plan["steps"]] == ["reuse", "reuse", "run", "run", "run"], plan
    code, plan, _ = await api("plan/live", "POST", {"path": "linear.ipynb", "content": nb, "parameters": {"start": 5}})
    assert code == 200 and [s["action"] for s in plan["steps"]] == ["run"] * 5, plan
    assert (root / "linear.ipynb").read_text() == saved


@pytest.mark.parametrize("body", [
    {"content": {"cells": []}},
    {"path": "linear.ipynb"},
    {"path": "linear.ipynb", "content": {"cells": 3}},
    {"path": "linear.ipynb", "content": {"cells": []}, "parameters": [1]},
    {"path": "../linear.ipynb", "content": {"cells": []}},
])
async def test_bad_live_plan_is_400_json(api, body):
    code, reply, _ = await api("plan/live", "POST", body)
    assert code == 400, reply
    assert reply["message"] and "steps" not in reply
