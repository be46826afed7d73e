"""The terminal's live view of a run (rich): one row per step with status, tasks done and time.

On a terminal it redraws in place (times tick while steps run) once the run has gone on for
LIVE_AFTER seconds; a run over before (served from the cache) gets the same table printed once.
Otherwise (CI, a log file) it prints one line per change, as plain text. rich is imported only for the
live view: before it, and off a terminal, lines and the table are written here (rich's console and table
were 25-30 ms of a cached rerun). `BatchProgress` is the same for the runs of a batch, one row per run.
"""
from __future__ import annotations

import os
import sys
import threading
import time

from jupyter_flow.readers.client import get_run
from jupyter_flow.store.status import DONE, TERMINAL, Status, style

# seconds before a terminal's view is redrawn in place: drawing it live for a run served from the cache
# (over in a few ms) cost 20-40 ms of its CPU (rich.live, its refresh thread, its redraws)
LIVE_AFTER = 0.3


def track_task(row: dict, e: dict) -> None:
    """Fold a task event into its step's row (`tasks`, `total`, `status`, `started`, `ended`)."""
    now = time.monotonic()
    row["tasks"][e["index"]] = e["status"]
    row["started"] = row["started"] or now
    statuses = list(row["tasks"].values())
    failed = [s for s in statuses if s in TERMINAL and s not in DONE]
    if failed:
        row["status"] = failed[0]
    elif row["total"] is not None and sum(s in DONE for s in statuses) == row["total"]:
        row["status"] = statuses[0] if len(set(statuses)) == 1 else Status.SUCCEEDED.value  # all cached: cached
    else:
        row["status"] = Status.RUNNING.value
    if row["status"] != Status.RUNNING:
        row["ended"] = now


def is_terminal(file) -> bool:
    """Whether `file` is a terminal, as rich decides it (TTY_COMPATIBLE, then FORCE_COLOR, then isatty)."""
    forced = os.environ.get("TTY_COMPATIBLE", "")
    if forced in ("0", "1"):
        return forced == "1"
    if os.environ.get("FORCE_COLOR") is not None:
        return os.environ["FORCE_COLOR"] != ""
    try:
        return file.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


# ANSI's codes for the words of the styles in store.status.STYLES and the ones below
SGR = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "magenta": "35", "cyan": "36"}


def paint(text: str, style: str) -> str:
    """`text` in a rich style made of SGR's words, as rich draws it on a terminal of 8 colours or more:
    nothing on TERM=dumb or unknown, no colour with NO_COLOR set."""
    if not text or os.environ.get("TERM") in ("dumb", "unknown"):
        return text
    colourless = os.environ.get("NO_COLOR", "") != ""
    codes = [SGR[w] for w in style.split() if w in SGR and not (colourless and int(SGR[w]) >= 30)]
    return f"\x1b[{';'.join(codes)}m{text}\x1b[0m" if codes else text


class _Live:
    """A rich Live table on a terminal, redrawn from `_table()` several times a second once the run has gone
    on for `live_after` seconds. Until then, and off a terminal, lines are written without rich (its console
    and table are 25-30 ms of a cached rerun's start-up): `say` and `_draw_once`."""

    def __init__(self, quiet: bool = False, live_after: float = LIVE_AFTER):
        self.out = sys.stderr
        self.on_terminal = is_terminal(self.out)
        self._console = None
        self.quiet, self.live_after = quiet, live_after
        self.terminal = not quiet and self.on_terminal  # a table, not one line per change
        self.live = None
        self.lock = threading.Lock()
        self._going_live = threading.Lock()  # the timer starting the live view, or the end stopping it first
        self._timer: threading.Timer | None = None
        self._ended = False

    @property
    def console(self):
        """rich's console on standard error, made when first needed (the live view, a table too wide)."""
        if self._console is None:
            from jupyter_flow.ui.tables import make_console  # lazy: rich, only for a live view

            self._console = make_console(stderr=True)
        return self._console

    @console.setter
    def console(self, console) -> None:
        self._console, self.out, self.on_terminal = console, console.file, console.is_terminal

    def __enter__(self):
        if self.terminal:
            self._timer = threading.Timer(self.live_after, self._go_live)
            self._timer.daemon = True
            self._timer.start()
        return self

    def _go_live(self):
        from rich.live import Live  # lazy: only a terminal redraws in place (5-7 ms of a cached run's start-up)

        with self._going_live:
            if not self._ended:
                self.live = Live(console=self.console, refresh_per_second=8, get_renderable=self._table)
                self.live.__enter__()

    def __exit__(self, *exc):
        if self._timer is not None:
            self._timer.cancel()
        with self._going_live:
            self._ended = True
        if self.live is not None:
            self.live.refresh()
            self.live.__exit__(*exc)
        elif self.terminal:
            self._draw_once()  # what the live view would have left on the screen

    def _table(self):
        """The rich Table the view shows now (each view its own)."""
        raise NotImplementedError

    def _draw_once(self) -> None:
        self.console.print(self._table())

    def say(self, *parts) -> None:
        """One line of `parts`, each a text or a (text, rich style): styled on a terminal, else plain. A
        text is printed as it is (never read as rich markup: a step's error may hold `[...]`)."""
        if self.live is not None:  # rich's live view keeps its table below the lines printed
            from rich.text import Text  # imported with rich's console already

            self.console.print(Text.assemble(*parts))
            return
        paint_ = paint if self.on_terminal else (lambda text, style: text)
        self.out.write("".join(p if isinstance(p, str) else paint_(*p) for p in parts) + "\n")
        self.out.flush()

    def width(self) -> int:
        """The terminal's columns, as rich reads them ($COLUMNS first); 80 if it cannot say (or says 0)."""
        try:
            return int(os.environ.get("COLUMNS") or os.get_terminal_size(self.out.fileno()).columns) or 80
        except (ValueError, OSError, AttributeError):
            return 80


