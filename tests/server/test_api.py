"""Every route: authentication, authorization, bad input as 4xx JSON, paths kept inside the root."""
import json
import os
import shutil
import warnings

import pytest
from jupyter_server.utils import url_path_join

from jupyter_flow._version import __version__

from .conftest import ROOT

RUN = "20250101T000000-abcdef"
ROUTES = [
    ("GET", "version"),
    ("GET", "vocabulary"),
    ("GET", "dag?path=linear.ipynb"),
    ("GET", "plan?path=linear.ipynb"),
    ("POST", "plan/live"),
    ("GET", "runs"),
    ("POST", "runs"),
    ("GET", f"runs/{RUN}"),
    ("POST", f"runs/{RUN}/cancel"),
    ("POST", f"runs/{RUN}/resume"),
    ("GET", f"runs/{RUN}/tasks/a/log"),
    ("GET", f"runs/{RUN}/tasks/a/0/artifacts"),
    ("GET", f"runs/{RUN}/tasks/a/0/notebook"),
]


async def test_version(api):
    code, info, _ = await api("version")
    assert code == 200
    assert info["version"] == __version__
    assert info["store"] and info["executor"] == "local" and info["user"]
    assert info["poll_interval_ms"] == 250
    assert info["executors"][:2] == ["local", "dask"]  # the sidebar's Run form offers these (registered names)


async def test_vocabulary_is_the_engines(api):
    """The sidebar's statuses, their order and colours and the step-name rule come from here only."""
    import re

    from jupyter_flow.store import status

    code, words, _ = await api("vocabulary")
    assert code == 200 and {k: v for k, v in words.items() if k != "ended"} == status.vocabulary()
    assert words["precedence"].index("cancelled") < words["precedence"].index("running")  # as combine() ranks them
    assert set(words["ended"]) == {s.value for s in status.TERMINAL} | {"crashed", "damaged"}
    assert re.fullmatch(words["step_name"].strip("^$"), "train_2") and not re.fullmatch(words["step_name"], "Train")


@pytest.mark.parametrize("method,route", ROUTES)
async def test_unauthenticated_is_403(http_server_client, jp_base_url, root, method, route):
    url = url_path_join(jp_base_url, "jupyter-flow/api", route)
    body = "{}" if method == "POST" else None
    response = await http_server_client.fetch(url, method=method, body=body, raise_error=False)
    assert response.code == 403


@pytest.fixture
def browser_cookies(http_server_client, jp_base_url, jp_serverapp, root):
    """The login and _xsrf cookies a browser holds after opening the server with its token."""

    async def login():
        token = jp_serverapp.identity_provider.token
        url = url_path_join(jp_base_url, "tree") + f"?token={token}"
        response = await http_server_client.fetch(url, raise_error=False, follow_redirects=False)
        cookies = [c.split(";")[0] for c in response.headers.get_list("Set-Cookie")]
        xsrf = next(c.split("=", 1)[1] for c in cookies if c.startswith("_xsrf="))
        return "; ".join(cookies), xsrf

    return login


@pytest.mark.parametrize("route", ["runs", f"runs/{RUN}/cancel", f"runs/{RUN}/resume"])
async def test_browser_post_needs_the_xsrf_token(http_server_client, jp_base_url, browser_cookies, route):
    cookie, xsrf = await browser_cookies()
    url = url_path_join(jp_base_url, "jupyter-flow/api", route)
    fetch = http_server_client.fetch
    assert (await fetch(url, method="GET", headers={"Cookie": cookie}, raise_error=False)).code != 403
    without = await fetch(url, method="POST", body="{}", headers={"Cookie": cookie}, raise_error=False)
    assert without.code == 403
    headers = {"Cookie": cookie, "X-XSRFToken": xsrf}
    with_token = await fetch(url, method="POST", body="{}", headers=headers, raise_error=False)
    assert with_token.code in (400, 404)  # past the XSRF check, refused for its (empty) input


async def test_unauthorized_user_is_403(api, jp_serverapp):
    class ReadOnly(type(jp_serverapp.authorizer)):
        def is_authorized(self, handler, user, action, resource):
            return action == "read"

    jp_serverapp.web_app.settings["authorizer"] = ReadOnly(parent=jp_serverapp)
    assert (await api("runs"))[0] == 200
    code, _, _ = await api("runs", "POST", {"path": "linear.ipynb"})
    assert code == 403
    assert (await api(f"runs/{RUN}/cancel", "POST"))[0] == 403


async def test_dag(api):
    code, dag, _ = await api("dag", params={"path": "linear.ipynb"})
    assert code == 200, dag
    assert dag["path"] == "linear.ipynb"
    assert [s["name"] for s in dag["steps"]] == ["a", "b", "c", "d", "e"]
    assert dag["steps"][1]["edges"] == {"a": ["a"]}
    assert dag["parameters"]["start"]["type"] == "int"


async def test_the_dag_of_a_flow_across_notebooks_from_either_notebook(api, root):
    """The sidebar's DAG of notebooks/two_notebooks: prepare.ipynb lists report.ipynb; report.ipynb
    listing both (itself in its place) shows the same flow from its side."""
    for name in ("prepare.ipynb", "report.ipynb"):
        shutil.copy(ROOT / "notebooks" / "two_notebooks" / name, root / name)
    code, first, _ = await api("dag", params={"path": "prepare.ipynb"})
    assert code == 200, first
    steps = ["load", "total", "report_load", "summary"]
    assert [s["name"] for s in first["steps"]] == steps and first["notebooks"] == ["prepare.ipynb", "report.ipynb"]
    report = json.loads((root / "report.ipynb").read_text())
    report["metadata"]["jupyter_flow"] = {"notebooks": ["prepare.ipynb", "report.ipynb"]}
    (root / "report.ipynb").write_text(json.dumps(report))
    code, second, _ = await api("dag", params={"path": "report.ipynb"})
    assert code == 200, second
    assert [s["name"] for s in second["steps"]] == steps


