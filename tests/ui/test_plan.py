"""Before Run, the sidebar's DAG says what the run would do with each step (reuse or run, why on hover),
and the DAG fits its panel at the default width, when it opens and when the panel is resized."""
import time

import pytest

from .conftest import SHOTS
from .test_sidebar import (
    SIDEBAR,
    inside,
    low_contrast,
    node_boxes,
    open_notebook,
    run_and_wait,
    set_theme,
    split_units,
)

pytestmark = [pytest.mark.ui, pytest.mark.slow]

BADGES = """() => [...document.querySelectorAll('#jupyter-flow-sidebar .jp-flow-node')].map(n => {
  const b = n.querySelector('.jp-flow-plan');
  const r = e => { const x = e.getBoundingClientRect(); return [x.left, x.top, x.right, x.bottom]; };
  return {step: n.dataset.step, node: n.getAttribute('aria-label'),
          hover: n.querySelector(':scope > title').textContent,
          action: b && b.dataset.action, glyph: b && b.querySelector('text').textContent,
          title: b && b.querySelector('title').textContent, label: b && b.getAttribute('aria-label'),
          badge: b && r(b.querySelector('rect')), rect: r(n.querySelector(':scope > rect'))};
})"""


def badges(page):
    return page.evaluate(BADGES)


def wait_plan(page, actions: dict):
    """Until each named step's badge shows its action."""
    page.wait_for_function(
        """want => Object.entries(want).every(([step, action]) => document.querySelector(
             `#jupyter-flow-sidebar .jp-flow-node[data-step='${step}'] .jp-flow-plan[data-action='${action}']`))""",
        arg=actions, timeout=30_000)


def assert_matches_the_api(page, lab, query=""):
    planned = lab.api(f"jupyter-flow/api/plan?path=quickstart.ipynb{query}")["steps"]
    shown = {b["step"]: b for b in badges(page)}
    for step in planned:
        badge = shown[step["step"]]
        assert badge["action"] == step["action"], (badge, step)
        assert badge["glyph"] == {"run": "▶", "reuse": "✓"}[step["action"]], badge
        # the reason on hover (the badge's and the node's title) and for screen readers
        for text in (badge["title"], badge["label"], badge["hover"], badge["node"]):
            assert step["reason"] in text, (text, step)
        assert inside(badge["badge"], badge["rect"]), badge
    return planned


def assert_fits(page):
    view = node_boxes(page)
    panel = page.locator(SIDEBAR).bounding_box()
    panel = [panel["x"], panel["y"], panel["x"] + panel["width"], panel["y"] + panel["height"]]
    assert len(view["nodes"]) == 5
    assert all(inside(n["rect"], view["svg"]) and inside(n["rect"], panel) for n in view["nodes"]), (view, panel)
    assert all(inside(n["label"], n["rect"]) for n in view["nodes"]), view
    assert all(inside(e, view["svg"]) for e in view["edges"]), view
    assert all(n["font"] >= 11 for n in view["nodes"]), view
    return view


def shots(page, name):
    """Light and dark screenshots of the sidebar; no text under 4.5:1 in either theme, no time, duration or
    metric split across lines."""
    for theme in ("JupyterLab Dark", "JupyterLab Light"):
        set_theme(page, theme)
        assert low_contrast(page) == [], theme
        assert split_units(page) == [], theme
        suffix = "-dark" if "Dark" in theme else ""
        page.locator(f"{SIDEBAR} .jp-flow-dagbox").screenshot(path=str(SHOTS / f"{name}{suffix}-dag.png"))
        page.locator(SIDEBAR).screenshot(path=str(SHOTS / f"{name}{suffix}-sidebar.png"))


def drag_sidebar_edge(page, by):
    handle = page.locator("#jp-main-split-panel > .lm-SplitPanel-handle:not(.lm-mod-hidden)").first
    box = handle.bounding_box()
    page.mouse.move(box["x"] + 2, box["y"] + 300)
    page.mouse.down()
    page.mouse.move(box["x"] + 2 + by, box["y"] + 300, steps=5)
    page.mouse.up()


