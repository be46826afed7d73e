"""Runs started, followed, cancelled and resumed through the REST API, with real kernels."""
import pytest

pytestmark = pytest.mark.slow


async def test_run_through_the_api_succeeds(api, wait_run):
    code, started, _ = await api("runs", "POST", {"path": "linear.ipynb", "parameters": {"start": 2}})
    assert code == 201, started
    run = await wait_run(started["id"])
    assert run["status"] == "succeeded", run
    assert run["path"] == "linear.ipynb"
    assert run["parameters"]["start"] == 2
    assert [(t["step"], t["status"]) for t in run["tasks"]] == [(s, "succeeded") for s in "abcde"]

    code, listed, _ = await api("runs", params={"flow": run["flow"], "status": "succeeded", "limit": "5"})
    assert code == 200 and [r["id"] for r in listed["runs"]] == [run["id"]]

    code, log, _ = await api(f"runs/{run['id']}/tasks/e/log")
    assert code == 200 and isinstance(log["text"], str)
    code, artifacts, _ = await api(f"runs/{run['id']}/tasks/e/0/artifacts")
    assert code == 200
    assert artifacts["outputs"]["e"]["preview"] is not None  # (2+1)*2+3)*10-1 = 89
    assert "89" in str(artifacts["outputs"]["e"]["preview"])
    assert artifacts["failure"] is None
    code, notebook, _ = await api(f"runs/{run['id']}/tasks/e/notebook")
    assert code == 200 and notebook["nbformat"] == 4 and notebook["cells"]


async def test_unchanged_run_revalidates_with_304(api, wait_run):
    _, started, _ = await api("runs", "POST", {"path": "linear.ipynb"})
    run = await wait_run(started["id"])
    code, _, response = await api(f"runs/{run['id']}")
    etag = response.headers["Etag"]
    code, _, response = await api(f"runs/{run['id']}", headers={"If-None-Match": etag})
    assert code == 304


async def test_failed_run_shows_failure_then_resumes(api, wait_run):
    _, started, _ = await api("runs", "POST", {"path": "debug_failure.ipynb"})
    run = await wait_run(started["id"])
    assert run["status"] == "failed"
    failed = next(t for t in run["tasks"] if t["status"] == "failed")
    assert failed["error"]["type"] and failed["error"]["source_cell"]

    code, artifacts, _ = await api(f"runs/{run['id']}/tasks/{failed['step']}/0/artifacts")
    assert code == 200
    variables = artifacts["failure"]["variables"]
    assert variables and all("preview" in meta for meta in variables.values())

    code, resumed, _ = await api(f"runs/{run['id']}/resume", "POST", {"parameters": {"strict": False}})
    assert code == 201 and resumed["origin_run"] == run["id"]
    second = await wait_run(resumed["id"])
    assert second["status"] == "succeeded", second
    assert second["origin_run"] == run["id"]
    assert {t["status"] for t in second["tasks"] if t["step"] == "load"} <= {"reused", "cached", "succeeded"}


async def test_cancel_a_running_run(api, wait_run):
    _, started, _ = await api("runs", "POST", {"path": "slow.ipynb", "parameters": {"sleep_s": 60}})
    await wait_run(started["id"], until={"running"}, timeout=30)
    code, reply, _ = await api(f"runs/{started['id']}/cancel", "POST")
    assert code == 200 and reply["cancel_requested"]
    run = await wait_run(started["id"], timeout=60)
    assert run["status"] == "cancelled"
    code, reply, _ = await api(f"runs/{started['id']}/cancel", "POST")
    assert code == 400 and "not running" in reply["message"]
