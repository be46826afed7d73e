"""The live widget in a real JupyterLab: run `jupyter_flow.run(...)` in a cell and watch its steps turn green."""
import nbformat
import pytest

from .conftest import ROOT, SHOTS

pytestmark = [pytest.mark.ui, pytest.mark.slow]

# Records every status class a step's label showed, in order (the widget updates in place).
WATCH = """() => {
  window.__seen = [];
  const note = () => document.querySelectorAll('.jp-flow-widget-status').forEach(n => {
    const key = [...n.classList]
      .filter(c => c.startsWith('jp-flow-widget-step-') || c.startsWith('jp-flow-widget-is-')).join(' ');
    if (!window.__seen.includes(key)) { window.__seen.push(key); }
  });
  new MutationObserver(note).observe(document.body, {subtree: true, childList: true, attributes: true});
}"""


def test_live_widget_steps_turn_green(lab, page):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        f"import jupyter_flow\nrun = jupyter_flow.run({str(ROOT / 'tests' / 'notebooks' / 'diamond.ipynb')!r})\n"
        "run.status")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(lab.root / "widget.ipynb"))
    page.goto(lab.page_url("widget.ipynb"))
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=60_000)
    page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=90_000)  # the kernel is connected
    page.evaluate(WATCH)
    page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell .jp-InputArea-editor").first.click()
    page.keyboard.press("Shift+Enter")
    page.wait_for_selector(".jp-InputPrompt:has-text('[*]'), .jp-InputPrompt:has-text('[1]')", timeout=60_000)
    try:
        page.wait_for_selector(".jp-flow-widget-status", timeout=60_000)  # the widget rendered
        page.wait_for_function("document.querySelectorAll('.jp-flow-widget-is-succeeded').length === 4",
                               timeout=240_000)
        page.wait_for_selector(".jp-OutputArea-output:has-text(\"'succeeded'\")", timeout=60_000)  # run returned
    finally:
        page.screenshot(path=str(SHOTS / "widget-lab.png"))
    seen = page.evaluate("window.__seen")
    for step in "abcd":
        order = [key.split()[-1].removeprefix("jp-flow-widget-is-") for key in seen
                 if f"jp-flow-widget-step-{step} " in key]
        assert order[-1] == "succeeded" and "running" in order, (step, order)
    colors = page.locator(".jp-flow-widget-is-succeeded").first.evaluate(
        "n => [n, ...n.querySelectorAll('*')].map(e => getComputedStyle(e).color)")
    assert "rgb(42, 157, 58)" in colors  # green (#2a9d3a)
