"""A colleague's run that failed on a Dask cluster with an S3 store, debugged and resumed from the sidebar.

Real services: `moto_server` (S3 API) and a Dask scheduler with two workers, all on loopback; the
colleague's run is started by the CLI as another user (JUPYTERHUB_USER).
"""
import uuid

import pytest
from support.services import dask_cluster, s3_bucket

from .conftest import need_chromium, start_lab
from .test_sidebar import NODES, SIDEBAR, kernel_client, open_notebook, shot

pytestmark = [pytest.mark.ui, pytest.mark.slow]


@pytest.fixture(scope="module")
def remote(tmp_path_factory):
    """An S3 bucket and a Dask cluster; their environment is set in this process (so in the lab, its
    kernels and the workers)."""
    need_chromium()
    base = tmp_path_factory.mktemp("remote")
    with s3_bucket(base / "moto", "flows"), dask_cluster(base / "cluster", workers=2, nthreads=2) as address:
        yield {"store": f"s3://flows/{uuid.uuid4().hex[:8]}", "scheduler": address}


@pytest.fixture(scope="module")
def lab(remote, tmp_path_factory):
    yield from start_lab(tmp_path_factory.mktemp("lab"), [
        f"--JupyterFlow.store={remote['store']}", "--JupyterFlow.executor=dask",
        f"--JupyterFlow.scheduler={remote['scheduler']}"])


def test_a_colleagues_failed_remote_run(lab, remote, page):
    from conftest import cli

    result = cli("run", lab.root / "debug_failure.ipynb", "--store", remote["store"], "--executor", "dask",
                 "--scheduler", remote["scheduler"], env={"JUPYTERHUB_USER": "colleague"})
    assert result.returncode != 0, result.stdout + result.stderr
    theirs = lab.api("jupyter-flow/api/runs?user=colleague")["runs"][0]
    assert theirs["status"] == "failed" and theirs["executor"] == "dask"

    open_notebook(page, lab, "debug_failure.ipynb")
    page.locator(f"{SIDEBAR} summary", has_text="History").click()
    page.locator(f"{SIDEBAR} .jp-flow-userfilter").select_option("everyone")
    row = page.locator(f"{SIDEBAR} .jp-flow-runitem[data-run='{theirs['id']}']")
    row.filter(has_text="colleague").wait_for(timeout=20_000)
    row.click()
    detail = f"{SIDEBAR} .jp-flow-rundetail[data-run='{theirs['id']}'][data-status='failed']"
    page.locator(detail).wait_for(timeout=20_000)
    page.locator(f"{NODES}[data-status='failed']").first.click()
    box = page.locator(f"{SIDEBAR} .jp-flow-failure")
    box.locator(".jp-flow-values", has_text="variables at the failure").wait_for(timeout=20_000)
    shot(page, "9-colleague-failed-remote")
    # the scheduler's address is longer than its field: its tooltip has all of it
    assert page.locator(f"{SIDEBAR} .jp-flow-param input[placeholder]").get_attribute("title") == remote["scheduler"]

    # Load into kernel: the colleague's variables, read from S3, in this notebook's kernel
    box.locator(".jp-flow-load").click()
    box.locator(".jp-flow-message", has_text="Loaded into kernel").wait_for(timeout=120_000)
    client = kernel_client(lab, "debug_failure.ipynb")
    try:
        reply = client.execute_interactive("", user_expressions={"v": "(line_no, row['celsius'])"}, timeout=60)
        assert reply["content"]["user_expressions"]["v"]["data"]["text/plain"] == "(5, 'n/a')"
    finally:
        client.stop_channels()

    # Resume: a new run on the cluster that reuses the colleague's finished step
    box.locator(".jp-flow-resume").click()
    page.wait_for_function(
        "old => { const d = document.querySelector('#jupyter-flow-sidebar .jp-flow-rundetail');"
        " return d && d.dataset.run !== old && d.dataset.status === 'failed'; }", arg=theirs["id"], timeout=240_000)
    shown = page.locator(f"{SIDEBAR} .jp-flow-rundetail").get_attribute("data-run")
    resumed = lab.api(f"jupyter-flow/api/runs/{shown}")
    assert resumed["origin_run"] == theirs["id"] and resumed["executor"] == "dask" and resumed["user"] != "colleague"
    tasks = {t["step"]: t for t in resumed["tasks"]}
    assert tasks["load"]["status"] in ("reused", "cached") and tasks["clean"]["status"] == "failed"
    shot(page, "9-colleague-resumed")
