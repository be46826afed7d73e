"""Terminal tables (rich) for `jupyter flow runs`, `show` and `artifacts`."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

from .progress import STYLE

console = Console()


def _status(status: str) -> str:
    return f"[{STYLE.get(status, '')}]{status}[/]"


def _size(n) -> str:
    if n is None:
        return ""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000


def runs_table(runs: list[dict], all_users: bool = False) -> None:
    if not runs:
        console.print("no runs yet" + ("" if all_users else " (of yours; --all-users shows everyone's)"))
        return
    table = Table(box=None, header_style="bold")
    for column in ("id", "flow", "status", "user", "start", "duration", "parameters", "metrics"):
        table.add_column(column, overflow="fold")
    for r in runs:
        params = ", ".join(f"{k}={v!r}" for k, v in r.get("parameters", {}).items())
        metrics = ", ".join(f"{k}={v:.4g}" for k, v in (r.get("metrics") or {}).items())
        table.add_row(r["id"], r["flow"], _status(r["status"]), r["user"] or "", _when(r["created"]),
                      f"{r['duration']:.1f}s" if r.get("duration") is not None else "", params[:60], metrics)
    console.print(table)


def _when(stamp: str | None) -> str:
    return stamp[:19].replace("T", " ") if stamp else ""


def run_detail(run: dict, store) -> None:
    if run.get("damaged"):
        console.print(f"[bold]run {run['id']}[/]  flow {run['flow']}  {_status(run['status'])}: its record cannot "
                      f"be read ({run['damaged']}); its stored values are kept. Tasks found:", highlight=False)
    else:
        console.print(f"[bold]run {run['id']}[/]  flow {run['flow']}  {_status(run['status'])}  user {run['user']}"
                      f"@{run['host']}  started {_when(run['created'])}"
                      + (f"  took {run['duration']:.2f}s" if run.get("duration") is not None else ""), highlight=False)
    if run.get("origin_run"):
        console.print(f"resumed from run {run['origin_run']}")
    if run.get("parameters"):
        console.print("parameters: " + ", ".join(f"{k}={v!r}" for k, v in run["parameters"].items()), highlight=False)
    if run.get("metrics"):
        console.print("metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in run["metrics"].items()), highlight=False)
    if run.get("error") and not run.get("damaged"):
        e = run["error"]
        console.print(f"[red]failed at step {e['step']}[{e['index']}]: {e['message']}[/]", highlight=False)
    table = Table(box=None, header_style="bold")
    for column in ("step", "status", "time", "attempt", "outputs", "notebook"):
        table.add_column(column, overflow="fold")
    seen = set()
    for t in run["tasks"]:
        seen.add(t["step"])
        name = t["step"] if t.get("foreach") is None else f"{t['step']}[{t['index']}]"
        outs = ", ".join(f"{n}: {m.get('type')} {m.get('preview', '')[:30]!s}" for n, m in t.get("outputs", {}).items())
        if t.get("error"):
            outs = f"[red]{t['error']['type']}: {t['error']['message'][:80]}[/]"
        notebook = f"{store.url}/{t['notebook']}" if t.get("notebook") else ""
        table.add_row(name, _status(t["status"]), f"{t['duration']:.2f}s" if t.get("duration") is not None else "",
                      str(t.get("attempt", "")), outs, notebook)
    for step in run["steps"]:
        if step["name"] not in seen:
            table.add_row(step["name"], "[dim]not run[/]", "", "", "", "")
    console.print(table)


def artifacts_table(task: dict) -> None:
    table = Table(box=None, header_style="bold")
    for column in ("name", "type", "size", "preview"):
        table.add_column(column, overflow="fold")
    for name, meta in task.get("outputs", {}).items():
        shape = f" {tuple(meta['shape'])}" if "shape" in meta else ""
        table.add_row(name, f"{meta.get('type')}{shape}", _size(meta.get("size")), meta.get("preview", ""))
    console.print(table)
