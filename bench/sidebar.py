"""The sidebar and the server: how soon the browser shows a run, and what a big run costs in memory.

A real `jupyter lab` (token, loopback, temp root and store, as tests/ui starts it) driven by
Debian's chromium through Playwright. The clocks compared are this machine's: the browser's
`Date.now()` and the times the tasks record in the store.

* click → first step running (store): the Run button's click to the first task's recorded start.
* click → browser shows it running: the click to the sidebar's DAG showing that step running.
* task end → browser shows it ended: each task's recorded end to its row in the sidebar's run
  detail showing its final status (all tasks of a 5-step chain whose steps take 0.3 s).
* a 1,000-task foreach started from the sidebar, shown live in it: peak RSS (psutil) of the
  Jupyter server process, which also runs the runner (a thread of the server for sidebar runs), and
  of the processes under it (the task processes and their kernels), against the server's RSS before
  the run; and what the run's live stream carried to the browser (events and bytes, counted in the
  page). The same flow run by `jupyter flow run` gives the runner's own process for comparison.

    python bench/sidebar.py                 # 5 latency runs after 1 warm-up, 1 foreach of 1,000
    python bench/sidebar.py --quick         # 1 latency run, foreach of 40
    python bench/sidebar.py --foreach 200 --repeat 7

There is no peer for a sidebar: the figures are absolute, in ms and MB.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from statistics import median

import nbformat
import psutil

import jupyter_flow

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

from common import NOTEBOOKS, arg_parser, finish_args, markdown_table  # noqa: E402 - found through sys.path
from ui.conftest import CHROMIUM, CHROMIUM_ARGS, start_lab  # noqa: E402

SIDEBAR = "#jupyter-flow-sidebar"

# In the page: when the Run button was clicked, and when each (run, step/index, status) was first shown,
# in the DAG (`node`) and in the run detail's task rows (`row`).
WATCH = """() => {
  window.__flow = {click: null, seen: {}};
  document.addEventListener('click', e => {
    if (e.target.closest && e.target.closest('#jupyter-flow-sidebar .jp-flow-run-button')) {
      window.__flow.click = Date.now();
    }
  }, true);
  const note = () => {
    const now = Date.now(), seen = window.__flow.seen;
    const detail = document.querySelector('#jupyter-flow-sidebar .jp-flow-rundetail');
    const run = detail ? detail.dataset.run : '';
    const mark = key => { if (!(key in seen)) { seen[key] = now; } };
    document.querySelectorAll('#jupyter-flow-sidebar .jp-flow-node').forEach(
      n => mark(`node ${run} ${n.dataset.step}:${n.dataset.status}`));
    document.querySelectorAll('#jupyter-flow-sidebar .jp-flow-taskrow').forEach(
      n => mark(`row ${run} ${n.dataset.step}/${n.dataset.index}:${n.dataset.status}`));
  };
  new MutationObserver(note).observe(document.body,
    {subtree: true, childList: true, attributes: true, attributeFilter: ['data-status', 'data-run']});
  note();
}"""


# Before the page's scripts run: count the server-sent events each stream delivers (by event name:
# count and bytes of data), as the sidebar receives them. window.__flowStream
COUNT_STREAM = """(() => {
  window.__flowStream = {};
  const listen = EventSource.prototype.addEventListener;
  EventSource.prototype.addEventListener = function (name, fn, options) {
    const counted = e => {
      const c = (window.__flowStream[name] = window.__flowStream[name] || { events: 0, bytes: 0 });
      c.events += 1;
      c.bytes += (e.data || '').length;
      return fn.call(this, e);
    };
    return listen.call(this, name, counted, options);
  };
})();"""


def ms(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp() * 1000


def write_notebook(path: Path, steps: int, seconds: float) -> None:
    """A chain of `steps` steps, each sleeping `seconds` (long enough for the browser to show it running)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cells = [("import time", ["imports"]), ("seed = 0", ["parameters"])]  # a new seed per run: no cache hits
    cells += [(f"x{i} = {f'x{i - 1} + 1' if i else 'seed'}\ntime.sleep({seconds})", [f"step:s{i}"])
              for i in range(steps)]
    nb.cells = [nbformat.v4.new_code_cell(src, metadata={"tags": tags}) for src, tags in cells]
    nbformat.write(nb, str(path))


