"""The sidebar on a store a team shares: 10,000 runs by 20 users. The history is filtered by user and
status and paged, its first page shows within 300 ms of a click, for a filter few runs match too (the
run index's summary); a run is pinned from its detail and the history marks it. The runs are written
through the records layer (as bench/listing.py does)."""
import os
from datetime import datetime, timedelta, timezone
from statistics import median

import pytest

from jupyter_flow.store import open_store, records

from .conftest import SHOTS, start_lab
from .test_sidebar import (
    SIDEBAR,
    low_contrast,
    misaligned,
    open_notebook,
    run_head_buttons,
    set_theme,
    shot,
    split_units,
)

pytestmark = [pytest.mark.ui, pytest.mark.slow]

RUNS, USERS = 10_000, 20
HISTORY = f"{SIDEBAR} .jp-flow-runlist"


def user_of(i: int) -> str:
    """Users take turns, 7 runs each; user 0 is this one."""
    n = i // 7 % USERS
    return records.current_user() if n == 0 else f"user{n:02d}"


def team_store(path, count: int = RUNS, flows=("quickstart", "sweep", "debug_failure")) -> None:
    """`count` finished runs of `flows` (most of the first), by USERS users (this one among them),
    one in 13 failed, one in 29 cancelled; written directly as run records."""
    store, start = open_store(str(path)), datetime(2026, 1, 1, tzinfo=timezone.utc)
    for i in range(count):
        t = start + timedelta(seconds=37 * i)
        status = "failed" if i % 13 == 0 else "cancelled" if i % 29 == 0 else "succeeded"
        records.write_run(store, {
            "id": f"{t:%Y%m%dT%H%M%S}.000-{i:06x}", "flow": flows[0] if i % 10 else flows[1 + i % 20 // 10],
            "status": status, "user": user_of(i), "host": "elsewhere", "created": t.isoformat(),
            "ended": (t + timedelta(seconds=3)).isoformat(), "duration": 3.0, "parameters": {"n_estimators": i % 200},
            "metrics": {"accuracy": (i % 97) / 97}, "executor": "local",
            "error": {"step": "train", "index": 0, "message": "ValueError: bad"} if status == "failed" else None,
            "steps": [{"name": s, "prev": []} for s in ("load", "train", "evaluate")]})


def upload(folder, bucket: str, prefix: str) -> None:
    """Every file under `folder` to s3://bucket/prefix/ (the S3 variables of the environment), 16 at once."""
    from concurrent.futures import ThreadPoolExecutor

    import botocore.session
    from botocore.config import Config

    client = botocore.session.Session().create_client("s3", config=Config(max_pool_connections=16))
    files = [p for p in folder.rglob("*") if p.is_file()]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda p: client.put_object(Bucket=bucket, Key=f"{prefix}/{p.relative_to(folder).as_posix()}",
                                                  Body=p.read_bytes()), files))


# Times, in the browser, from the event that changes the history's query (a click, a choice) to the
# list showing the runs of the new query (its data-query set, aria-busy false): window.__flowPaged
WATCH_HISTORY = """() => {
  window.__flowPaged = [];
  const list = () => document.querySelector('#jupyter-flow-sidebar .jp-flow-runlist');
  const start = () => { window.__flowFrom = { t: performance.now(), query: list().dataset.query }; };
  document.addEventListener('change', start, true);
  document.addEventListener('click', e => e.target.closest('.jp-flow-pager') && start(), true);
  new MutationObserver(() => {
    const from = window.__flowFrom, l = list();
    if (from && l && l.getAttribute('aria-busy') === 'false' && l.dataset.query !== from.query) {
      window.__flowPaged.push(performance.now() - from.t);
      window.__flowFrom = null;
    }
  }).observe(document.body, { subtree: true, attributes: true, attributeFilter: ['aria-busy', 'data-query'] });
}"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    from .conftest import need_chromium

    need_chromium()
    base = tmp_path_factory.mktemp("team")
    team_store(base / "store")
    yield from start_lab(base)


def change_history(page, act) -> float:
    """Do `act` (a click or a choice in the history); ms until the list shows the new query's runs."""
    done = page.evaluate("() => window.__flowPaged.length")
    act()
    page.wait_for_function("n => window.__flowPaged.length > n", arg=done, timeout=30_000)
    return page.evaluate("() => window.__flowPaged[window.__flowPaged.length - 1]")


def rows(page) -> list[dict]:
    return page.evaluate("""() => [...document.querySelectorAll('#jupyter-flow-sidebar .jp-flow-runitem')].map(r => ({
        id: r.dataset.run, text: r.innerText, pinned: !!r.querySelector('.jp-flow-pin'),
        user: (r.querySelector('.jp-flow-runuser')?.innerText ?? '').replace('·', '').trim()}))""")