BAD = [
    ("GET", "dag", None, None, 400),
    ("GET", "dag?path=missing.ipynb", None, None, 404),
    ("GET", "dag?path=notes.txt", None, None, 400),
    ("POST", "runs", "not json", None, 400),
    ("POST", "runs", "[1, 2]", None, 400),
    ("POST", "runs", "{}", None, 400),
    ("POST", "runs", json.dumps({"path": 5}), None, 400),
    ("POST", "runs", json.dumps({"path": "linear.ipynb", "parameters": [1]}), None, 400),
    ("POST", "runs", json.dumps({"path": "linear.ipynb", "parameters": {"nope": 1}}), None, 400),
    ("POST", "runs", json.dumps({"path": "linear.ipynb", "parameters": {"start": "x"}}), None, 400),
    ("POST", "runs", json.dumps({"path": "linear.ipynb", "executor": "warp"}), None, 400),
    ("GET", "runs?limit=many", None, None, 400),
    ("GET", "runs?limit=0", None, None, 400),
    ("GET", "runs?status=happy", None, None, 400),
    ("GET", "runs?flow=../../etc", None, None, 400),
    ("GET", "runs?flow=*", None, None, 400),
    ("GET", f"runs/{RUN}", None, None, 404),
    ("GET", "runs/..", None, None, 404),
    ("POST", f"runs/{RUN}/cancel", "{}", None, 404),
    ("POST", f"runs/{RUN}/resume", "{}", None, 404),
    ("POST", f"runs/{RUN}/resume", json.dumps({"parameters": "x"}), None, 400),
    ("GET", f"runs/{RUN}/tasks/a/log", None, None, 404),
    ("GET", f"runs/{RUN}/tasks/Bad-Step/log", None, None, 404),
    ("GET", f"runs/{RUN}/tasks/a/0/secrets", None, None, 404),
    ("GET", "no/such/route", None, None, 404),
]


@pytest.mark.parametrize("method,route,body,params,status", BAD)
async def test_bad_input_is_4xx_json(api, method, route, body, params, status):
    code, reply, response = await api(route, method, body=body, params=params)
    assert code == status, reply
    assert response.headers["Content-Type"].startswith("application/json")
    assert reply["message"]


@pytest.fixture
def outside(root):
    """Notebooks beside the root, including a sibling folder whose name starts with the root's."""
    sibling = root.parent / (root.name + "_evil")
    sibling.mkdir()
    for folder in (root.parent, sibling):
        (folder / "secret.ipynb").write_text((root / "linear.ipynb").read_text())
    (root / "sub").mkdir()
    os.symlink(sibling, root / "sub" / "link")
    return sibling


TRAVERSAL = [
    "../secret.ipynb",
    "sub/../../secret.ipynb",
    "./../secret.ipynb",
    "..%2Fsecret.ipynb",
    "../root_dir_evil/secret.ipynb",
    "sub/link/secret.ipynb",  # a symlink out of the root
    "ABS/secret.ipynb",  # replaced by the absolute path of the sibling folder
    "//etc/secret.ipynb",
    "sub\\..\\..\\secret.ipynb",
    ".hidden/x.ipynb",
]


@pytest.mark.parametrize("path", TRAVERSAL)
async def test_paths_outside_the_root_are_refused(api, outside, path):
    path = path.replace("ABS", str(outside)).replace("%2F", "/")
    for method, route, kwargs in (
        ("GET", "dag", {"params": {"path": path}}),
        ("GET", "plan", {"params": {"path": path}}),
        ("POST", "runs", {"body": {"path": path}}),
    ):
        code, reply, _ = await api(route, method, **kwargs)
        assert 400 <= code < 500, (method, path, code, reply)
        assert "steps" not in (reply or {})


def test_server_starts_without_auth_warning(jp_configurable_serverapp, jp_server_config, root):
    """With allow_unauthenticated_access=False every handler must be decorated: no warning."""
    config = dict(jp_server_config)
    config["ServerApp"] = dict(config["ServerApp"], allow_unauthenticated_access=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        app = jp_configurable_serverapp(config=config)
    auth = [w for w in caught if "authenticated" in str(w.message) or "Auth" in w.category.__name__]
    assert not auth, [str(w.message) for w in auth]
    assert app.allow_unauthenticated_access is False
    assert "jupyter_flow" in app.web_app.settings


def test_store_defaults_to_the_cli_default(tmp_path, monkeypatch):
    from traitlets.config import Config

    from jupyter_flow.server.config import JupyterFlow
    from jupyter_flow.server.service import FlowService

    monkeypatch.setenv("JUPYTER_FLOW_STORE", str(tmp_path / "from-env"))
    assert FlowService(JupyterFlow(), str(tmp_path)).info()["store"] == str(tmp_path / "from-env")
    config = Config({"JupyterFlow": {"store": str(tmp_path / "from-config"), "executor": "dask"}})
    info = FlowService(JupyterFlow(config=config), str(tmp_path)).info()
    assert (info["store"], info["executor"]) == (str(tmp_path / "from-config"), "dask")
