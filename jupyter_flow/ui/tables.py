"""Terminal tables (rich) for `jupyter flow runs`, `show`, `artifacts` and `batch`.

Nothing is cut in a way that changes its meaning: elided text ends with `…`, whole items are
dropped before any item is cut, and paths are printed whole, outside tables. Output that is not a
terminal (a pipe, a file) is not wrapped, unless $COLUMNS says how wide it may be. Lines outside
tables are never broken, at any width (see make_console).
"""
from __future__ import annotations

import os

from rich.console import Console
from rich.markup import escape

from jupyter_flow.readers.render import size_text
from jupyter_flow.store.preview import elide, summary
from jupyter_flow.store.status import NOT_RUN, style

UNWRAPPED = 10_000


def make_console(stderr: bool = False) -> Console:
    """A console whose printed lines are never broken (soft_wrap: a line longer than the terminal
    overflows, and the terminal folds it on screen), so a run id, a path or a hint's command is
    copied whole even at 80 columns; tables still fit the width. Text is printed as it is: no `:name:` is
    made an emoji (a user's value or path may hold one; rich's emoji table also took 3 ms to import)."""
    console = Console(stderr=stderr, soft_wrap=True, emoji=False)
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        console.width = UNWRAPPED
    return console


console = make_console()


def new_table(**options):
    """An empty rich Table in the style of every table of the CLI (no box, bold header), with `options`."""
    from rich.table import Table  # lazy: rich.table and rich.live are 5-7 ms of a cached run's start-up

    return Table(box=None, header_style="bold", **options)


def elide_items(values: dict, width: int, value_width: int = 40) -> str:
    """`a=1, b='x'` within `width`: long values cut after a whole token and marked `…`, then as many
    items as fit and `… (+N more)`. Whatever is shown is either exact or visibly marked as cut."""
    items = [f"{k}={elide(repr(v), value_width)}" for k, v in values.items()]
    if not items:
        return ""
    for kept in range(len(items), 0, -1):
        shown = ", ".join(items[:kept]) + (f", … (+{len(items) - kept} more)" if kept < len(items) else "")
        if len(shown) <= width:
            return shown
    (name, value), more = next(iter(values.items())), f", … (+{len(items) - 1} more)" if len(items) > 1 else ""
    return f"{name}={elide(repr(value), max(width - len(more) - len(name) - 1, 1))}{more}"  # never cut a name


def _status(status: str) -> str:
    return f"[{style(status)}]{status}[/]"


def _metrics(metrics: dict | None) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in (metrics or {}).items())


