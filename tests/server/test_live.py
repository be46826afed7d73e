"""Server-sent events: a run pushed as it changes, a running task's log as it grows."""
import json

import nbformat
import pytest

from .conftest import API

pytestmark = pytest.mark.slow


def sse(chunks: list[bytes]) -> list[tuple[str, dict]]:
    events = []
    for block in b"".join(chunks).decode().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in lines:
            events.append((lines["event"], json.loads(lines["data"])))
    return events


def write_printer(path, lines=6, every=0.4):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell("import time", metadata={"tags": ["imports"]}),
        nbformat.v4.new_code_cell(
            f"for i in range({lines}):\n    print('tick', i, flush=True)\n    time.sleep({every})\nn = i",
            metadata={"tags": ["step:talk"]}),
        nbformat.v4.new_code_cell("m = n + 1", metadata={"tags": ["step:after"]}),
    ]
    nbformat.write(nb, str(path))


async def stream(jp_fetch, *route):
    chunks: list[bytes] = []
    response = await jp_fetch(*API.split("/"), *route, streaming_callback=chunks.append, request_timeout=180)
    assert response.code == 200
    assert response.headers["Content-Type"] == "text/event-stream"
    return sse(chunks)


def replay(events) -> list[dict]:
    """The run as the browser sees it after each `run` or `change` event (as api.ts merges them)."""
    runs = []
    for name, data in events:
        if name == "run":
            runs.append(data)
        elif name == "change":
            runs.append(merge(runs[-1], data))
    return runs


def merge(run: dict, change: dict) -> dict:
    merged = {k: v for k, v in {**run, **change["run"]}.items() if k not in change["gone"]}
    tasks = {(t["step"], t["index"]): t for t in run.get("tasks") or []}
    tasks.update({(t["step"], t["index"]): t for t in change["tasks"]})
    order = [s["name"] for s in merged.get("steps") or []]
    merged["tasks"] = sorted(tasks.values(), key=lambda t: (order.index(t["step"]) if t["step"] in order
                                                             else len(order), t["step"], t["index"]))
    return merged


async def test_run_stream_pushes_every_change_and_ends_with_the_run(api, jp_fetch, root):
    _, started, _ = await api("runs", "POST", {"path": "linear.ipynb"})
    events = await stream(jp_fetch, "runs", started["id"], "events")
    runs = replay(events)
    assert events[-1][0] == "end"
    _, final, _ = await api(f"runs/{started['id']}")
    assert runs[-1] == final and final["status"] == "succeeded" and len(final["tasks"]) == 5
    # each step's end was pushed on its own, not only the final state
    seen_done = [sum(t["status"] == "succeeded" for t in r["tasks"]) for r in runs]
    assert len(set(seen_done)) >= 4, seen_done
    # the whole run once, then only what changed: no change carries the five tasks again
    changes = [data for name, data in events if name == "change"]
    assert [name for name, _ in events].count("run") == 1 and changes
    assert all(len(c["tasks"]) < 5 for c in changes), changes


async def test_a_run_started_here_shows_its_step_running_without_polling(api, jp_fetch, root, jp_serverapp):
    # the runtime reports a task running before its process writes that into the store: the stream
    # re-reads soon after the report, instead of showing the step queued until it ends. The step
    # runs until the stream has shown it running (or 120 s, and then the test fails).
    release = root / "release"
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell("import os, time", metadata={"tags": ["imports"]}),
        nbformat.v4.new_code_cell(f"t0 = time.time()\nwhile not os.path.exists({str(release)!r}) "
                                  "and time.time() - t0 < 120:\n    time.sleep(0.05)\nn = 1",
                                  metadata={"tags": ["step:talk"]}),
        nbformat.v4.new_code_cell("m = n + 1", metadata={"tags": ["step:after"]}),
    ]
    nbformat.write(nb, str(root / "waiter.ipynb"))
    chunks: list[bytes] = []

    def talk_states():
        try:
            events = sse(chunks)
        except ValueError:  # a chunk ending inside an event
            return []
        return [t["status"] for run in replay(events) for t in run["tasks"] if t["step"] == "talk"]

    def received(chunk):
        chunks.append(chunk)
        if "running" in talk_states():
            release.touch()

    config = jp_serverapp.web_app.settings["jupyter_flow"].config
    config.poll_interval_ms, interval = 600_000, config.poll_interval_ms  # only reports wake the stream
    try:
        _, started, _ = await api("runs", "POST", {"path": "waiter.ipynb"})
        await jp_fetch(*API.split("/"), "runs", started["id"], "events", streaming_callback=received,
                       request_timeout=300)
    finally:
        config.poll_interval_ms = interval
    talk = talk_states()
    assert "running" in talk and talk[-1] == "succeeded", talk


async def test_a_running_tasks_log_arrives_while_it_runs(api, jp_fetch, root):
    write_printer(root / "printer.ipynb")
    _, started, _ = await api("runs", "POST", {"path": "printer.ipynb"})
    events = await stream(jp_fetch, "runs", started["id"], "tasks", "talk", "0", "log", "live")
    logs = [data for name, data in events if name == "log"]
    assert "".join(d["text"] for d in logs) == "".join(f"tick {i}\n" for i in range(6))
    # some ticks were sent while the task was still running, before it ended
    assert any(d["status"] == "running" and "tick" in d["text"] for d in logs), logs
    assert logs[-1]["status"] == "succeeded" and events[-1][0] == "end"


async def test_streams_of_unknown_runs_or_steps_are_404(api, wait_run):
    code, reply, _ = await api("runs/nope-123/events")
    assert code == 404 and "nope-123" in reply["message"]
    _, started, _ = await api("runs", "POST", {"path": "linear.ipynb"})
    await wait_run(started["id"])
    code, reply, _ = await api(f"runs/{started['id']}/tasks/zzz/0/log/live")
    assert code == 404 and "no step 'zzz'" in reply["message"]


async def test_the_dag_of_unsaved_content(api, root):
    nb = json.loads((root / "linear.ipynb").read_text())
    nb["cells"][-1]["metadata"]["tags"] = ["step:z"]  # rename the last step, unsaved
    code, dag, _ = await api("dag/live", "POST", {"path": "linear.ipynb", "content": nb})
    assert code == 200 and [s["name"] for s in dag["steps"]] == ["a", "b", "c", "d", "z"]
    assert json.loads((root / "linear.ipynb").read_text())["cells"][-1]["metadata"]["tags"] == ["step:e"]
    code, reply, _ = await api("dag/live", "POST", {"path": "linear.ipynb", "content": {"cells": 3}})
    assert code == 400 and "'cells' list" in reply["message"]
    nb["cells"][1]["metadata"]["tags"] = ["stpe:x"]
    code, reply, _ = await api("dag/live", "POST", {"path": "linear.ipynb", "content": nb})
    assert code == 400 and "stpe:x" in reply["message"]