def wait_scale(page, compare, scale):
    page.wait_for_function(
        f"k => Number(document.querySelector('#jupyter-flow-sidebar .jp-flow-dag').dataset.scale) {compare} k",
        arg=scale, timeout=10_000)


def test_the_plan_on_a_dag_that_fits(lab, page):
    open_notebook(page, lab, "quickstart.ipynb")
    steps = ["load", "scale_features", "select_features", "train", "evaluate"]
    wait_plan(page, dict.fromkeys(steps, "run"))
    # at the default width, on opening: every node inside the panel, labels at least 11 px
    view = assert_fits(page)
    planned = assert_matches_the_api(page, lab)
    assert [s["step"] for s in planned] == steps
    assert page.locator(f"{SIDEBAR} .jp-flow-legend", has_text="will run").count() == 1
    # an edge a longer path implies (load -> evaluate beside load -> train -> evaluate) is not drawn;
    # the step's tooltip says what it carries
    edges = {e.get_attribute("data-edge") for e in page.locator(f"{SIDEBAR} .jp-flow-edge").all()}
    assert "load->evaluate" not in edges and {"load->scale_features", "train->evaluate"} <= edges, edges
    assert "also y_test from load" in next(b["hover"] for b in badges(page) if b["step"] == "evaluate")
    shots(page, "10-plan-before-run")

    # resized: wider draws it bigger, narrower again fits again, without pressing "fit"
    drag_sidebar_edge(page, 300)
    wait_scale(page, ">", view["scale"])
    assert_fits(page)
    page.locator(f"{SIDEBAR} .jp-flow-dagbox").screenshot(path=str(SHOTS / "10-plan-wide-dag.png"))
    drag_sidebar_edge(page, -300)
    wait_scale(page, "<=", view["scale"] + 0.001)
    assert_fits(page)

    # after a run: every step would be reused, from that run
    run_id = run_and_wait(page, f"{SIDEBAR} .jp-flow-rundetail[data-status='succeeded']")
    wait_plan(page, dict.fromkeys(steps, "reuse"))
    planned = assert_matches_the_api(page, lab)
    assert {s["origin"] for s in planned} == {run_id}
    assert_fits(page)
    shots(page, "10-plan-after-run")

    # a parameter changed in the Run form: the plan says which steps it reruns, and why
    page.locator(f"{SIDEBAR} input[name='n_estimators']").fill("60")
    wait_plan(page, {"load": "reuse", "scale_features": "reuse", "select_features": "reuse", "train": "run"})
    planned = assert_matches_the_api(page, lab, "&parameters=%7B%22n_estimators%22%3A%2060%7D")
    assert "n_estimators" in next(s["reason"] for s in planned if s["step"] == "train")
    page.locator(f"{SIDEBAR} input[name='n_estimators']").fill("50")
    wait_plan(page, dict.fromkeys(steps, "reuse"))

    # an edit, before it is saved: the step whose code changed would run (Run saves first), the
    # ones before it are still reused; saved, the plan is the saved notebook's
    cell = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell", has_text="ensemble_proba =").first
    cell.locator(".cm-content").click()
    page.keyboard.press("Control+End")
    started = time.monotonic()
    page.keyboard.type("\nprint('edited')")
    page.keyboard.press("Escape")
    wait_plan(page, {"train": "reuse", "evaluate": "run"})
    print(f"plan of the unsaved edit shown {time.monotonic() - started:.2f} s after typing began")
    assert page.evaluate("() => window.jupyterapp.shell.currentWidget.context.model.dirty")
    reason = next(b["title"] for b in badges(page) if b["step"] == "evaluate")
    started = time.monotonic()
    page.keyboard.press("Control+s")
    page.wait_for_function("() => !window.jupyterapp.shell.currentWidget.context.model.dirty", timeout=20_000)
    print(f"saved in {time.monotonic() - started:.2f} s")
    assert_matches_the_api(page, lab)
    assert next(b["title"] for b in badges(page) if b["step"] == "evaluate") == reason
    shots(page, "10-plan-after-edit")