class Sidebar:
    """The lab page with one notebook open in the sidebar."""

    def __init__(self, browser, lab, notebook: str):
        self.lab, self.notebook = lab, notebook
        self.page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
        self.page.add_init_script(COUNT_STREAM)
        self.page.goto(lab.page_url(notebook))
        self.page.wait_for_selector(".jp-NotebookPanel", timeout=120_000)
        tab = self.page.locator('li.lm-TabBar-tab[data-id="jupyter-flow-sidebar"]')
        tab.wait_for(timeout=60_000)
        if "lm-mod-current" not in (tab.get_attribute("class") or ""):
            tab.click()
        title = self.page.locator(f"{SIDEBAR} .jp-flow-title", has_text=notebook.removesuffix(".ipynb"))
        title.wait_for(timeout=60_000)
        self.page.wait_for_selector(f"{SIDEBAR} .jp-flow-node", timeout=60_000)
        self.page.evaluate(WATCH)
        self.posted = None  # when the browser sent the request that starts the run (after saving the notebook)
        self.page.on("request", lambda r: r.method == "POST" and r.url.split("?")[0].endswith("/jupyter-flow/api/runs")
                     and setattr(self, "posted", time.time() * 1000))

    def run(self, parameters: dict | None = None, timeout_ms: int = 600_000) -> str:
        """Click Run (after filling the form) and wait for the run to end; its id."""
        page = self.page
        for name, value in (parameters or {}).items():
            page.locator(f"{SIDEBAR} input[name='{name}']").fill(str(value))
        detail = page.locator(f"{SIDEBAR} .jp-flow-rundetail")
        before = detail.get_attribute("data-run") if detail.count() else None
        page.locator(f"{SIDEBAR} .jp-flow-run-button").click()
        page.wait_for_function(
            "old => { const d = document.querySelector('#jupyter-flow-sidebar .jp-flow-rundetail');"
            " return d && d.dataset.run !== old && d.dataset.status !== 'running'; }", arg=before, timeout=timeout_ms)
        return detail.get_attribute("data-run")

    def seen(self) -> dict:
        return self.page.evaluate("() => window.__flow")

    def close(self):
        self.page.context.close()


def latencies(sidebar: Sidebar) -> dict:
    """One run of the chain: ms from click to the first start (store) and to the browser showing it,
    and each task's end to the browser showing it."""
    run_id = sidebar.run({"seed": time.time_ns()})
    run = sidebar.lab.api(f"jupyter-flow/api/runs/{run_id}")
    if run["status"] != "succeeded":
        raise RuntimeError(f"run {run_id} {run['status']}; see the lab log")
    flow = sidebar.seen()
    first = min(run["tasks"], key=lambda t: ms(t["started"]))
    shown = flow["seen"].get(f"node {run_id} {first['step']}:running")
    return {
        "request": sidebar.posted - flow["click"],
        "start": ms(first["started"]) - flow["click"],
        "shown_running": None if shown is None else shown - flow["click"],
        "end_lags": [flow["seen"][f"row {run_id} {t['step']}/{t['index']}:{t['status']}"] - ms(t["ended"])
                     for t in run["tasks"]],
    }


class PeakRSS:
    """Samples a process's RSS and its descendants' every few ms in a thread; peaks in bytes."""

    def __init__(self, pid: int, interval: float = 0.02, leave_out: str | None = None):
        self.proc, self.interval, self.leave_out = psutil.Process(pid), interval, leave_out
        self.own = self.children = self.total = self.most_children = 0
        self.cpu0 = self.cpu = sum(self.proc.cpu_times()[:2])  # user + system seconds of the process itself
        self._stop = threading.Event()

    def sample(self):
        own = self.proc.memory_info().rss
        self.cpu = sum(self.proc.cpu_times()[:2])
        kids = 0
        children = []
        for child in self.proc.children(recursive=True):
            try:
                if self.leave_out and any(self.leave_out in arg for arg in child.cmdline()):
                    continue
                kids += child.memory_info().rss
                children.append(child)
            except psutil.Error:
                pass  # ended between the listing and the reading
        self.own, self.children = max(self.own, own), max(self.children, kids)
        self.total = max(self.total, own + kids)
        self.most_children = max(self.most_children, len(children))

    def _loop(self):
        while not self._stop.is_set():
            try:
                self.sample()
            except psutil.NoSuchProcess:
                return
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def server_pid(lab) -> int:
    """The `jupyter lab` server's pid, from the file it writes in its runtime dir."""
    (info,) = lab.runtime.glob("jpserver-*.json")
    return json.loads(info.read_text())["pid"]


