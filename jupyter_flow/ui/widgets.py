"""Views of runs inside a notebook (ipywidgets), with static HTML and text where no widget frontend is.

- `LiveRun`: what `jupyter_flow.run(...)` shows in a notebook while the run goes: each step with its
  status, elapsed time (ticking) and a progress bar for foreach fan-outs; a Cancel button. It only
  observes the runtime's events.
- `show(run)`: a finished (or running) run read from the store: steps, tasks, artifacts with
  previews, and the error of a failed task with a "Load into this kernel" button.
- `compare(runs)`: parameters and metrics side by side, the best value of each metric highlighted.

Every view also carries `text/html` and `text/plain`, so plain IPython, papermill output and saved
notebooks viewed later show a static copy.
"""
from __future__ import annotations

import html
import re
import threading
import time

from jupyter_flow.readers.client import Run
from jupyter_flow.readers.into_kernel import load
from jupyter_flow.readers.render import badge, run_html, run_text, seconds, task_html
from jupyter_flow.store.status import DONE, Status, color
from jupyter_flow.ui.progress import track_task

LOWER_IS_BETTER = re.compile(r"loss|err|mse|mae|rmse|time|duration|latency", re.I)


def widget_frontend() -> bool:
    """True inside a Jupyter kernel (where a frontend may render widgets), False in plain Python/IPython."""
    try:
        from IPython import get_ipython  # only where a view is shown: the package's import stays light
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


class View:
    """A view with a widget (when there is a frontend), static HTML and text: display() picks."""

    widget = None

    def html(self) -> str:
        raise NotImplementedError

    def text(self) -> str:
        raise NotImplementedError

    def _repr_mimebundle_(self, include=None, exclude=None):
        bundle = {"text/plain": self.text(), "text/html": self.html()}
        if self.widget is not None:
            bundle.update(self.widget._repr_mimebundle_(include=include, exclude=exclude) or {})
            bundle["text/plain"] = self.text()
        return bundle

    def __repr__(self) -> str:
        return self.text()


