"""A real jupyter server with the jupyter_flow extension, a fresh store, and notebooks in its root.

pytest-jupyter's fixtures are imported here (not as a global plugin), so they apply to these tests only.
"""
import asyncio
import json
import shutil
import time
import urllib.parse
from pathlib import Path

import pytest
from pytest_jupyter.jupyter_server import *  # noqa: F401,F403  (jp_fetch, jp_serverapp, ...)
from tornado.httpclient import HTTPClientError

ROOT = Path(__file__).resolve().parents[2]
API = "jupyter-flow/api"
FINAL = {"succeeded", "failed", "cancelled", "crashed"}


@pytest.fixture
def jp_server_config(store):
    return {
        # terminals off: its websocket handler draws an auth warning of its own
        "ServerApp": {"jpserver_extensions": {"jupyter_flow.server": True, "jupyter_server_terminals": False}},
        "JupyterFlow": {"store": store, "poll_interval_ms": 250},
    }


@pytest.fixture
def root(jp_root_dir) -> Path:
    """The server root, holding copies of the notebooks the tests run."""
    for name in ("linear.ipynb", "slow.ipynb", "error_notebook.ipynb"):
        shutil.copy(ROOT / "tests" / "notebooks" / name, jp_root_dir / name)
    shutil.copy(ROOT / "notebooks" / "debug_failure.ipynb", jp_root_dir / "debug_failure.ipynb")
    return Path(jp_root_dir)


@pytest.fixture
def api(jp_fetch, root):
    """Call the API; returns (status, JSON body) for errors as well as successes."""

    async def call(route, method="GET", body=None, params=None, headers=None):
        route, _, query = route.partition("?")
        params = {**dict(urllib.parse.parse_qsl(query)), **(params or {})}
        kwargs = {"method": method, "params": params, "headers": headers}
        if body is not None or method == "POST":
            kwargs["body"] = body if isinstance(body, (str, bytes)) else json.dumps(body or {})
        try:
            response = await jp_fetch(*API.split("/"), *route.split("/"), **kwargs)
        except HTTPClientError as e:
            assert e.response is not None, e
            response = e.response
        text = response.body.decode() if response.body else ""
        return response.code, (json.loads(text) if text else None), response

    return call


@pytest.fixture
def wait_run(api):
    async def wait(run_id, timeout=180, until=FINAL):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code, run, _ = await api(f"runs/{run_id}")
            assert code == 200, run
            if run["status"] in until:
                return run
            await asyncio.sleep(0.25)
        raise AssertionError(f"run {run_id} still {run['status']} after {timeout} s")

    return wait
