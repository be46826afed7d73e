"""The notebook views, in a real kernel: the test plays the widget frontend, reading the widget models'
state from the kernel's comm messages (as JupyterLab would) and clicking buttons the same way."""
from __future__ import annotations

import json
import os
import queue

import pytest
from conftest import SCENARIOS
from jupyter_client.manager import start_new_kernel

pytestmark = pytest.mark.slow


class Frontend:
    """A kernel plus what a widget frontend would know: every widget model and its state history."""

    def __init__(self):
        self.km, self.kc = start_new_kernel(kernel_name="python3", env=dict(os.environ))
        self.models: dict[str, dict] = {}  # comm id -> current state
        self.history: list[tuple[str, dict]] = []  # (comm id, state update), in order
        self.displays: list[dict] = []

    def _take(self, msg) -> None:
        kind, content = msg["msg_type"], msg["content"]
        if kind == "comm_open" and content.get("target_name") == "jupyter.widget":
            self.models[content["comm_id"]] = dict(content["data"]["state"])
            self.history.append((content["comm_id"], dict(content["data"]["state"])))
        elif kind == "comm_msg" and content["data"].get("method") == "update":
            self.models.setdefault(content["comm_id"], {}).update(content["data"]["state"])
            self.history.append((content["comm_id"], content["data"]["state"]))
        elif kind in ("display_data", "update_display_data"):
            self.displays.append(content["data"])

    def execute(self, code: str, timeout: float = 240) -> str:
        """Run `code`; return what it printed. Messages of other origins (widget threads) are kept too."""
        msg_id = self.kc.execute(code)
        out: list[str] = []
        while True:
            msg = self.kc.get_iopub_msg(timeout=timeout)
            self._take(msg)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                out.append(content["text"])
            elif kind == "error":
                raise AssertionError("\n".join(content["traceback"]))
            elif kind == "status" and content["execution_state"] == "idle":
                return "".join(out)

    def until(self, condition, timeout: float = 240) -> None:
        """Read the kernel's messages (widget updates from its threads) until `condition()` holds."""
        import time

        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, "the widgets never reached the expected state"
            try:
                self._take(self.kc.get_iopub_msg(timeout=1))
            except queue.Empty:
                pass

    def click(self, comm_id: str) -> None:
        msg = self.kc.session.msg("comm_msg", {"comm_id": comm_id, "data": {"method": "custom",
                                                                            "content": {"event": "click"}}})
        self.kc.shell_channel.send(msg)

    def find(self, model: str, **state) -> list[str]:
        return [c for c, s in self.models.items() if s.get("_model_name") == model
                and all(s.get(k) == v for k, v in state.items())]

    def values(self, comm_id: str, key: str = "value") -> list:
        return [s[key] for c, s in self.history if c == comm_id and key in s]

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


@pytest.fixture
def frontend(store):
    f = Frontend()
    f.execute(f"import jupyter_flow\nSTORE = {store!r}")
    yield f
    f.close()


def test_live_widget_follows_a_run(frontend):
    frontend.execute(f"run = jupyter_flow.run({str(SCENARIOS / 'foreach.ipynb')!r}, store=STORE, wait=False)")
    assert frontend.execute("print(run.wait().status)").strip() == "succeeded"
    frontend.until(lambda: frontend.find("HTMLModel") and "succeeded" in frontend.models[
        _header(frontend)].get("value", ""))
    # one status label per step; each went queued -> running -> succeeded, in that order
    statuses = [c for c, s in frontend.models.items() if s.get("_model_name") == "LabelModel"
                and s.get("value") in ("queued", "running", "succeeded")]
    assert len(statuses) == 6  # one per step of the notebook
    for comm in statuses:
        seen = frontend.values(comm)
        assert seen[0] == "queued" and seen[-1] == "succeeded" and "running" in seen, seen
    # the foreach steps' progress bars count their tasks: 3 doubles, 4 measures
    bars = sorted((s["max"], s["value"]) for s in frontend.models.values()
                  if s.get("_model_name") == "IntProgressModel" and s["max"] > 1)
    assert bars == [(3, 3), (4, 4)]
    # a saved notebook, or a frontend without widgets, shows the final state as HTML
    final = frontend.displays[-1]
    assert "application/vnd.jupyter.widget-view+json" in final
    assert "succeeded" in final["text/html"] and "running" not in final["text/html"]
    assert "double" in final["text/plain"]


