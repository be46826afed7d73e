"""A person's path through the sidebar: see the DAG, run it, watch it turn green, debug a failure."""
import json
from datetime import datetime
from pathlib import Path

import pytest
from jupyter_client import BlockingKernelClient

from .conftest import SHOTS

pytestmark = [pytest.mark.ui, pytest.mark.slow]

SIDEBAR = "#jupyter-flow-sidebar"
NODES = f"{SIDEBAR} .jp-flow-node"
CELLS = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell"  # the cells of the notebook in view
DAG_SCALE_ABOVE = "k => Number(document.querySelector('#jupyter-flow-sidebar .jp-flow-dag').dataset.scale) > k"

# Records when each task's row in the run detail first showed each status (browser clock = this machine's).
WATCH_TASKS = """() => {
  window.__flowSeen = {};
  const note = () => document.querySelectorAll('#jupyter-flow-sidebar .jp-flow-taskrow').forEach(n => {
    const key = n.dataset.step + '/' + n.dataset.index + ':' + n.dataset.status;
    if (!(key in window.__flowSeen)) { window.__flowSeen[key] = Date.now(); }
  });
  new MutationObserver(note).observe(document.body,
    {subtree: true, childList: true, attributes: true, attributeFilter: ['data-status']});
  note();
}"""


def push_lags(page, lab, run_id) -> dict:
    """Per task, ms from the task's recorded end to the browser showing it ended."""
    seen = page.evaluate("() => window.__flowSeen")
    run = lab.api(f"jupyter-flow/api/runs/{run_id}")
    return {f"{t['step']}/{t['index']}": seen[f"{t['step']}/{t['index']}:{t['status']}"]
            - datetime.fromisoformat(t["ended"]).timestamp() * 1000 for t in run["tasks"]}


CONTRAST = (Path(__file__).parent / "contrast.js").read_text()


def low_contrast(page, selectors=f"{SIDEBAR}, .jp-flow-runpage, .jp-flow-badge, .jp-flow-gutter, .jp-toast-message"):
    """Every text on a coloured background under `selectors` below 4.5:1 (WCAG AA), from computed styles."""
    checked = page.evaluate(CONTRAST, selectors)
    assert any(c["coloured"] for c in checked), "no text on a coloured background was found to check"
    return [c for c in checked if c["coloured"] and c["ratio"] < 4.5]


# Each time (04:25:20 PM), duration (2.4 s, 1 min 5 s) and metric (auc = 0.9918) under `root` that a line break
# splits in two (code and logs, in <pre>, are left out).
SPLIT_UNITS = """root => {
  const unit = /\\d\\d:\\d\\d(:\\d\\d)?\\s[AP]M|\\d+(\\.\\d+)?\\s(min|s)\\b|\\w+ = [-+.\\deE]+/g;
  const split = [];
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (n.parentElement.closest('pre')) continue;
    for (const m of n.textContent.matchAll(unit)) {
      const range = document.createRange();
      range.setStart(n, m.index);
      range.setEnd(n, m.index + m[0].length);
      const tops = new Set([...range.getClientRects()].filter(r => r.width > 0).map(r => Math.round(r.top)));
      if (tops.size > 1) split.push(m[0]);
    }
  }
  return split;
}"""


def split_units(page):
    return page.locator(SIDEBAR).evaluate(SPLIT_UNITS)


def run_head_buttons(page, scope=SIDEBAR):
    """The buttons beside a run's status and id ("↗ page", Resume, Pin): font size and vertical middle."""
    return page.locator(f"{scope} .jp-flow-runhead").first.evaluate("""head => [...head.querySelectorAll('button')]
      .map(b => { const r = b.getBoundingClientRect();
                  return {text: b.textContent.trim(), size: getComputedStyle(b).fontSize, top: r.top,
                          bottom: r.bottom, middle: (r.top + r.bottom) / 2}; })""")