def runs_table(runs: list[dict], all_users: bool = False) -> None:
    if not runs:
        console.print("no runs yet" + ("" if all_users else " (of yours; --all-users shows everyone's)"))
        return
    table = new_table()
    batched = any(r.get("batch") for r in runs)
    columns = ["id", "flow", "status", "user", "start", "duration", "parameters", "metrics"]
    for column in columns + (["batch"] if batched else []):
        table.add_column(column, no_wrap=column not in ("parameters", "metrics"), overflow="fold")
    for r in runs:
        row = [r["id"], r["flow"], _status(r["status"]) + (" [bold]pinned[/]" if r.get("pinned") else ""),
               r["user"] or "", _when(r["created"]),
               f"{r['duration']:.1f}s" if r.get("duration") is not None else "",
               escape(elide_items(r.get("parameters", {}), 120)), _metrics(r.get("metrics"))]
        if batched:
            row.append(f"{r['batch']['id']} #{r['batch']['index'] + 1}" if r.get("batch") else "")
        table.add_row(*row)
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
    if run.get("pinned"):
        pin = run["pinned"]
        console.print(f"[bold]pinned[/] by {pin.get('by') or '?'} {_when(pin.get('at'))}"
                      + (f": {escape(pin['note'])}" if pin.get("note") else "") + " (gc never removes it)",
                      highlight=False)
    if run.get("origin_run"):
        console.print(f"resumed from run {run['origin_run']}")
    if run.get("batch"):
        console.print(f"batch {run['batch']['id']}, parameter set {run['batch']['index'] + 1}")
    if run.get("parameters"):
        console.print("parameters: " + ", ".join(f"{k}={v!r}" for k, v in run["parameters"].items()),
                      highlight=False, markup=False)
    if run.get("metrics"):
        console.print("metrics: " + _metrics(run["metrics"]), highlight=False)
    if run.get("error") and not run.get("damaged"):
        e = run["error"]
        console.print(f"[red]failed at step {e['step']}[{e['index']}]: {escape(e['message'])}[/]", highlight=False)
    table = new_table()
    for column in ("step", "status", "why", "time", "attempt", "outputs", "notebook"):
        table.add_column(column, overflow="fold", no_wrap=column == "notebook")
    seen = set()
    for t in run["tasks"]:
        seen.add(t["step"])
        name = t["step"] if t.get("foreach") is None else f"{t['step']}[{t['index']}]"
        outs = ", ".join(f"{n}: {summary(m, value_width=30)}" for n, m in t.get("outputs", {}).items())
        if t.get("error"):
            outs = f"[red]{escape(elide(t['error']['type'] + ': ' + t['error']['message'], 100))}[/]"
        notebook = (t.get("notebook") or "").split(f"/runs/{run['id']}/", 1)[-1]  # relative to the run's folder
        table.add_row(name, _status(t["status"]), escape(t.get("reason") or ""),
                      f"{t['duration']:.2f}s" if t.get("duration") is not None else "",
                      str(t.get("attempt", "")), escape(outs) if not t.get("error") else outs, notebook)
    for step in run["steps"]:
        if step["name"] not in seen:
            table.add_row(step["name"], _status(NOT_RUN), "", "", "", "", "")
    console.print(table)
    console.print(f"notebooks are under {store.url}/flows/{run['flow']}/runs/{run['id']}/ "
                  "(cached and reused tasks: under their origin run)", highlight=False)


def artifacts_table(artifacts: dict) -> None:
    """Inputs, outputs and the failure snapshot of a task (see `client.task_artifacts`)."""
    table = new_table()
    for column in ("kind", "name", "type", "size", "preview"):
        table.add_column(column, overflow="fold", no_wrap=column != "preview")
    groups = [("input", artifacts["inputs"]), ("output", artifacts["outputs"])]
    failure = artifacts.get("failure")
    if failure:
        groups.append(("snapshot", failure["variables"]))
        groups.append(("snapshot", {n: {"type": t, "preview": "(not picklable: not stored)"}
                                    for n, t in failure["unpicklable"].items()}))
    for kind, values in groups:
        for name, meta in values.items():
            table.add_row(kind, name, summary(meta), size_text(meta.get("size")), escape(meta.get("preview", "")))
    if table.row_count:
        console.print(table)
    else:
        console.print(f"step {artifacts['step']}[{artifacts['index']}] of run {artifacts['run_id']} has no inputs, "
                      "outputs or failure snapshot")


def failure_detail(task: dict) -> None:
    """A task's error and its failing frames (oldest first): where, function, line, and locals."""
    name = f"{task['step']}[{task['index']}]"
    error = task.get("error")
    if not error:
        console.print(f"step {name}: {_status(task['status'])}, no failure")
        return
    console.print(f"[bold]step {name}[/] {_status(task['status'])}: [red]{escape(error['type'])}: "
                  f"{escape(error.get('message') or '')}[/]", highlight=False)
    if task.get("continued"):
        console.print(escape(task["continued"]["line"]), highlight=False)
    frames = (task.get("failure") or {}).get("frames") or []
    if not frames:
        console.print("[dim]no failing frames recorded[/]")
        return
    for frame in frames:
        kind = "" if frame.get("notebook") else " [dim](library)[/]"
        console.print(f"  {escape(frame.get('where') or '?')}, line {frame.get('line')}, in "
                      f"{escape(frame.get('function') or '?')}{kind}", highlight=False)
        for local, preview in (frame.get("locals") or {}).items():
            console.print(f"      {escape(local)} = {escape(elide(preview, 80))}", highlight=False)
    console.print(f"[dim]load it (jupyter_flow.load or %flow load {task['run_id']} {task['step']}), then %debug "
                  "walks these frames[/]", highlight=False)
