"""The REST API keeps to the server root for runs the CLI made, and refuses bodies that are not JSON objects."""
import shutil
from pathlib import Path

import pytest

import jupyter_flow

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def outside_run(tmp_path, store, root):
    """A failed run the CLI made from a notebook outside the server root."""
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(ROOT / "tests" / "notebooks" / "error_notebook.ipynb", outside / "error_notebook.ipynb")
    run = jupyter_flow.run(outside / "error_notebook.ipynb", store=store)
    assert run.status == "failed"
    return run


async def test_a_run_of_a_notebook_outside_the_root_is_not_resumed_or_served(api, outside_run, store):
    """Item 6."""
    before = sorted(Path(store).glob("flows/*/runs/*"))
    code, reply, _ = await api(f"runs/{outside_run.id}/resume", "POST", {})
    assert code == 400 and "outside the server root" in reply["message"]
    step = outside_run.tasks[0].step
    code, reply, _ = await api(f"runs/{outside_run.id}/tasks/{step}/0/notebook")
    assert code == 400 and "outside the server root" in reply["message"]
    assert sorted(Path(store).glob("flows/*/runs/*")) == before


@pytest.mark.parametrize("body", [b"\xff\xfe{}", "null", "0", "false", '""', "[]", "{"])
async def test_bodies_that_are_not_json_objects_are_400(api, body):
    """Item 11."""
    for route in ("runs", "runs/20250101T000000-abcdef/resume"):
        code, reply, _ = await api(route, "POST", body=body)
        assert code == 400, (route, body, reply)
        assert "JSON" in reply["message"]


async def test_the_server_user_is_the_hub_user(api, monkeypatch):
    """Item 13: runs record JUPYTERHUB_USER, so "my runs" must ask for the same name."""
    monkeypatch.setenv("JUPYTERHUB_USER", "hub-ann")
    code, info, _ = await api("version")
    assert code == 200 and info["user"] == "hub-ann"