def misaligned(buttons):
    """Buttons of another font size than the first, or, on one row, whose middles differ by more than 1 px."""
    return [(a["text"], b["text"]) for a in buttons for b in buttons if a is not b and (
        a["size"] != b["size"] or (a["top"] < b["bottom"] and b["top"] < a["bottom"]
                                   and abs(a["middle"] - b["middle"]) > 1))]


def p95(values):
    ordered = sorted(values)
    return ordered[max(0, round(0.95 * len(ordered)) - 1)]


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
    # the form: whole parameter names, floats as Python writes them, a real dropdown for the executor
    names = page.locator(f"{SIDEBAR} .jp-flow-paramname")
    assert "n_estimators" in names.all_inner_texts()
    assert all(n.evaluate("e => e.scrollWidth <= e.clientWidth") for n in names.all())
    assert page.locator(f"{SIDEBAR} input[name='C']").input_value() == "1.0"
    assert page.locator(f"{SIDEBAR} input[name='test_size']").input_value() == "0.25"
    # a value longer than its field can be read whole on hover
    fields = page.locator(f"{SIDEBAR} input.jp-mod-styled").all()
    assert fields and all(i.get_attribute("title") == i.input_value() for i in fields)
    page.locator(f"{SIDEBAR} .jp-HTMLSelect select").select_option("local")
    shot(page, "1-quickstart-dag")
    # the default sidebar: long names in two lines, the whole DAG in view; a wider sidebar draws it bigger
    view = node_boxes(page)
    assert all(n["font"] >= 11 for n in view["nodes"]), view
    assert all(inside(n["rect"], view["svg"]) for n in view["nodes"]), view
    widen_sidebar(page)
    page.wait_for_function(DAG_SCALE_ABOVE,
                           arg=view["scale"], timeout=10_000)
    shot(page, "1-quickstart-dag-wide")

    page.evaluate(WATCH_TASKS)
    responses = []
    page.on("response", lambda r: "/jupyter-flow/api/" in r.url and responses.append((r.url.split("?")[0], r.status)))
    run_id = run_and_wait(page, f"{SIDEBAR} .jp-flow-rundetail[data-status='succeeded']")
    page.wait_for_function(
        "n => document.querySelectorAll(\"#jupyter-flow-sidebar .jp-flow-node[data-status='succeeded']\").length === n",
        arg=len(steps), timeout=10_000,
    )
    shot(page, "2-quickstart-succeeded")
    # the metrics line wraps between metrics, never inside one ("forest_accuracy" | "= 0.9371"), nor a time or duration
    assert page.locator(f"{SIDEBAR} .jp-flow-metrics .jp-flow-keep").count() == 4
    assert split_units(page) == []
    assert misaligned(run_head_buttons(page)) == []

    # pushed, not polled: the browser saw each step's end soon after the task recorded it
    lags = push_lags(page, lab, run_id)
    print("ms from task end to the browser showing it:", json.dumps(lags), "p95", p95(lags.values()))
    assert p95(lags.values()) < 300, lags
    assert not [r for r in responses if r[1] == 304], responses  # no revalidation polls
    assert len([r for r in responses if r[0].endswith(f"/runs/{run_id}")]) <= 1, responses

    # a notification says the run ended, with a link to its page
    toast = page.locator(".Toastify__toast", has_text=run_id)
    toast.wait_for(timeout=20_000)
    toast.get_by_role("button", name="Open run").click()
    runpage = page.locator(".jp-flow-runpage")
    runpage.locator(f".jp-flow-rundetail[data-run='{run_id}'][data-status='succeeded']").wait_for(timeout=20_000)
    assert runpage.locator(".jp-flow-node[data-status='succeeded']").count() == len(steps)
    table = runpage.locator(".jp-flow-values", has_text="parameters").first
    table.wait_for(timeout=20_000)  # shown once the notebook's DAG says the parameters' types
    params = table.inner_text()
    assert "n_estimators\t50" in params and "C\t1.0" in params and "test_size\t0.25" in params, params
    runpage.locator(".jp-flow-taskrow[data-step='evaluate']").click()
    runpage.locator(".jp-flow-log", has_text="accuracy").wait_for(timeout=20_000)
    page.screenshot(path=str(SHOTS / "2-run-page-lab.png"))
    # the page's tab cuts "Run <id>" short; its tooltip has the whole id
    assert run_id in page.locator(".lm-TabBar-tab.lm-mod-current", has_text="Run ").first.get_attribute("title")
    # the sidebar, the notification's watcher and the run page share one stream of the run
    assert len([r for r in responses if r[0].endswith(f"/runs/{run_id}/events")]) == 1, responses

    for theme in ("JupyterLab Dark", "JupyterLab Light"):
        set_theme(page, theme)
        assert low_contrast(page) == [], theme
        if "Dark" in theme:
            shot(page, "2-quickstart-succeeded-dark")


