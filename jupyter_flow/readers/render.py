"""Runs, tasks and values drawn as plain text and static HTML (strings, no widgets): what the client
objects' `__repr__`/`_repr_html_` show, and what the notebook views (ui/widgets) reuse.

A drawing only reads the record it is given; nothing is loaded or unpickled.
"""
from __future__ import annotations

import html

from jupyter_flow.store.preview import summary
from jupyter_flow.store.status import NOT_RUN, Status, color, combine


def badge(status: str) -> str:
    """A status in its colour, bold (HTML)."""
    return f'<span style="color:{color(status) or "#000"};font-weight:bold">{html.escape(str(status))}</span>'


def seconds(value) -> str:
    return "" if value is None else f"{value:.1f}s"


def size_text(n) -> str:
    """A byte count for people: `512 B`, `1.5 KB`, `2.0 GB` ('' when unknown)."""
    if n is None:
        return ""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000


def artifacts_html(title: str, values: dict) -> str:
    """Stored values (name -> metadata) as a table: name, type, size, preview."""
    if not values:
        return ""
    rows = "".join(f"<tr><td><code>{html.escape(n)}</code></td><td>{html.escape(summary(m))}</td>"
                   f"<td>{size_text(m.get('size'))}</td><td><pre style='margin:0'>{html.escape(m.get('preview', ''))}"
                   "</pre></td></tr>" for n, m in values.items())
    return f"<b>{title}</b><table><tr><th>name</th><th>type</th><th>size</th><th>preview</th></tr>{rows}</table>"


def task_html(record: dict) -> str:
    """A task record: status, time, error and traceback, inputs, outputs, failure snapshot names."""
    name = record["step"] + (f"[{record['index']}]" if record.get("foreach") is not None else "")
    parts = [f"<div><code>{html.escape(name)}</code> {badge(record['status'])} {seconds(record.get('duration'))}"
             + (f" attempt {record['attempt']}" if record.get("attempt", 1) > 1 else "") + "</div>"]
    error = record.get("error")
    if error:
        parts.append(f"<div style='color:{color(Status.FAILED)}'>{html.escape(error['type'])}: "
                     f"{html.escape(error['message'])}</div>")
        if error.get("traceback"):
            parts.append(f"<pre>{html.escape(error['traceback'])}</pre>")
    parts.append(artifacts_html("inputs", record.get("inputs") or {}))
    parts.append(artifacts_html("outputs", record.get("outputs") or {}))
    if record.get("failure"):
        parts.append("<b>failure snapshot</b>: " + ", ".join(f"<code>{html.escape(v)}</code>"
                                                              for v in record["failure"]["variables"]))
    return "".join(parts)


def run_html(record: dict, tasks: bool = False) -> str:
    """A run and its steps' status (record from `client.get_run`) as static HTML; `tasks`: each task too."""
    params = ", ".join(f"{k}={v!r}" for k, v in record.get("parameters", {}).items())
    metrics = ", ".join(f"{k}={v:.4g}" for k, v in (record.get("metrics") or {}).items())
    head = (f"<div><b>{html.escape(record['flow'])}</b> run <code>{record['id']}</code> {badge(record['status'])} "
            f"{seconds(record.get('duration'))}</div>"
            + (f"<div>parameters: {html.escape(params)}</div>" if params else "")
            + (f"<div>metrics: {html.escape(metrics)}</div>" if metrics else "")
            + (f"<div style='color:{color(Status.FAILED)}'>failed at step {html.escape(record['error']['step'])}: "
               f"{html.escape(record['error']['message'])}</div>" if record.get("error") else ""))
    by_step: dict[str, list] = {}
    for t in record.get("tasks", []):
        by_step.setdefault(t["step"], []).append(t["status"])
    steps = "".join(f"<tr><td><code>{html.escape(s['name'])}</code></td>"
                    f"<td>{badge(combine(by_step[s['name']]).value if s['name'] in by_step else NOT_RUN)}</td>"
                    f"<td>{html.escape(', '.join(s.get('prev') or []))}</td>"
                    f"<td>{len(by_step.get(s['name'], []))}</td></tr>"
                    for s in record["steps"])
    table = f"<table><tr><th>step</th><th>status</th><th>after</th><th>tasks</th></tr>{steps}</table>"
    return head + table + ("".join(task_html(t) for t in record.get("tasks", [])) if tasks else "")


def run_text(record: dict) -> str:
    """A run and each task's status and time, one line each."""
    lines = [f"run {record['id']} ({record['flow']}) {record['status']} {seconds(record.get('duration'))}".rstrip()]
    if record.get("error"):
        lines.append(f"  failed at step {record['error']['step']}: {record['error']['message']}")
    lines += [f"  {t['step']}[{t['index']}]: {t['status']} {seconds(t.get('duration'))}".rstrip()
              for t in record.get("tasks", [])]
    return "\n".join(lines)
