"""A person's path through the sidebar: see the DAG, run it, watch it turn green, debug a failure."""
import json
from datetime import datetime

import pytest
from jupyter_client import BlockingKernelClient

from .conftest import SHOTS

pytestmark = [pytest.mark.ui, pytest.mark.slow]

SIDEBAR = "#jupyter-flow-sidebar"
NODES = f"{SIDEBAR} .jp-flow-node"

# Records, per step, when its node first showed each status (browser clock = this machine's clock).
WATCH_NODES = """() => {
  window.__flowSeen = {};
  const note = () => document.querySelectorAll('.jp-flow-node').forEach(n => {
    const key = n.dataset.step + ':' + n.dataset.status;
    if (!(key in window.__flowSeen)) { window.__flowSeen[key] = Date.now(); }
  });
  new MutationObserver(note).observe(document.body,
    {subtree: true, childList: true, attributes: true, attributeFilter: ['data-status']});
  note();
}"""


def open_notebook(page, lab, name):
    page.goto(lab.page_url(name))
    page.wait_for_selector(".jp-NotebookPanel", timeout=60_000)
    tab = page.locator('li.lm-TabBar-tab[data-id="jupyter-flow-sidebar"]')
    tab.wait_for(timeout=30_000)
    if "lm-mod-current" not in (tab.get_attribute("class") or ""):
        tab.click()
    page.wait_for_selector(NODES, timeout=30_000)
    page.locator(f"{SIDEBAR} .jp-flow-title", has_text=name.removesuffix(".ipynb")).wait_for(timeout=30_000)


def run_and_wait(page, until_selector, timeout=240_000):
    before = page.locator(f"{SIDEBAR} .jp-flow-rundetail").get_attribute("data-run") if page.locator(
        f"{SIDEBAR} .jp-flow-rundetail").count() else None
    page.locator(f"{SIDEBAR} .jp-flow-run-button").click()
    try:
        page.wait_for_function(
            "old => { const d = document.querySelector('#jupyter-flow-sidebar .jp-flow-rundetail');"
            " return d && d.dataset.run !== old; }", arg=before, timeout=30_000)
        page.wait_for_selector(until_selector, timeout=timeout)
    except Exception:
        shot(page, "failed")
        raise
    return page.locator(f"{SIDEBAR} .jp-flow-rundetail").get_attribute("data-run")


def shot(page, name):
    page.locator(SIDEBAR).screenshot(path=str(SHOTS / f"{name}-sidebar.png"))
    page.screenshot(path=str(SHOTS / f"{name}-lab.png"))


def test_run_quickstart_from_the_sidebar(lab, page):
    open_notebook(page, lab, "quickstart.ipynb")
    dag = lab.api("jupyter-flow/api/dag?path=quickstart.ipynb")
    steps = [s["name"] for s in dag["steps"]]
    assert sorted(n.get_attribute("data-step") for n in page.locator(NODES).all()) == sorted(steps)
    shot(page, "1-quickstart-dag")

    page.evaluate(WATCH_NODES)
    run_id = run_and_wait(page, f"{SIDEBAR} .jp-flow-rundetail[data-status='succeeded']")
    page.wait_for_function(
        "n => document.querySelectorAll(\"#jupyter-flow-sidebar .jp-flow-node[data-status='succeeded']\").length === n",
        arg=len(steps), timeout=10_000,
    )
    shot(page, "2-quickstart-succeeded")

    # every step turned green within a second of its task finishing
    seen = page.evaluate("() => window.__flowSeen")
    run = lab.api(f"jupyter-flow/api/runs/{run_id}")
    lags = {}
    for task in run["tasks"]:
        ended = datetime.fromisoformat(task["ended"]).timestamp() * 1000
        lags[task["step"]] = seen[f"{task['step']}:succeeded"] - ended
    print("ms from task end to green node:", json.dumps(lags))
    assert max(lags.values()) < 1000, lags

    set_theme(page, "JupyterLab Dark")
    shot(page, "2-quickstart-succeeded-dark")
    set_theme(page, "JupyterLab Light")


def set_theme(page, name):
    page.locator(".lm-MenuBar-itemLabel", has_text="Settings").click()
    page.locator(".lm-Menu-itemLabel", has_text="Theme").first.hover()
    page.locator(".lm-Menu-itemLabel").get_by_text(name, exact=True).click()
    light = "false" if "Dark" in name else "true"
    page.wait_for_selector(f"body[data-jp-theme-light='{light}']", state="attached", timeout=20_000)
    page.wait_for_timeout(500)


def kernel_client(lab, notebook):
    session = next(s for s in lab.api("api/sessions") if s["path"] == notebook)
    client = BlockingKernelClient(connection_file=str(lab.runtime / f"kernel-{session['kernel']['id']}.json"))
    client.load_connection_file()
    client.start_channels()
    client.wait_for_ready(timeout=60)
    return client


