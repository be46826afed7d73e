"""The run history at team size: 10,000 runs by 20 users in one store (tests/ui/test_team_history.py
builds it through the records layer: 9,000 runs of the quickstart flow, one in 13 failed).

* REST: GET /jupyter-flow/api/runs (the sidebar's call) for the history's filters, first page of 50,
  wall clock of the request on a running `jupyter lab`, median of --repeat after a warm-up (which
  also writes the run index, as the first listing of a store in use has).
* Browser: a real `jupyter lab` and chromium (Playwright); ms from the click (or choice) that changes
  the history's filter or page to the list showing the new query's runs.

    python bench/team_history.py [--repeat 5]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

QUERIES = {
    "mine": "user={me}",
    "everyone": "",
    "one colleague (user07)": "user=user07",
    "status failed, everyone": "status=failed",
    "user07, page 2": "user=user07&offset=50",
    "user07 and failed (34 runs match: every run of the flow is read)": "user=user07&status=failed",
}


def rest(lab, me: str, repeat: int) -> dict[str, float]:
    out = {}
    for name, query in QUERIES.items():
        path = f"jupyter-flow/api/runs?flow=quickstart&limit=50&{query.format(me=me)}"
        lab.api(path)
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            lab.api(path)
            times.append((time.perf_counter() - t) * 1000)
        out[name] = median(times)
    return out


def browser(lab, repeat: int) -> dict[str, list[float]]:
    from playwright.sync_api import sync_playwright
    from ui.conftest import CHROMIUM, CHROMIUM_ARGS
    from ui.test_sidebar import SIDEBAR, open_notebook
    from ui.test_team_history import WATCH_HISTORY, change_history

    times: dict[str, list[float]] = {}
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = b.new_context(viewport={"width": 1400, "height": 900}).new_page()
        open_notebook(page, lab, "quickstart.ipynb")
        page.locator(f"{SIDEBAR} summary", has_text="History").click()
        page.locator(f"{SIDEBAR} .jp-flow-runlist[aria-busy='false'] .jp-flow-runitem").first.wait_for(timeout=30_000)
        page.evaluate(WATCH_HISTORY)
        user = page.locator(f"{SIDEBAR} .jp-flow-userfilter")
        status = page.locator(f"{SIDEBAR} .jp-flow-statusfilter")
        name = page.locator(f"{SIDEBAR} .jp-flow-username")
        for _ in range(repeat):
            times.setdefault("everyone", []).append(change_history(page, lambda: user.select_option("everyone")))
            user.select_option("user")
            name.fill("user07")
            times.setdefault("one colleague (user07)", []).append(change_history(page, lambda: name.press("Enter")))
            times.setdefault("older › (page 2)", []).append(
                change_history(page, lambda: page.locator(f"{SIDEBAR} .jp-flow-older").click()))
            times.setdefault("user07 and failed", []).append(
                change_history(page, lambda: status.select_option("failed")))
            change_history(page, lambda: status.select_option(""))
            times.setdefault("mine", []).append(change_history(page, lambda: user.select_option("mine")))
        b.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    from ui.conftest import start_lab
    from ui.test_team_history import team_store

    from jupyter_flow.store.records import current_user

    base = Path(tempfile.mkdtemp(prefix="team-history-"))
    team_store(base / "store")
    lab_gen = start_lab(base)
    lab = next(lab_gen)
    try:
        for name, ms in rest(lab, current_user(), args.repeat).items():
            print(f"REST first page, {name}: {ms:.0f} ms")
        for name, values in browser(lab, args.repeat).items():
            print(f"browser, click -> first page, {name}: median {median(values):.0f} ms, slowest {max(values):.0f} ms")
    finally:
        next(lab_gen, None)


if __name__ == "__main__":
    main()