def set_theme(page, name):
    page.locator(".lm-MenuBar-itemLabel", has_text="Settings").click()
    page.locator(".lm-Menu-itemLabel", has_text="Theme").first.hover()
    page.locator(".lm-Menu-itemLabel").get_by_text(name, exact=True).click()
    light = "false" if "Dark" in name else "true"
    page.wait_for_selector(f"body[data-jp-theme-light='{light}']", state="attached", timeout=20_000)
    # the theme's stylesheet has landed when the sidebar's background turned dark (or light)
    page.wait_for_function(
        """dark => { const c = getComputedStyle(document.querySelector('#jupyter-flow-sidebar')).backgroundColor;
           const [r, g, b] = c.match(/[0-9.]+/g).map(Number); return ((r + g + b) / 3 < 128) === dark; }""",
        arg=light == "false", timeout=20_000)


def wait_saved(page):
    """Until the notebook in view has no unsaved change (its save has been written)."""
    page.wait_for_function("() => window.jupyterapp.shell.currentWidget.context.model.dirty === false",
                           timeout=20_000)


def kernel_client(lab, notebook):
    session = next(s for s in lab.api("api/sessions") if s["path"] == notebook)
    client = BlockingKernelClient(connection_file=str(lab.runtime / f"kernel-{session['kernel']['id']}.json"))
    client.load_connection_file()
    client.start_channels()
    client.wait_for_ready(timeout=60)
    return client


# Whether some value preview scrolls, and each preview whose visible height is not a whole number of lines.
CUT_PREVIEWS = """box => { const previews = [...box.querySelectorAll('.jp-flow-preview')];
  const lines = e => e.clientHeight / parseFloat(getComputedStyle(e).lineHeight);
  return {scrolling: previews.some(e => e.scrollHeight > e.clientHeight + 1),
          cut: previews.filter(e => Math.abs(lines(e) - Math.round(lines(e))) > 0.05)
            .map(e => `${lines(e).toFixed(2)} lines: ${e.textContent.slice(0, 30)}`)}; }"""


# On how many lines the first `word` under an element is drawn.
SPLIT_WORD = """(root, word) => {
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const at = n.textContent.indexOf(word);
    if (at < 0) continue;
    const range = document.createRange();
    range.setStart(n, at);
    range.setEnd(n, at + word.length);
    return new Set([...range.getClientRects()].filter(r => r.width > 0).map(r => Math.round(r.top))).size;
  }
  return 0;
}"""


# px from the left of a task's detail to the start of a button's label in it.
LABEL_INDENT = """b => { const r = document.createRange(); r.selectNodeContents(b);
  return r.getBoundingClientRect().left - b.closest('.jp-flow-taskdetail').getBoundingClientRect().left; }"""