# -- the live view of a running run ----------------------------------------------------------------
class LiveRun(View):
    """Steps of a run as they go. Feed it the runtime's events (`event`); it ticks elapsed times."""

    def __init__(self, runner, tick: float = 0.5):
        import ipywidgets as w  # 0.3 s: only when a widget is made

        self.runner, self.tick = runner, tick
        self.run_id, self.flow = runner.run_id, runner.flow.name
        self.status, self.t0, self.t1 = Status.QUEUED.value, None, None
        self.lock = threading.Lock()
        self.steps: dict[str, dict] = {}
        self.header = w.HTML()
        rows = []
        for name, step in runner.flow.steps.items():
            row = {"status": Status.QUEUED.value, "tasks": {}, "total": None if step.foreach else 1, "started": None,
                   "ended": None, "label": w.HTML(f"<code>{html.escape(name)}</code>"),
                   "state": w.Label(Status.QUEUED.value), "time": w.Label(""),
                   "bar": w.IntProgress(min=0, max=1, value=0, description="", layout=w.Layout(width="160px",
                                        visibility="visible" if step.foreach else "hidden"))}
            self.steps[name] = row
            self._show_status(name, row)
            rows.append(w.HBox([row["label"], row["state"], row["time"], row["bar"]]))
        self.cancel_button = w.Button(description="Cancel", button_style="danger", icon="stop")
        self.cancel_button.on_click(lambda _: self.cancel())
        self.widget = w.VBox([self.header, w.VBox(rows), self.cancel_button])
        self.handle = None
        self._display = None
        self._render_header()

    # observing the runtime
    def event(self, e: dict) -> None:
        with self.lock:
            if e["type"] == "run":
                self.status = e["status"]
                if e["status"] == Status.RUNNING:
                    self.t0 = time.monotonic()
                else:
                    self.t1 = time.monotonic()
            elif e["type"] == "foreach":
                row = self.steps[e["step"]]
                row["total"] = e["count"]
                row["bar"].max = max(e["count"], 1)
            elif e["type"] == "task":
                self._task_event(self.steps[e["step"]], e)
        if e["type"] == "run" and e["status"] != Status.RUNNING:
            self.finish()
        else:
            self._render_header()

    def _task_event(self, row: dict, e: dict) -> None:
        track_task(row, e)
        self._show_status(e["step"], row)
        row["bar"].value = sum(s in DONE for s in row["tasks"].values())
        self._render_time(row, time.monotonic())

    @staticmethod
    def _show_status(name: str, row: dict) -> None:
        """The status label: its text, its color, and CSS classes a page (or a test) can find it by."""
        status, label = row["status"], row["state"]
        label.remove_class(f"jp-flow-widget-is-{label.value}")
        for css in ("jp-flow-widget-status", f"jp-flow-widget-step-{name}", f"jp-flow-widget-is-{status}"):
            label.add_class(css)
        label.value = status
        label.style.text_color = color(status)
        row["label"].value = f'<code style="color:{color(status)}">{html.escape(name)}</code>'

    def _render_time(self, row: dict, now: float) -> None:
        if row["started"] is not None:
            row["time"].value = seconds((row["ended"] or now) - row["started"])

    def _render_header(self) -> None:
        elapsed = "" if self.t0 is None else f" · {seconds((self.t1 or time.monotonic()) - self.t0)}"
        self.header.value = (f"<b>{html.escape(self.flow)}</b> run <code>{self.run_id}</code> "
                             f"{badge(self.status)}{elapsed}")

    def _ticker(self) -> None:
        while self.t1 is None:
            now = time.monotonic()
            with self.lock:
                for row in self.steps.values():
                    if row["status"] == Status.RUNNING:
                        self._render_time(row, now)
            self._render_header()
            time.sleep(self.tick)  # a display refresh rate, not a wait for a state

    def start(self, handle) -> None:
        from IPython.display import display  # only where a view is shown

        self.handle = handle
        self._display = display(self, display_id=True)
        threading.Thread(target=self._ticker, daemon=True, name=f"jupyter-flow-view-{self.run_id}").start()

    def cancel(self) -> None:
        self.cancel_button.disabled = True
        self.cancel_button.description = "Cancelling"
        if self.handle is not None:
            self.handle.cancel()

    def finish(self) -> None:
        self.t1 = self.t1 or time.monotonic()
        self._render_header()
        self.cancel_button.disabled = True
        self.cancel_button.layout.display = "none"
        if self._display is not None:
            self._display.update(self)  # the saved notebook keeps the final state as HTML

    def state(self) -> dict:
        """Each step's status, elapsed time and foreach progress, as the widget shows them."""
        return {name: {"status": r["state"].value, "time": r["time"].value, "done": r["bar"].value,
                       "total": r["total"]} for name, r in self.steps.items()}

    def html(self) -> str:
        rows = "".join(f"<tr><td><code>{html.escape(n)}</code></td><td>{badge(s['status'])}</td><td>{s['time']}</td>"
                       f"<td>{s['done']}/{s['total'] if s['total'] is not None else '?'}</td></tr>"
                       for n, s in self.state().items())
        return (f"<div>{self.header.value}<table><tr><th>step</th><th>status</th><th>time</th><th>tasks</th></tr>"
                f"{rows}</table></div>")

    def text(self) -> str:
        lines = [f"{self.flow} run {self.run_id} {self.status}"]
        lines += [f"  {n}: {s['status']} {s['time']}".rstrip() for n, s in self.state().items()]
        return "\n".join(lines)