def test_debug_a_failed_step(lab, page):
    open_notebook(page, lab, "debug_failure.ipynb")
    run_id = run_and_wait(page, f"{SIDEBAR} .jp-flow-rundetail[data-status='failed']")
    failed = page.locator(f"{NODES}[data-status='failed']")
    step = failed.first.get_attribute("data-step")
    failed.first.click()
    page.wait_for_selector(f"{SIDEBAR} .jp-flow-failure", timeout=10_000)
    shot(page, "3-debug-failed")

    page.locator(f"{SIDEBAR} .jp-flow-load").click()
    message = page.locator(f"{SIDEBAR} .jp-flow-failure .jp-flow-message")
    message.filter(has_text="Loaded into kernel").wait_for(timeout=60_000)
    shot(page, "4-debug-loaded")

    page.locator(f"{SIDEBAR} .jp-flow-open").click()  # the executed step notebook, read-only
    viewer = page.locator(".jp-flow-viewer")
    viewer.locator(".jp-OutputArea-output", has_text="ValueError").first.wait_for(timeout=20_000)
    page.screenshot(path=str(SHOTS / "5-executed-notebook-lab.png"))

    artifacts = lab.api(f"jupyter-flow/api/runs/{run_id}/tasks/{step}/0/artifacts")
    names = sorted(artifacts["failure"]["variables"])
    assert names and all(n in message.inner_text() for n in names)
    client = kernel_client(lab, "debug_failure.ipynb")
    try:
        reply = client.execute_interactive(
            "", user_expressions={"names": f"sorted(n for n in {names!r} if n in globals())"}, timeout=30
        )
        found = reply["content"]["user_expressions"]["names"]["data"]["text/plain"]
    finally:
        client.stop_channels()
    assert found == repr(names)

    # resume through the command palette (the failure box's Resume button calls the same thing)
    page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook").click()
    page.keyboard.press("Control+Shift+c")
    page.locator(".lm-CommandPalette-input").fill("Resume Latest Failed Pipeline Run")
    page.keyboard.press("Enter")
    page.wait_for_function(
        "old => { const d = document.querySelector('#jupyter-flow-sidebar .jp-flow-rundetail');"
        " return d && d.dataset.run !== old; }", arg=run_id, timeout=30_000)
    page.wait_for_selector(f"{SIDEBAR} .jp-flow-rundetail[data-status='failed']", timeout=240_000)
    resumed = page.locator(f"{SIDEBAR} .jp-flow-rundetail").get_attribute("data-run")
    assert lab.api(f"jupyter-flow/api/runs/{resumed}")["origin_run"] == run_id

    # the history lists both runs; ticking them compares them side by side
    page.locator(f"{SIDEBAR} summary", has_text="History").click()
    for rid in (run_id, resumed):
        page.locator(f"{SIDEBAR} .jp-flow-runitem[data-run='{rid}'] input[type=checkbox]").check()
    page.wait_for_selector(f"{SIDEBAR} .jp-flow-compare", timeout=10_000)
    page.locator(f"{SIDEBAR} summary", has_text="Run detail").click()  # fold it to show the history
    shot(page, "6-history-compare")


def write_notebook(path, cells):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(source, metadata={"tags": tags}) for source, tags in cells]
    nbformat.write(nb, str(path))


def mark_step(page, cell_index, name, prev=()):
    page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell").nth(cell_index).locator(".jp-InputPrompt").click()
    # the cell toolbar of the active cell
    page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell.jp-mod-active [data-command='jupyter-flow:mark-step']").click()
    dialog = page.locator(".jp-Dialog")
    dialog.locator("input.jp-flow-stepname").fill(name)
    for p in prev:
        dialog.locator(f"input[type=checkbox][value='{p}']").check()
    dialog.locator(".jp-mod-accept").click()


def badges(page):
    cells = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell").all()
    return [c.locator(".jp-flow-badge").inner_text() if c.locator(".jp-flow-badge").count() else "" for c in cells]


def test_tag_cells_from_the_toolbar(lab, page):
    write_notebook(lab.root / "tagging.ipynb", [("x = 1", ["step:first"]), ("y = x + 1", []), ("z = y * 2", [])])
    open_notebook(page, lab, "tagging.ipynb")

    mark_step(page, 1, "second", prev=["first"])
    page.wait_for_function("() => document.querySelectorAll('.jp-flow-badge').length === 2")
    assert badges(page)[:2] == ["step first", "step second ← first"]

    mark_step(page, 2, "Not Valid")  # refused, then asked again
    page.locator(".jp-Dialog", has_text="Invalid step name").locator(".jp-Dialog-footer button").last.click()
    page.locator(".jp-Dialog input.jp-flow-stepname").fill("third")
    page.locator(".jp-Dialog .jp-mod-accept").click()

    mark_step(page, 0, "start")  # renaming rewrites the prev: tags that named it
    page.wait_for_function("() => [...document.querySelectorAll('.jp-flow-badge')].some(b => b.textContent.includes('← start'))")
    assert badges(page) == ["step start", "step second ← start", "step third"]
    page.keyboard.press("Control+s")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#jupyter-flow-sidebar .jp-flow-node')].map(n => n.dataset.step).join() === 'start,second,third'",
        timeout=20_000,
    )
    shot(page, "5-tagging")
    saved = json.loads((lab.root / "tagging.ipynb").read_text())
    assert [c["metadata"]["tags"] for c in saved["cells"]] == [["step:start"], ["step:second", "prev:start"], ["step:third"]]
