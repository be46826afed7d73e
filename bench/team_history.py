"""The run history at team size: 10,000 runs by 20 users in one store (tests/ui/test_team_history.py
builds it through the records layer: 9,000 runs of the quickstart flow, one in 13 failed).

* REST: GET /jupyter-flow/api/runs (the sidebar's call) for the history's filters, first page of 50,
  wall clock of the request on a running `jupyter lab`, median of --repeat after a warm-up (which
  also writes the run index and its summary, as the listings of a store in use have).
* Browser: a real `jupyter lab` and chromium (Playwright); ms from the click (or choice) that changes
  the history's filter or page to the list showing the new query's runs.

With `--baseline DIR`, a second `jupyter lab` runs the jupyter_flow checkout in DIR (say, main before
the index summaries) on its own copy of the store, and every figure is taken on both by turns, so that
both see the same machine load. The load average (1 min) is printed before and after each part. That
lab serves DIR's own built sidebar (DIR/jupyter_flow/labextension, `jlpm build` in DIR/labextension)
if there is one, and its store's index is written by DIR's code. REST page 2 asks this checkout for
the runs before the last of page 1 (`before=`, as the sidebar does), the baseline for `offset=50`.

With `--s3`, the store is on S3 (a moto server on loopback, as the tests use): built on a local folder,
then uploaded (each side its own prefix of one bucket), and every lab reads it through S3.

    python bench/team_history.py [--repeat 5] [--baseline DIR] [--s3] [--no-browser]
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
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
    "user07, page 2": "user=user07&{page2}",
    "user07 and failed (34 of 9,000 runs match, about one in each index file)": "user=user07&status=failed",
}


def load() -> str:
    return f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"


def rest(labs: dict, me: str, repeat: int) -> dict[tuple[str, str], float]:
    out = {}
    first = labs["this"].api("jupyter-flow/api/runs?flow=quickstart&limit=50&user=user07")["runs"]
    page2 = {side: "offset=50" if side == "baseline" else f"before={first[-1]['id']}" for side in labs}
    for name, query in QUERIES.items():
        paths = {side: f"jupyter-flow/api/runs?flow=quickstart&limit=50&{query.format(me=me, page2=page2[side])}"
                 for side in labs}
        times: dict[str, list] = {}
        for side, lab in labs.items():
            lab.api(paths[side])
        for _ in range(repeat):
            for side, lab in labs.items():
                t = time.perf_counter()
                lab.api(paths[side])
                times.setdefault(side, []).append((time.perf_counter() - t) * 1000)
        for side, values in times.items():
            out[side, name] = median(values)
    return out


def browser(labs: dict, repeat: int) -> dict[tuple[str, str], list[float]]:
    from playwright.sync_api import sync_playwright
    from ui.conftest import CHROMIUM, CHROMIUM_ARGS
    from ui.test_sidebar import SIDEBAR, open_notebook
    from ui.test_team_history import WATCH_HISTORY, change_history

    times: dict[tuple[str, str], list[float]] = {}
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        pages = {}
        for side, lab in labs.items():
            page = b.new_context(viewport={"width": 1400, "height": 900}).new_page()
            open_notebook(page, lab, "quickstart.ipynb")
            page.locator(f"{SIDEBAR} summary", has_text="History").click()
            page.locator(f"{SIDEBAR} .jp-flow-runlist[aria-busy='false'] .jp-flow-runitem").first.wait_for(
                timeout=30_000)
            page.evaluate(WATCH_HISTORY)
            pages[side] = page
        for round_ in range(repeat):
            for side, page in pages.items():
                def took(name, act, page=page, side=side):
                    times.setdefault((side, name), []).append(change_history(page, act))

                user = page.locator(f"{SIDEBAR} .jp-flow-userfilter")
                status = page.locator(f"{SIDEBAR} .jp-flow-statusfilter")
                name = page.locator(f"{SIDEBAR} .jp-flow-username")
                took("everyone", lambda user=user: user.select_option("everyone"))
                if round_:  # the name typed in the first round stays: choosing "user" applies it
                    took("one colleague (user07)", lambda user=user: user.select_option("user"))
                else:
                    user.select_option("user")
                    name.fill("user07")
                    took("one colleague (user07)", lambda name=name: name.press("Enter"))
                took("older › (page 2)", lambda page=page: page.locator(f"{SIDEBAR} .jp-flow-older").click())
                took("user07 and failed (34 of 9,000)", lambda status=status: status.select_option("failed"))
                change_history(page, lambda status=status: status.select_option(""))
                took("mine", lambda user=user: user.select_option("mine"))
        b.close()
    return times


@contextlib.contextmanager
def lab_of(checkout: Path, base: Path, options=()):
    """A `jupyter lab` in `base` running the jupyter_flow checkout at `checkout` (its PYTHONPATH)."""
    from ui.conftest import start_lab

    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(checkout)  # start_lab's server inherits the environment
    try:
        gen = start_lab(base, options)
        lab = next(gen)
    finally:
        if before is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = before
    try:
        yield lab
    finally:
        next(gen, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--baseline", metavar="DIR", help="also time the jupyter_flow checkout in DIR, by turns")
    parser.add_argument("--s3", action="store_true", help="the store on S3 (a moto server on loopback)")
    parser.add_argument("--no-browser", action="store_true", help="the REST calls only")
    args = parser.parse_args()
    from ui.test_team_history import team_store, upload

    from jupyter_flow.store.records import current_user

    base = Path(tempfile.mkdtemp(prefix="team-history-"))
    checkouts = {"this": ROOT} | ({"baseline": Path(args.baseline).resolve()} if args.baseline else {})
    team_store(base / "this" / "store")
    if args.baseline:
        shutil.copytree(base / "this" / "store", base / "baseline" / "store")
    if args.s3:  # a store in use has its run index, summaries and ledgers: written here, before the upload
        for side, checkout in checkouts.items():  # by each side's own code
            subprocess.run([sys.executable, "-c", "import sys; from jupyter_flow.store import open_store, records; "
                            "records.rebuild_index(open_store(sys.argv[1]))", str(base / side / "store")],
                           env={**os.environ, "PYTHONPATH": str(checkout)}, check=True)
    try:
        with contextlib.ExitStack() as stack:
            options = {side: () for side in checkouts}
            if args.s3:
                from support.services import s3_bucket

                stack.enter_context(s3_bucket(base / "moto", "flows"))
                for side in checkouts:
                    t = time.perf_counter()
                    upload(base / side / "store", "flows", side)
                    print(f"uploaded the store for {side} in {time.perf_counter() - t:.0f} s ({load()})")
                    shutil.rmtree(base / side / "store")
                    options[side] = (f"--JupyterFlow.store=s3://flows/{side}",)
            built = Path(args.baseline or ".").resolve() / "jupyter_flow" / "labextension"
            if args.baseline and (built / "package.json").exists():  # the baseline's own sidebar, served first
                (base / "extensions").mkdir()
                (base / "extensions" / "jupyter-flow").symlink_to(built)
                options["baseline"] += (f"--LabApp.extra_labextensions_path={base / 'extensions'}",)
            labs = {side: stack.enter_context(lab_of(checkout, base / side, options[side]))
                    for side, checkout in checkouts.items()}
            print(f"REST ({load()})")
            for (side, name), ms in rest(labs, current_user(), args.repeat).items():
                print(f"REST first page, {side}, {name}: {ms:.0f} ms")
            print(f"browser ({load()})")
            for (side, name), values in ({} if args.no_browser else browser(labs, args.repeat)).items():
                print(f"browser, click -> first page, {side}, {name}: median {median(values):.0f} ms, "
                      f"slowest {max(values):.0f} ms")
            print(f"end ({load()})")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