def _header(frontend) -> str:
    return next(c for c, s in frontend.models.items() if s.get("_model_name") == "HTMLModel"
                and "run <code>" in s.get("value", ""))


def test_elapsed_time_ticks_and_cancel_button_stops_the_run(frontend):
    frontend.execute(f"run = jupyter_flow.run({str(SCENARIOS / 'slow.ipynb')!r}, store=STORE, wait=False)")
    running = lambda: frontend.find("LabelModel", value="running")  # noqa: E731
    frontend.until(running)
    # the time label next to the running step shows growing times while it runs (no step event in between)
    times = lambda: {v for c, s in frontend.models.items() if s.get("_model_name") == "LabelModel"  # noqa: E731
                     for v in frontend.values(c) if str(v).endswith("s") and v != "0.0s"}
    frontend.until(lambda: len(times()) >= 2)
    button = frontend.find("ButtonModel", description="Cancel")[0]
    frontend.click(button)
    assert frontend.execute("print(run.wait().status)").strip() == "cancelled"
    frontend.until(lambda: frontend.models[button].get("disabled") is True)


def test_show_a_failed_run_and_load_its_snapshot(frontend, run_flow):
    failed = run_flow("error_notebook.ipynb", expect="failed")
    shown = json.loads(frontend.execute(
        f"from IPython.display import display\nview = jupyter_flow.show({failed.id!r}, store=STORE)\ndisplay(view)\n"
        "import json; print(json.dumps({'kind': type(view).__name__, 'children': [type(c).__name__ for c in "
        "view.widget.children], 'buttons': [str(k) for k in view.load_buttons]}))"))
    assert shown["kind"] == "RunView"
    assert shown["children"][0] == "HTML" and shown["buttons"] == ["('second', 0)"]
    header = next(s["value"] for s in frontend.models.values() if "run <code>" in str(s.get("value")))
    assert failed.id in header and "failed" in header and "not run" in header  # `third` never ran
    html = " ".join(str(s.get("value")) for s in frontend.models.values())
    assert "ZeroDivisionError" in html and "division by zero" in html  # the error, with its traceback
    assert "failure snapshot" in html
    button = frontend.find("ButtonModel", description="Load into this kernel")[0]
    frontend.click(button)
    printed = frontend.execute("import time\nwhile 'b' not in globals(): time.sleep(0.05)\nprint(a, b)")
    assert printed.split() == ["2", "0"]


def test_compare_highlights_the_best_metric(frontend, run_flow):
    runs = [run_flow("explicit_prev.ipynb", parameters={"n": n}) for n in (2, 4)]
    frontend.execute(f"from IPython.display import display\ndisplay(jupyter_flow.compare({[r.id for r in runs]!r}, "
                     "store=STORE))")
    table = next(s["value"] for s in frontend.models.values() if "<table>" in str(s.get("value")))
    assert all(r.id in table for r in runs)
    best = max(runs, key=lambda r: r.metrics["total"])
    assert f"background:#d4f7d4'>{best.metrics['total']:.4g}<" in table
    assert "parameter <code>n</code>" in table


def test_views_fall_back_to_html_and_text_without_a_frontend(run_flow):
    import jupyter_flow

    run = run_flow("error_notebook.ipynb", expect="failed")
    view = jupyter_flow.show(run)
    assert view.widget is None  # no kernel here
    assert "ZeroDivisionError" in view._repr_mimebundle_()["text/html"]
    assert "failed at step second" in repr(view)
    assert "ZeroDivisionError" in run["second"].task._repr_html_()
    assert run.id in run._repr_html_() and "failed at step second" in repr(run)
    assert "int" in repr(run["first"].artifacts["x"])
    assert jupyter_flow.compare([run])._repr_mimebundle_()["text/plain"].startswith("name | " + run.id)