def test_a_teams_history_filtered_paged_and_pinned(lab, page):
    me = records.current_user()
    # a store in use has its run index and the index's summary: a listing of the whole flow writes them
    assert len(lab.api("jupyter-flow/api/runs?flow=quickstart")["runs"]) == 9_000
    open_notebook(page, lab, "quickstart.ipynb")
    page.locator(f"{SIDEBAR} .jp-flow-rundetail").wait_for(timeout=30_000)  # the newest run of mine
    page.locator(f"{SIDEBAR} summary", has_text="Run detail").click()  # fold it: the history in view
    page.locator(f"{SIDEBAR} summary", has_text="History").click()
    page.locator(f"{HISTORY}[aria-busy='false'] .jp-flow-runitem").first.wait_for(timeout=30_000)
    page.evaluate(WATCH_HISTORY)
    mine = rows(page)
    assert len(mine) == 50 and all(r["user"] == "" for r in mine)  # mine: no user name shown

    times = {}
    user = page.locator(f"{SIDEBAR} .jp-flow-userfilter")
    times["everyone"] = change_history(page, lambda: user.select_option("everyone"))
    assert {r["user"] for r in rows(page)} >= {"", "user01", "user02"}
    user.select_option("user")
    name = page.locator(f"{SIDEBAR} .jp-flow-username")
    name.fill("user07")
    times["user07"] = change_history(page, lambda: name.press("Enter"))
    first = rows(page)
    assert len(first) == 50 and {r["user"] for r in first} == {"user07"}
    times["user07 older"] = change_history(page, lambda: page.locator(f"{SIDEBAR} .jp-flow-older").click())
    second = rows(page)
    assert len(second) == 50 and {r["user"] for r in second} == {"user07"}
    assert second[0]["id"] < first[-1]["id"]  # the next 50, newest first
    assert f'"before":"{first[-1]["id"]}"' in page.locator(HISTORY).get_attribute("data-query")  # not an offset
    assert page.locator(f"{SIDEBAR} .jp-flow-pager").inner_text().split("\n")[1].startswith("51–100")
    times["newer"] = change_history(page, lambda: page.locator(f"{SIDEBAR} .jp-flow-newer").click())
    assert [r["id"] for r in rows(page)] == [r["id"] for r in first]
    status = page.locator(f"{SIDEBAR} .jp-flow-statusfilter")
    times["user07 failed"] = change_history(page, lambda: status.select_option("failed"))
    failed = rows(page)
    assert failed and all(r["user"] == "user07" and r["text"].startswith("failed") for r in failed)
    assert len(failed) == 34  # of 9,000 runs, about one in each index file: the summary says which to read
    rare = [times.pop("user07 failed")]
    times["any status"] = change_history(page, lambda: status.select_option(""))
    for _ in range(2):
        rare.append(change_history(page, lambda: status.select_option("failed")))
        assert [r["id"] for r in rows(page)] == [r["id"] for r in failed]
        times.setdefault("any status again", []).append(change_history(page, lambda: status.select_option("")))
    for _ in range(3):  # a few more, for a median
        times.setdefault("everyone again", []).append(change_history(page, lambda: user.select_option("everyone")))
        times.setdefault("user07 again", []).append(change_history(page, lambda: user.select_option("user")))
    flat = [t for v in times.values() for t in (v if isinstance(v, list) else [v])]
    loaded = os.getloadavg()[0] > (os.cpu_count() or 1)  # a shared machine, more runnable than cores
    print(f"ms from a click to the history's first page (10,000 runs, 20 users): {times}; median "
          f"{median(flat):.0f}, max {max(flat):.0f}; user07 and failed (34 runs match): {rare} "
          f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    assert median(flat) <= 300, times
    assert median(rare) <= (600 if loaded else 300), rare  # the goal is 300 ms; twice that on a loaded machine

    # pin a colleague's failed run from its detail; the history marks it
    change_history(page, lambda: status.select_option("failed"))
    theirs = failed[0]["id"]
    page.locator(f"{SIDEBAR} .jp-flow-runitem[data-run='{theirs}']").click()
    page.locator(f"{SIDEBAR} details.jp-flow-section", has=page.locator("summary", has_text="Run detail")).evaluate(
        "d => { d.open = true; }")
    detail = page.locator(f"{SIDEBAR} .jp-flow-rundetail[data-run='{theirs}']")
    detail.wait_for(timeout=20_000)
    detail.locator(".jp-flow-pinbutton", has_text="Pin").click()
    detail.locator(".jp-flow-pinbutton", has_text="Unpin").wait_for(timeout=10_000)
    assert "pinned by" in detail.locator(".jp-flow-pin").get_attribute("title")
    page.locator(f"{SIDEBAR} .jp-flow-runitem[data-run='{theirs}'] .jp-flow-pin").wait_for(timeout=10_000)
    pin = lab.api(f"jupyter-flow/api/runs/{theirs}")["pinned"]
    assert pin["by"] == me, pin
    page.locator(f"{SIDEBAR} .jp-flow-runitem[data-run='{theirs}']").scroll_into_view_if_needed()
    for theme in ("JupyterLab Dark", "JupyterLab Light"):
        set_theme(page, theme)
        assert low_contrast(page) == [], theme
        shot(page, "10-team-history-pinned" + ("-dark" if "Dark" in theme else ""))
        # at 250 px no time splits ("05:16:38" | "AM"), and Unpin stays on the line of its "pinned" mark
        assert split_units(page) == [], theme
        assert misaligned(run_head_buttons(page)) == [], theme
        mark, unpin = (detail.locator(s).bounding_box() for s in (".jp-flow-pin", ".jp-flow-pinbutton"))
        assert abs(mark["y"] + mark["height"] / 2 - unpin["y"] - unpin["height"] / 2) <= 1, (mark, unpin)

    detail.locator(".jp-flow-pinbutton", has_text="Unpin").click()
    detail.locator(".jp-flow-pinbutton", has_text="Pin").wait_for(timeout=10_000)
    page.locator(f"{SIDEBAR} .jp-flow-runitem[data-run='{theirs}']:not(:has(.jp-flow-pin))").wait_for(timeout=10_000)
    assert lab.api(f"jupyter-flow/api/runs/{theirs}")["pinned"] is None
    assert (SHOTS / "10-team-history-pinned-dark-sidebar.png").exists()
