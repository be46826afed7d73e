"""A real `jupyter lab` (token, loopback, temp store and root) and Debian's chromium driven by Playwright."""
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from support.services import free_port

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-output" / "ui"
CHROMIUM = os.environ.get("JUPYTER_FLOW_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]


class Lab:
    def __init__(self, url: str, token: str, root: Path, store: Path, runtime: Path):
        self.url, self.token, self.root, self.store, self.runtime = url, token, root, store, runtime

    def api(self, path: str, method: str = "GET", body=None):
        request = urllib.request.Request(
            f"{self.url}{path}", method=method, data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as e:  # say what the server said
            raise AssertionError(f"{method} {path}: {e.code} {e.read().decode(errors='replace')}") from None

    def page_url(self, notebook: str) -> str:
        return f"{self.url}lab/tree/{notebook}?reset&token={self.token}"  # reset: only this notebook open


def need_chromium():
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):  # CI installs chromium: a missing browser there is a failure, not a skip
            pytest.fail(f"no chromium at {CHROMIUM}; .ci/run installs Debian's chromium")
        pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium)")


def start_lab(base: Path, options=()):
    """`jupyter lab` in `base` (root/, store/, runtime/), with extra command-line `options`; a generator."""
    root, store, runtime = base / "root", base / "store", base / "runtime"
    root.mkdir()
    for name in ("quickstart.ipynb", "debug_failure.ipynb", "sweep.ipynb"):
        shutil.copy(ROOT / "notebooks" / name, root / name)
    # no "get notified about news?" toast over the screenshots
    notification = base / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True)
    notification.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    port, token = free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTER_FLOW_STORE=str(store), JUPYTER_RUNTIME_DIR=str(runtime),
               JUPYTER_CONFIG_DIR=str(base / "config"))
    log = open(base / "lab.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         "--port-retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         "--allow-root", "--LabApp.news_url=None", "--LabApp.expose_app_in_browser=True",
         "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate",
         f"--LabApp.workspaces_dir={base / 'workspaces'}", f"--LabApp.user_settings_dir={base / 'settings'}",
         "--ServerApp.allow_unauthenticated_access=False", "--JupyterFlow.poll_interval_ms=300", *options],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    lab = Lab(url, token, root, store, runtime)
    deadline = time.monotonic() + 90
    while True:
        try:
            lab.api("jupyter-flow/api/version")
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("jupyter lab did not start:\n" + (base / "lab.log").read_text()[-3000:])
            time.sleep(0.5)
    yield lab
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    need_chromium()
    yield from start_lab(tmp_path_factory.mktemp("lab"))


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    SHOTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    yield page
    context.close()