def browser_cpu() -> dict:
    """CPU seconds so far of each chromium process under this one (Playwright starts them)."""
    out = {}
    for p in psutil.Process().children(recursive=True):
        try:
            if "chrom" in p.name():
                out[p.pid] = sum(p.cpu_times()[:2])
        except psutil.Error:
            pass
    return out


def foreach_from_sidebar(sidebar: Sidebar, n: int) -> dict:
    pid = server_pid(sidebar.lab)
    before = psutil.Process(pid).memory_info().rss
    browser = browser_cpu()
    sidebar.page.evaluate("() => { window.__flowStream = {}; }")
    with PeakRSS(pid, leave_out=str(sidebar.lab.runtime)) as peak:  # not the kernels of open notebooks
        run_id = sidebar.run({"n": n})
    stream = sidebar.page.evaluate("() => window.__flowStream")
    browser = sum(t - browser.get(p, 0) for p, t in browser_cpu().items())
    flow = sidebar.seen()
    run = sidebar.lab.api(f"jupyter-flow/api/runs/{run_id}")
    shown = flow["seen"].get(f"row {run_id} join/0:succeeded")
    return {"run": run_id, "status": run["status"], "tasks": len(run["tasks"]), "before": before,
            "server": peak.own, "children": peak.children, "total": peak.total, "processes": peak.most_children,
            "cpu": peak.cpu - peak.cpu0, "browser_cpu": browser, "seconds": (ms(run["ended"]) - flow["click"]) / 1000,
            "end_lag": None if shown is None else shown - max(ms(t["ended"]) for t in run["tasks"]),
            "stream": stream, "run_bytes": len(json.dumps(run))}


def foreach_from_cli(store: Path, n: int) -> dict:
    """The same flow run by `jupyter flow run`: the runner is that command's own process."""
    cmd = [sys.executable, "-m", "jupyter_flow.cli.main", "run", str(NOTEBOOKS / "foreach20.ipynb"),
           "--store", str(store), "-p", "n", str(n), "--no-cache"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    with PeakRSS(proc.pid) as peak:
        _, err = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{err.decode()[-2000:]}")
    return {"server": peak.own, "children": peak.children, "total": peak.total, "processes": peak.most_children,
            "cpu": peak.cpu - peak.cpu0, "seconds": time.perf_counter() - start}


@contextmanager
def lab_and_browser(base: Path):
    from playwright.sync_api import sync_playwright

    built = Path(jupyter_flow.__file__).parent / "labextension"  # a checkout's `jlpm build` output, if any
    if built.is_dir():  # shown instead of the installed copy, which may be another checkout's
        (base / "jupyter" / "labextensions").mkdir(parents=True)
        (base / "jupyter" / "labextensions" / "jupyter-flow").symlink_to(built)
        os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(base / "jupyter"),
                                                                   os.environ.get("JUPYTER_PATH")]))
    labs = start_lab(base)
    lab = next(labs)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                yield lab, browser
            finally:
                browser.close()
    finally:
        next(labs, None)  # stops the server


