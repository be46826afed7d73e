"""The terminal's live view of a run (rich): one row per step with status, tasks done and time.

On a terminal it redraws in place; otherwise (CI, a log file) it prints one line per change.
"""
from __future__ import annotations

import threading
import time

from .store.records import DONE

STYLE = {"queued": "dim", "running": "yellow", "retrying": "yellow", "succeeded": "green", "cached": "cyan",
         "reused": "cyan", "skipped": "dim", "failed": "red", "timed_out": "red", "cancelled": "magenta",
         "crashed": "red", "damaged": "bold red"}


class Progress:
    def __init__(self, quiet: bool = False):
        from rich.console import Console

        self.console = Console(stderr=True)
        self.quiet = quiet
        self.live = None
        self.lock = threading.Lock()
        self.steps: dict[str, dict] = {}
        self.notes: list[str] = []
        self.t0 = time.monotonic()

    def set_runner(self, runner) -> None:
        self.runner = runner
        for name, step in runner.flow.steps.items():
            self.steps.setdefault(name, {"status": "queued", "tasks": {}, "total": None if step.foreach else 1,
                                         "started": None, "ended": None})
        for warning in runner.flow.warnings:
            self.console.print(f"[yellow]warning:[/] {warning}", highlight=False)
        if not self.quiet:
            self.console.print(f"[bold]{runner.flow.name}[/] run [bold]{runner.run_id}[/] "
                               f"({len(runner.flow.steps)} steps, store {runner.store.url})")

    def __enter__(self):
        if not self.quiet and self.console.is_terminal:
            from rich.live import Live

            self.live = Live(self._table(), console=self.console, refresh_per_second=8, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc):
        if self.live is not None:
            self.live.update(self._table())
            self.live.__exit__(*exc)

    def note(self, text: str) -> None:
        self.console.print(f"[yellow]{text}[/]")

    def event(self, e: dict) -> None:
        if e["type"] == "foreach":
            with self.lock:
                self.steps[e["step"]]["total"] = e["count"]
            return
        if e["type"] != "task":
            return
        with self.lock:
            row = self.steps[e["step"]]
            row["tasks"][e["index"]] = e["status"]
            if row["started"] is None:
                row["started"] = time.monotonic()
            statuses = list(row["tasks"].values())
            finished = sum(s in DONE for s in statuses)
            if any(s in ("failed", "timed_out", "cancelled") for s in statuses):
                row["status"] = next(s for s in statuses if s in ("failed", "timed_out", "cancelled"))
            elif row["total"] is not None and finished == row["total"]:
                row["status"] = "cached" if all(s == "cached" for s in statuses) else (
                    "reused" if all(s == "reused" for s in statuses) else "succeeded")
            else:
                row["status"] = "running"
            if row["status"] != "running":
                row["ended"] = time.monotonic()
        if self.live is not None:
            self.live.update(self._table())
        elif not self.quiet:
            error = (e.get("error") or {}).get("message")
            tail = f" ({e['duration']:.2f} s)" if e.get("duration") is not None else ""
            index = f"[{e['index']}]" if self.steps[e["step"]]["total"] != 1 else ""
            self.console.print(f"  {e['step']}{index}: [{STYLE.get(e['status'], '')}]{e['status']}[/]{tail}"
                               + (f" - {error}" if error and e["status"] != "retrying" else ""), highlight=False)

    def _table(self):
        from rich.table import Table

        table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
        for column in ("step", "status", "tasks", "time"):
            table.add_column(column)
        now = time.monotonic()
        with self.lock:
            for name, row in self.steps.items():
                done = sum(s in DONE for s in row["tasks"].values())
                total = "?" if row["total"] is None else row["total"]
                took = "" if row["started"] is None else f"{(row['ended'] or now) - row['started']:.1f}s"
                status = row["status"]
                table.add_row(name, f"[{STYLE.get(status, '')}]{status}[/]", f"{done}/{total}", took)
        return table

    def summary(self, handle) -> None:
        from .client import get_run

        run = get_run(handle.store, handle.run_id)
        style = STYLE.get(run["status"], "")
        self.console.print(f"run [bold]{run['id']}[/] [{style}]{run['status']}[/] in {run['duration'] or 0:.2f} s",
                           highlight=False)
        if run.get("error"):
            err = run["error"]
            self.console.print(f"[red]step {err['step']}[{err['index']}] failed: {err['message']}[/]", highlight=False)
            self.console.print(f"  inspect: jupyter flow logs {run['id']} {err['step']}   |   debug in a notebook: "
                               f"jupyter_flow.load({run['id']!r}, {err['step']!r})   |   after fixing: "
                               f"jupyter flow resume {run['id']}", highlight=False)
        if run.get("metrics"):
            self.console.print("metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in run["metrics"].items()),
                               highlight=False)
        folder = f"{handle.store.url}/flows/{run['flow']}/runs/{run['id']}"
        self.console.print(f"executed step notebooks: {folder}/<step>/<index>/output.ipynb", highlight=False)
        print(run["id"])  # stdout carries just the id, for scripts: RUN=$(jupyter flow run nb.ipynb)