def test_debug_a_failed_step(lab, page):
    open_notebook(page, lab, "debug_failure.ipynb")
    run_id = run_and_wait(page, f"{SIDEBAR} .jp-flow-rundetail[data-status='failed']")
    failed = page.locator(f"{NODES}[data-status='failed']")
    step = failed.first.get_attribute("data-step")
    failed.first.click()
    page.wait_for_selector(f"{SIDEBAR} .jp-flow-failure", timeout=10_000)
    # the failure box: message, the cell as it ran, the traceback, the variables of the snapshot
    box = page.locator(f"{SIDEBAR} .jp-flow-failure")
    box.locator(".jp-flow-traceback", has_text="ValueError").wait_for(timeout=10_000)
    snapshot = box.locator(".jp-flow-values", has_text="variables at the failure")
    snapshot.wait_for(timeout=10_000)
    assert "rows" in snapshot.locator("th").all_inner_texts()
    frames = box.locator(".jp-flow-frames")  # the failing frames, with their locals
    frames.wait_for(timeout=10_000)
    assert "in <module>" in frames.inner_text()
    # clicking the node scrolled the notebook to the step's first cell and highlighted its cells
    highlighted = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell.jp-flow-highlight")
    highlighted.first.wait_for(timeout=10_000)
    assert "for line_no, row in enumerate(rows" in highlighted.first.inner_text()
    shot(page, "3-debug-failed")
    assert split_units(page) == []  # "04:25:20 PM 2.4 s" at 250 px: never "PM" or "s" alone on a line
    # a long value's preview shows whole lines, then scrolls (its fifth line was cut in half)
    assert box.evaluate(CUT_PREVIEWS) == {"scrolling": True, "cut": []}
    assert misaligned(run_head_buttons(page)) == []

    page.locator(f"{SIDEBAR} .jp-flow-load").click()
    message = page.locator(f"{SIDEBAR} .jp-flow-failure .jp-flow-message")
    message.filter(has_text="Loaded into kernel").wait_for(timeout=60_000)
    loaded = message.inner_text()
    shot(page, "4-debug-loaded")

    # "Insert failing cell" adds a cell the pipeline skips: the DAG does not change on save
    cells = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell")
    count = cells.count()
    edges = sorted(e.get_attribute("data-edge") for e in page.locator(f"{SIDEBAR} .jp-flow-edge").all())
    page.locator(f"{SIDEBAR} .jp-flow-insert").click()
    page.wait_for_function(f"n => document.querySelectorAll('{CELLS}').length === n",
                           arg=count + 1)
    inserted = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell.jp-mod-active")
    inserted.locator(".jp-flow-badge", has_text="skip").wait_for(timeout=10_000)
    page.keyboard.press("Escape")
    page.keyboard.press("Control+s")
    wait_saved(page)
    saved = json.loads((lab.root / "debug_failure.ipynb").read_text())
    assert [c["metadata"].get("tags") for c in saved["cells"] if "float(row" in "".join(c["source"])] == [
        ["step:clean"], ["skip"]]
    assert sorted(e.get_attribute("data-edge") for e in page.locator(f"{SIDEBAR} .jp-flow-edge").all()) == edges

    # "Open executed notebook" starts at the left, as the text around it does
    assert page.locator(f"{SIDEBAR} .jp-flow-open").evaluate(LABEL_INDENT) <= 16
    page.locator(f"{SIDEBAR} .jp-flow-open").click()  # the executed step notebook, read-only
    viewer = page.locator(".jp-flow-viewer")
    viewer.locator(".jp-OutputArea-output", has_text="ValueError").first.wait_for(timeout=20_000)
    # rendered as a notebook (prompts, highlighted code), without the generated cells
    assert viewer.locator(".jp-InputPrompt", has_text="[").count() >= 2
    assert viewer.locator(".cm-content").count() >= 2
    assert "_jf." not in viewer.inner_text() and "An Exception was encountered" not in viewer.inner_text()
    assert viewer.locator(".cm-editor").count() >= 2 and viewer.locator(".cm-editor:not(.jp-mod-readOnly)").count() == 0
    code = viewer.locator(".cm-content").last
    before = code.inner_text()
    code.click()
    page.keyboard.type("typed")
    assert code.inner_text() == before
    page.screenshot(path=str(SHOTS / "5-executed-notebook-lab.png"))
    # the traceback's lines whole, as in a terminal (in the half-width viewer it read "Traceba" | "ck")
    assert viewer.locator(".jp-OutputArea-output pre", has_text="Traceback").first.evaluate(SPLIT_WORD,
                                                                                           "Traceback") == 1
    # its tab cuts "clean · <run id>" short; the tooltip has all of it
    assert page.locator(".lm-TabBar-tab", has_text=f"{step} · ").get_attribute("title") == f"{step} · {run_id}"

    artifacts = lab.api(f"jupyter-flow/api/runs/{run_id}/tasks/{step}/0/artifacts")
    names = sorted(artifacts["failure"]["variables"])
    assert names and all(n in loaded for n in names)
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
    # rows and columns say when and with what, not only ids
    row = page.locator(f"{SIDEBAR} .jp-flow-runitem[data-run='{run_id}']")
    assert "strict=True" in row.inner_text() and "clean:" in row.inner_text()
    headers = page.locator(f"{SIDEBAR} .jp-flow-compare thead th").all_inner_texts()[1:]
    assert all(h and run_id not in h and ":" in h for h in headers), headers
    row.click()  # the selected history row and the highlighted compare cells stay readable
    page.locator(f"{SIDEBAR} .jp-flow-runitem.jp-mod-selected").wait_for()
    for theme in ("JupyterLab Dark", "JupyterLab Light"):
        set_theme(page, theme)
        assert low_contrast(page) == [], theme
        shot(page, "6-history-compare" + ("-dark" if "Dark" in theme else ""))
        compare = page.locator(f"{SIDEBAR} .jp-flow-compare")  # the table under the history, whole at 250 px
        compare.scroll_into_view_if_needed()
        shot(page, "6-history-compare-table" + ("-dark" if "Dark" in theme else ""))
        assert compare.evaluate(OVERFLOWING) == [] and split_units(page) == [], theme