class Progress(_Live):
    def __init__(self, quiet: bool = False, live_after: float = LIVE_AFTER):
        super().__init__(quiet, live_after)
        self.steps: dict[str, dict] = {}

    def set_runner(self, runner) -> None:
        self.runner = runner
        for name, step in runner.flow.steps.items():
            self.steps.setdefault(name, {"status": Status.QUEUED.value, "tasks": {},
                                         "total": None if step.foreach else 1, "started": None, "ended": None})
        for warning in runner.flow.warnings:
            self.say(("warning:", "yellow"), f" {warning}")
        if not self.quiet:
            self.say((runner.flow.name, "bold"), " run ", (runner.run_id, "bold"),
                     f" ({len(runner.flow.steps)} steps, store {runner.store.url})")

    def interrupted(self, count: int, patience: int) -> None:
        """A Ctrl-C while the run goes on: say what happens now, and how to stop waiting."""
        left = patience - count
        self.say((f"cancelling: running steps are interrupted and save their state first "
                  f"(Ctrl-C {left} more time{'s' if left > 1 else ''} to stop waiting)", "yellow"))

    def event(self, e: dict) -> None:
        if e["type"] == "foreach":
            with self.lock:
                self.steps[e["step"]]["total"] = e["count"]
            return
        if e["type"] != "task":
            return
        with self.lock:
            track_task(self.steps[e["step"]], e)
        if e.get("note") and not self.quiet:  # a resumed failed step: from which cell, or why from its first
            self.say(f"  {e['step']}: {e['note']}")
        if not self.terminal and not self.quiet:
            error = (e.get("error") or {}).get("message")
            tail = f" ({e['duration']:.2f} s)" if e.get("duration") is not None else ""
            index = f"[{e['index']}]" if self.steps[e["step"]]["total"] != 1 else ""
            self.say(f"  {e['step']}{index}: ", (e["status"], style(e["status"])), tail,
                     f" - {error}" if error and e["status"] != "retrying" else "")

    COLUMNS = ("step", "status", "tasks", "time")

    def _rows(self) -> list[tuple]:
        """The table's rows as (step, (status, its style), tasks done/total, time), times as of now."""
        now = time.monotonic()
        with self.lock:
            return [(name, (row["status"], style(row["status"])),
                     f"{sum(s in DONE for s in row['tasks'].values())}/{'?' if row['total'] is None else row['total']}",
                     "" if row["started"] is None else f"{(row['ended'] or now) - row['started']:.1f}s")
                    for name, row in self.steps.items()]

    def _table(self):
        from jupyter_flow.ui.tables import new_table  # lazy: rich, only for a live view

        table = new_table(pad_edge=False)
        for column in self.COLUMNS:
            table.add_column(column)
        for name, (status, status_style), tasks, took in self._rows():
            table.add_row(name, f"[{status_style}]{status}[/]", tasks, took)
        return table

    def _draw_once(self) -> None:
        """The table as rich draws it (no box, bold header, columns two spaces apart, left-aligned), written
        without rich; by rich when it would not fit the terminal's width or holds other than ASCII."""
        rows = [tuple((c, "bold") for c in self.COLUMNS)] + [
            tuple(c if isinstance(c, tuple) else (c, "") for c in row) for row in self._rows()]
        widths = [max(len(row[i][0]) for row in rows) for i in range(len(self.COLUMNS))]
        if sum(widths) + 2 * (len(widths) - 1) > self.width() or not all(t.isascii() for r in rows for t, _ in r):
            super()._draw_once()
            return
        for row in rows:
            self.out.write("  ".join(paint(text, text_style) + " " * (width - len(text))
                                     for (text, text_style), width in zip(row, widths)) + "\n")
        self.out.flush()

    def summary(self, handle) -> None:
        run = get_run(handle.store, handle.run_id)
        self.say("run ", (run["id"], "bold"), " ", (run["status"], style(run["status"])),
                 f" in {run['duration'] or 0:.2f} s")
        if run.get("error"):
            err = run["error"]
            index = f"[{err['index']}]" if self.steps.get(err["step"], {}).get("total") != 1 else ""
            self.say((f"step {err['step']}{index} failed: {err['message']}", "red"))
            self.say(f"  inspect: jupyter flow logs {run['id']} {err['step']}   |   debug in a notebook: "
                     f"jupyter_flow.load({run['id']!r}, {err['step']!r})   |   after fixing: "
                     f"jupyter flow resume {run['id']}")
        if run.get("metrics"):
            self.say("metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in run["metrics"].items()))
        folder = f"{handle.store.url}/flows/{run['flow']}/runs/{run['id']}"
        self.say(f"executed step notebooks: {folder}/*/*/attempts/*/output.ipynb")
        print(run["id"])  # stdout carries just the id, for scripts: RUN=$(jupyter flow run nb.ipynb)


class BatchProgress(_Live):
    """One row per run of a batch: parameters, status, steps done, time (ticking while it runs)."""

    def __init__(self, quiet: bool = False):
        super().__init__(quiet)
        self.rows: dict[int, dict] = {}

    def start(self, index: int, runner) -> None:
        if not self.rows and not self.quiet:
            self.say((runner.flow.name, "bold"), " batch ", (runner.record["batch"]["id"], "bold"),
                     f" (store {runner.store.url})")
        with self.lock:
            self.rows[index] = {"run": runner.run_id, "parameters": runner.parameters, "status": Status.QUEUED.value,
                                "steps": len(runner.flow.steps), "done": set(), "started": None, "ended": None}

    def event(self, index: int, e: dict) -> None:
        with self.lock:
            row = self.rows[index]
            if e["type"] == "run":
                row["status"] = e["status"]
                if e["status"] == Status.RUNNING:
                    row["started"] = time.monotonic()
                else:
                    row["ended"] = time.monotonic()
            elif e["type"] == "task" and e["status"] in DONE:
                row["done"].add(e["step"])
            else:
                return
        if not self.terminal and not self.quiet and e["type"] == "run":
            from jupyter_flow.ui.tables import elide_items  # lazy: rich (a batch's lines only)

            took = f" in {row['ended'] - row['started']:.1f}s" if row["ended"] and row["started"] else ""
            self.say(f"  run {row['run']} ({elide_items(row['parameters'], 200)}): ",
                     (e["status"], style(e["status"])), took)

    def _table(self):
        from jupyter_flow.ui.tables import elide_items, new_table  # lazy: rich, only on a terminal

        table = new_table(pad_edge=False)
        for column in ("#", "run", "parameters", "status", "steps", "time"):
            table.add_column(column, no_wrap=True)
        now = time.monotonic()
        with self.lock:
            for index, row in sorted(self.rows.items()):
                took = "" if row["started"] is None else f"{(row['ended'] or now) - row['started']:.1f}s"
                status = row["status"]
                table.add_row(str(index + 1), row["run"], elide_items(row["parameters"], 60),
                              f"[{style(status)}]{status}[/]", f"{len(row['done'])}/{row['steps']}", took)
        return table

    def summary(self, batch) -> None:
        counts: dict[str, int] = {}
        for run in batch.runs:
            counts[run.status] = counts.get(run.status, 0) + 1
        text: list = []
        for status, n in counts.items():
            text += [", "] * bool(text) + [(f"{n} {status}", style(status))]
        self.say("batch ", (batch.id, "bold"), f": {len(batch.record['sets'])} parameter sets, ", *text)
        for run in batch.runs:
            if run.error:
                self.say("  ", (f"run {run.id} failed at step {run.error['step']}: {run.error['message']}", "red"))
        if not batch.succeeded:
            self.say(f"  after fixing: jupyter flow batch --resume {batch.id}   |   its runs: "
                     f"jupyter flow runs --batch {batch.id}")