def main():
    import tempfile

    p = arg_parser(__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=5, help="steps in the latency chain")
    p.add_argument("--sleep", type=float, default=0.3, help="seconds each step of the chain sleeps")
    p.add_argument("--foreach", type=int, default=1000, help="tasks of the foreach run for the memory figures")
    args = finish_args(p.parse_args())
    if not Path(CHROMIUM).exists():
        p.exit(2, f"error: no chromium at {CHROMIUM}; install it (apt-get install chromium) "
                  "or set JUPYTER_FLOW_CHROMIUM\n")
    if args.quick:
        args.foreach = min(args.foreach, 40)
    base = Path(tempfile.mkdtemp(prefix="jf-bench-sidebar-", dir=args.tmp))
    mb = 1 / 2**20
    with lab_and_browser(base) as (lab, browser):
        write_notebook(lab.root / "chain.ipynb", args.steps, args.sleep)
        sidebar = Sidebar(browser, lab, "chain.ipynb")
        for _ in range(args.warmup):
            latencies(sidebar)
        runs = []
        for i in range(args.repeat):
            runs.append(latencies(sidebar))
            print(f"  latency run {i + 1}/{args.repeat}: {json.dumps(runs[-1])}", file=sys.stderr, flush=True)
        sidebar.close()

        (lab.root / "foreach.ipynb").write_bytes((NOTEBOOKS / "foreach20.ipynb").read_bytes())
        sidebar = Sidebar(browser, lab, "foreach.ipynb")
        served = foreach_from_sidebar(sidebar, args.foreach)
        print(f"  foreach from the sidebar: {json.dumps(served)}", file=sys.stderr, flush=True)
        sidebar.close()
    cli = foreach_from_cli(base / "cli-store", args.foreach)
    print(f"  foreach from the CLI: {json.dumps(cli)}", file=sys.stderr, flush=True)

    lags = [lag for r in runs for lag in r["end_lags"]]
    shown = [r["shown_running"] for r in runs if r["shown_running"] is not None]
    print(markdown_table(
        f"Sidebar latency (ms; median of {args.repeat} runs of a {args.steps}-step chain, "
        f"{len(lags)} task ends)", ["from", "to", "median ms", "max ms"], [
            ["Run click", "the request starting the run sent", median([r["request"] for r in runs]),
             max(r["request"] for r in runs)],
            ["Run click", "first step running (its task.json start)", median([r["start"] for r in runs]),
             max(r["start"] for r in runs)],
            ["Run click", "the sidebar's DAG showing it running", median(shown) if shown else None,
             max(shown) if shown else None],
            ["a task's end (task.json)", "its row in the sidebar showing it ended", median(lags), max(lags)],
        ]))
    print()
    print(markdown_table(
        f"Peak memory during a {args.foreach}-task foreach (MB RSS; psutil)",
        ["process", "from the sidebar", "from the CLI"], [
            ["Jupyter server before the run", served["before"] * mb, None],
            ["Jupyter server incl. its runner thread (sidebar) / `jupyter flow run` (CLI)", served["server"] * mb,
             cli["server"] * mb],
            ["processes under it (task processes, kernels), at their peak", served["children"] * mb,
             cli["children"] * mb],
            ["all together, at the peak", served["total"] * mb, cli["total"] * mb],
            ["most processes under it at once", served["processes"], cli["processes"]],
            ["CPU seconds of the server (sidebar) / of `jupyter flow run` (CLI) during the run", served["cpu"],
             cli["cpu"]],
            ["CPU seconds of the browser (chromium) during the run", served["browser_cpu"], None],
            ["run's wall time (s)", served["seconds"], cli["seconds"]],
            ["last task's end → browser shows it (ms)", served["end_lag"], None],
        ]))
    stream = served["stream"]
    print()
    print(markdown_table(
        f"The run's live stream to the sidebar during the {args.foreach}-task foreach (counted in the page)",
        ["event", "events", "KB of data"],
        [[name, c["events"], c["bytes"] / 1000] for name, c in sorted(stream.items())]
        + [["the whole run, once (GET runs/ID at the end)", 1, served["run_bytes"] / 1000],
           ["the whole run on every change, as before (at most: events × the whole run)",
            sum(c["events"] for c in stream.values()),
            sum(c["events"] for c in stream.values()) * served["run_bytes"] / 1000]]))
    if not args.keep:
        import shutil

        shutil.rmtree(base, ignore_errors=True)
    else:
        print(f"\nkept {base}", file=sys.stderr)


if __name__ == "__main__":
    main()