def write_notebook(path, cells):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(source, metadata={"tags": tags}) for source, tags in cells]
    nbformat.write(nb, str(path))


def mark_step(page, cell_index, name, prev=()):
    page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell").nth(cell_index).locator(".jp-InputPrompt").click()
    # the cell toolbar of the active cell
    page.locator(f"{CELLS}.jp-mod-active [data-command='jupyter-flow:mark-step']").click()
    dialog = page.locator(".jp-Dialog")
    dialog.locator("input.jp-flow-stepname").fill(name)
    for p in prev:
        dialog.locator(f"input[type=checkbox][value='{p}']").check()
    dialog.locator(".jp-mod-accept").click()


def badges(page):
    cells = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell").all()
    return [c.locator(".jp-flow-badge").inner_text() if c.locator(".jp-flow-badge").count() else "" for c in cells]


def write_secret_failure(path: Path) -> None:
    """A step that reads a token from its environment and fails in a helper that holds it (the token
    is in a file beside the notebook, so its value is in no cell's source)."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell("import os", metadata={"tags": ["imports"]}),
        nbformat.v4.new_code_cell("rows = [1, 2, 3]", metadata={"tags": ["step:load"]}),
        nbformat.v4.new_code_cell(
            "os.environ.setdefault('SERVICE_API_TOKEN', open('token.txt').read().strip())  # as a login would\n"
            "token = os.environ['SERVICE_API_TOKEN']\n"
            "def call(url, key):\n    count = len(rows)\n    raise ConnectionError(f'cannot reach {url}')\n"
            "call('https://service.invalid', token)", metadata={"tags": ["step:call"]}),
    ]
    nbformat.write(nb, str(path))
    (path.parent / "token.txt").write_text("tok-9f8e7d6c5b4a3f2e1d0c\n")


# Each part of the failure box wider than its own box (text cut off or scrolled sideways), or reaching past the
# sidebar's right edge (cut off by the sidebar): tag, class and the start of its text.
OVERFLOWING = """box => {
  const sidebar = document.querySelector('#jupyter-flow-sidebar');
  const right = sidebar.getBoundingClientRect().right;
  const parts = [sidebar, box, ...box.querySelectorAll(
    'summary, caption, th, td, div, li, pre, code, button, button > *')];
  const wide = e => getComputedStyle(e).display !== 'inline' && e.scrollWidth > e.clientWidth;
  return parts.filter(e => wide(e) || e.getBoundingClientRect().right > right + 0.5)
    .map(e => `${e.tagName}.${e.className}: ${e.scrollWidth} > ${e.clientWidth} or right edge `
      + `${Math.round(e.getBoundingClientRect().right)} > ${Math.round(right)}: ${e.textContent.slice(0, 40)}`);
}"""


# One line high (a wrapped line of dashes was three), and as wide as its box, not wider.
ONE_LINE = """e => { const r = e.getBoundingClientRect(), box = e.parentElement.getBoundingClientRect();
  return r.height < 1.6 * parseFloat(getComputedStyle(e).fontSize) && r.right <= box.right + 0.5; }"""


def test_the_failure_box_shows_the_frames_and_what_was_withheld_as_a_secret(lab, page):
    write_secret_failure(lab.root / "secret_failure.ipynb")
    open_notebook(page, lab, "secret_failure.ipynb")
    run_and_wait(page, f"{SIDEBAR} .jp-flow-rundetail[data-status='failed']")
    page.locator(f"{NODES}[data-step='call']").click()
    box = page.locator(f"{SIDEBAR} .jp-flow-failure")
    frames = box.locator(".jp-flow-frames")
    frames.wait_for(timeout=20_000)
    helper = frames.locator(".jp-flow-frame[data-function='call']")
    text = helper.inner_text()
    assert "line 5, in call" in text and "count" in text and "3" in text, text  # where, function, line, locals
    assert "[secret removed]" in text and "tok-9f8e7d6c5b4a3f2e1d0c" not in text, text  # the key argument
    # a line between two frames: the helper's locals are not read as <module>'s
    assert helper.evaluate("e => e.previousElementSibling.matches('.jp-flow-frame') && "
                           "getComputedStyle(e).borderTopStyle === 'dashed' && e.offsetHeight > 0")
    withheld = box.locator(".jp-flow-withheld")
    assert "token" in withheld.inner_text() and "SERVICE_API_TOKEN" in withheld.inner_text()
    assert "tok-9f8e7d6c5b4a3f2e1d0c" not in page.locator(SIDEBAR).inner_text()
    # IPython's line of dashes above the traceback, in the box and in the log: one line clipped at the box's width
    # (it wrapped onto 3 lines at 250 px), the whole line still there to copy, no other text in it
    rules = [box.locator(".jp-flow-traceback .jp-flow-rule").first,
             page.locator(f"{SIDEBAR} .jp-flow-log .jp-flow-rule").first]
    log = page.locator(f"{SIDEBAR} .jp-flow-log")
    log.locator(".jp-flow-rule").wait_for(timeout=20_000)
    assert not log.inner_text().startswith("\n")  # no blank line at its top
    for rule in rules:
        rule.wait_for(timeout=20_000)
        assert set(rule.text_content().strip()) == {"-"} and len(rule.text_content().strip()) >= 70
        assert rule.evaluate(ONE_LINE), rule.evaluate("e => e.getBoundingClientRect().height")
    assert box.locator(".jp-flow-traceback pre").inner_text().count("ConnectionError") >= 2  # the text after it
    for theme in ("JupyterLab Dark", "JupyterLab Light"):
        set_theme(page, theme)
        assert low_contrast(page) == [], theme
        box.evaluate("e => e.scrollIntoView({block: 'start'})")  # the box's top: error, code, frames
        shot(page, "11-failure-frames-and-secrets" + ("-dark" if "Dark" in theme else ""))
        box.locator(".jp-flow-actions").scroll_into_view_if_needed()  # its lower half: secrets and buttons
        shot(page, "11-failure-actions" + ("-dark" if "Dark" in theme else ""))
        # at the default sidebar width every label, header and value reads whole, none cut off
        assert box.evaluate(OVERFLOWING) == [], theme
        assert split_units(page) == [], theme
        assert all(rule.evaluate(ONE_LINE) for rule in rules), theme


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
    page.wait_for_function(
        "() => [...document.querySelectorAll('.jp-flow-badge')].some(b => b.textContent.includes('← start'))")
    assert badges(page) == ["step start", "step second ← start", "step third"]
    # the DAG follows the edits before any save
    page.wait_for_function(
        "() => [...document.querySelectorAll('#jupyter-flow-sidebar .jp-flow-node')].map(n => n.dataset.step).join()"
        " === 'start,second,third'",
        timeout=20_000,
    )
    assert json.loads((lab.root / "tagging.ipynb").read_text())["cells"][0]["metadata"]["tags"] == ["step:first"]
    # every code cell shows its step; an untagged cell shows the step it joins
    page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell").nth(2).locator(".jp-InputPrompt").click()
    page.keyboard.press("b")  # a new untagged cell below "third"
    page.keyboard.press("Enter")
    page.keyboard.type("w = z + 1")
    page.keyboard.press("Escape")
    page.wait_for_function(
        f"() => [...document.querySelectorAll('{CELLS}')].map(c => c.dataset.jpFlowStep).join()"
        " === 'start,second,third,third'",
        timeout=20_000)
    joined = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell").nth(3).locator(".jp-flow-gutter")
    assert joined.inner_text() == "third"
    page.keyboard.press("Control+s")
    wait_saved(page)  # (the dirty mark is on the tab, not in the panel: waiting for it to go passed at once)
    shot(page, "5-tagging")
    saved = json.loads((lab.root / "tagging.ipynb").read_text())
    assert [c["metadata"].get("tags", []) for c in saved["cells"]] == [
        ["step:start"], ["step:second", "prev:start"], ["step:third"], []]


def node_boxes(page):
    """Each node's rect and label, and each edge, in screen pixels; and the drawing's box."""
    return page.evaluate("""() => {
      const box = e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
      const svg = document.querySelector('#jupyter-flow-sidebar .jp-flow-dag');
      return {svg: box(svg), scale: Number(svg.dataset.scale),
              nodes: [...svg.querySelectorAll('.jp-flow-node')].map(n => ({step: n.dataset.step,
                 rect: box(n.querySelector('rect')), label: box(n.querySelector('.jp-flow-label')),
                 font: n.querySelector('.jp-flow-label').getBoundingClientRect().height})),
              edges: [...svg.querySelectorAll('.jp-flow-edge')].map(box)};
    }""")


def widen_sidebar(page, by=300):
    handle = page.locator("#jp-main-split-panel > .lm-SplitPanel-handle:not(.lm-mod-hidden)").first
    box = handle.bounding_box()
    page.mouse.move(box["x"] + 2, box["y"] + 300)
    page.mouse.down()
    page.mouse.move(box["x"] + by, box["y"] + 300, steps=5)
    page.mouse.up()


def inside(inner, outer, slack=1):
    return (inner[0] >= outer[0] - slack and inner[1] >= outer[1] - slack
            and inner[2] <= outer[2] + slack and inner[3] <= outer[3] + slack)


def test_a_dag_you_can_read(lab, page):
    open_notebook(page, lab, "sweep.ipynb")
    page.evaluate(WATCH_TASKS)
    run_id = run_and_wait(page, f"{SIDEBAR} .jp-flow-rundetail[data-status='succeeded']")
    lags = push_lags(page, lab, run_id)  # 10 tasks, 8 of them at once
    print("ms from task end to the browser showing it:", json.dumps(lags), "p95", p95(lags.values()))
    assert p95(lags.values()) < 300, lags
    page.locator(f"{SIDEBAR} .jp-flow-node[data-step='train']", has_text="8/8").wait_for(timeout=20_000)
    view = node_boxes(page)
    # fitted: labels at least 11 px, every label inside its node, every node and edge inside the drawing
    assert all(n["font"] >= 11 for n in view["nodes"]), view
    assert all(inside(n["label"], n["rect"]) for n in view["nodes"]), view
    assert all(inside(n["rect"], view["svg"]) for n in view["nodes"])
    assert all(inside(e, view["svg"]) for e in view["edges"])
    # status is a glyph as well as a colour; a legend says which is which
    assert page.locator(f"{SIDEBAR} .jp-flow-node[data-step='train'] .jp-flow-glyph").text_content() == "✓"
    assert "succeeded" in page.locator(f"{SIDEBAR} .jp-flow-legend").inner_text()
    shot(page, "7-sweep-dag-narrow")

    # zoom in, zoom out, fit
    fit = float(page.locator(f"{SIDEBAR} .jp-flow-dag").get_attribute("data-scale"))
    page.locator(f"{SIDEBAR} .jp-flow-zoomin").click()
    page.wait_for_function(DAG_SCALE_ABOVE, arg=fit)
    page.locator(f"{SIDEBAR} .jp-flow-fit").click()
    page.wait_for_function("k => document.querySelector('#jupyter-flow-sidebar .jp-flow-dag').dataset.scale === k",
                           arg=f"{fit:.3f}")
    # keyboard: Tab reaches a node, Enter chooses it (and the notebook scrolls to its first cell)
    page.locator(f"{SIDEBAR} .jp-flow-fit").focus()
    page.keyboard.press("Tab")
    focused = page.evaluate("() => document.activeElement.dataset.step")
    assert focused == "prepare", focused
    page.keyboard.press("Enter")
    page.locator(f"{SIDEBAR} .jp-flow-node[data-step='prepare'][aria-pressed='true']").wait_for()
    page.locator(f"{CELLS}.jp-flow-highlight", has_text="load_digits()").wait_for()
    assert low_contrast(page) == []


def test_run_saves_first_and_follows_a_rename(lab, page):
    write_notebook(lab.root / "Untitled.ipynb", [("x = 1", ["step:first"]), ("y = x + 1", ["step:second"])])
    open_notebook(page, lab, "Untitled.ipynb")
    # an unsaved edit: Run saves first, so the run fails on it
    cell = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell").nth(1)
    cell.locator(".cm-content").click()
    page.keyboard.press("End")
    page.keyboard.type("\nraise RuntimeError('unsaved edit')")
    page.keyboard.press("Escape")
    run_and_wait(page, f"{SIDEBAR} .jp-flow-rundetail[data-status='failed']")
    page.locator(f"{SIDEBAR} .jp-flow-node[data-step='second'][data-status='failed']").click()
    page.locator(f"{SIDEBAR} .jp-flow-failure", has_text="unsaved edit").wait_for(timeout=10_000)

    # a rename (as JupyterLab's first save of an Untitled notebook does): the sidebar follows it
    page.evaluate("() => window.jupyterapp.shell.currentWidget.context.rename('renamed.ipynb')")
    page.locator(f"{SIDEBAR} .jp-flow-title", has_text="renamed").wait_for(timeout=20_000)
    page.locator(f"{SIDEBAR} .jp-flow-run-button").wait_for()
    assert page.locator(f"{SIDEBAR} .jp-flow-message").count() == 0


def test_a_running_steps_log_and_time(lab, page):
    write_notebook(lab.root / "printer.ipynb", [
        ("import time", ["imports"]),
        ("for i in range(30):\n    print('tick', i, flush=True)\n    time.sleep(0.5)", ["step:talk"]),
    ])
    open_notebook(page, lab, "printer.ipynb")
    run_and_wait(page, f"{SIDEBAR} .jp-flow-node[data-step='talk'][data-status='running']")
    page.locator(f"{SIDEBAR} .jp-flow-node[data-step='talk']").click()
    log = page.locator(f"{SIDEBAR} .jp-flow-log[data-status='running']")
    log.filter(has_text="tick 2").wait_for(timeout=60_000)  # printed while the step still runs
    duration = page.locator(f"{SIDEBAR} .jp-flow-taskrow[data-step='talk'] .jp-flow-duration")
    first = duration.inner_text()
    page.wait_for_function("([sel, old]) => { const d = document.querySelector(sel);"
                           " return d && d.textContent && d.textContent !== old; }",
                           arg=[f"{SIDEBAR} .jp-flow-taskrow[data-step='talk'] .jp-flow-duration", first])
    shot(page, "8-live-log")
    page.locator(f"{SIDEBAR} .jp-flow-cancel").click()
    page.wait_for_selector(f"{SIDEBAR} .jp-flow-rundetail[data-status='cancelled']", timeout=60_000)