# -- a run from the store ---------------------------------------------------------------------------
class RunView(View):
    def __init__(self, run):
        import ipywidgets as w  # 0.3 s: only when a widget is made

        self.run = run
        self.load_buttons: dict = {}
        self.loaded = w.Output()
        children = [w.HTML(run_html(run.record))]
        for task in run.record["tasks"]:
            section = [w.HTML(task_html(task))]
            if task.get("error") and task.get("failure"):
                button = w.Button(description="Load into this kernel", icon="download",
                                  tooltip=f"jupyter_flow.load({run.id!r}, {task['step']!r}, index={task['index']})")
                button.on_click(lambda _, t=task: self.load(t["step"], t["index"]))
                self.load_buttons[(task["step"], task["index"])] = button
                section.append(button)
            children.append(w.VBox(section, layout=w.Layout(border="1px solid #ddd", padding="4px", margin="2px 0")))
        children.append(self.loaded)
        self.widget = w.VBox(children)

    def load(self, step: str, index: int = 0) -> dict:
        """What the button does: the task's failure snapshot into the kernel's namespace (load pushes
        it there); the values, by name."""
        with self.loaded:
            return load(self.run.id, step, store=self.run.store, index=index)

    def html(self) -> str:
        return run_html(self.run.record, tasks=True)

    def text(self) -> str:
        return run_text(self.run.record)


def show(run, store=None):
    """Show a run (a `Run` or a run id): steps with status, tasks, artifacts with previews, errors with
    a "Load into this kernel" button. Returns the view; a widget in a notebook, HTML/text elsewhere."""
    run = run if isinstance(run, Run) else Run(run, store)
    return RunView(run) if widget_frontend() else StaticView(run_html(run.record, tasks=True), run_text(run.record))


class StaticView(View):
    def __init__(self, html_text: str, text: str):
        self._html, self._text = html_text, text

    def html(self) -> str:
        return self._html

    def text(self) -> str:
        return self._text


# -- several runs side by side ---------------------------------------------------------------------------
def best_values(runs) -> dict[str, float]:
    """The best value of each metric over `runs`: lowest for loss/error/time-like names, else highest."""
    best: dict[str, float] = {}
    for name in {m for r in runs for m in (r.metrics or {})}:
        values = [r.metrics[name] for r in runs if isinstance((r.metrics or {}).get(name), (int, float))]
        if values:
            best[name] = min(values) if LOWER_IS_BETTER.search(name) else max(values)
    return best


def compare(runs, store=None) -> View:
    """Parameters and metrics of several runs side by side; the best value of each metric in bold green."""
    runs = [r if isinstance(r, Run) else Run(r, store) for r in runs]
    best = best_values(runs)
    missing = object()
    rows = [("parameter", n, [r.parameters.get(n, missing) for r in runs], missing)
            for n in dict.fromkeys(p for r in runs for p in r.parameters)]
    rows += [("metric", n, [(r.metrics or {}).get(n, missing) for r in runs], best[n]) for n in sorted(best)]

    def cell(value, top) -> str:
        shown = "" if value is missing else f"{value:.4g}" if isinstance(value, float) else html.escape(repr(value))
        return f"<td style='font-weight:bold;background:#d4f7d4'>{shown}</td>" if value == top else f"<td>{shown}</td>"

    head = "".join(f"<th><code>{r.id}</code><br>{badge(r.status)}</th>" for r in runs)
    body = "".join(f"<tr><th style='text-align:left'>{kind} <code>{html.escape(name)}</code></th>"
                   + "".join(cell(v, top) for v in values) + "</tr>" for kind, name, values, top in rows)
    table = f"<table><tr><th></th>{head}</tr>{body}</table>"
    text = "\n".join(" | ".join(line) for line in [["name"] + [r.id for r in runs]] + [
        [name] + ["" if v is missing else repr(v) + ("*" if v == top else "") for v in values]
        for _, name, values, top in rows])
    view = StaticView(table, text)
    if widget_frontend():
        import ipywidgets as w  # 0.3 s: only when a widget is made

        view.widget = w.HTML(table)
    return view
