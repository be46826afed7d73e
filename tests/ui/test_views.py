"""Terminal views that don't mislead: elision marked with …, previews with shape and dtype, no
wrapping or broken paths in pipes, ticking times, tracebacks in logs, artifacts with the snapshot."""
from __future__ import annotations

import json

import nbformat
import pytest
from conftest import cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jupyter_flow.store.preview import elide
from jupyter_flow.ui.tables import elide_items


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200), st.integers(5, 120))
@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
def test_elided_text_is_a_marked_prefix(text, width):
    shown = elide(text, width)
    first = (text.splitlines() or [""])[0]
    assert len(shown) <= width
    if shown == first:
        assert len(text.splitlines()) <= 1
    else:
        assert shown.endswith("…") and first.startswith(shown[:-1].rstrip(" …"))


@given(st.dictionaries(st.text("abcdefghijk_", min_size=1, max_size=12),
                       st.one_of(st.integers(), st.text(max_size=30), st.floats(allow_nan=False)), max_size=12),
       st.integers(20, 150))
@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
def test_elided_items_are_whole_or_marked(values, width):
    shown = elide_items(values, width)
    full = ", ".join(f"{k}={v!r}" for k, v in values.items())
    if shown != full:
        assert "…" in shown  # never a silent cut
    if len(full) <= width and all(len(repr(v)) <= 40 for v in values.values()):
        assert shown == full
    assert not values or shown.startswith(f"{next(iter(values))}=")  # in the parameters' order
    assert len(shown) <= width or shown.startswith(f"{next(iter(values))}=")


def test_live_time_ticks_while_a_step_runs(monkeypatch):
    """The live table's time column is computed when drawn, not when a step ends (clock stubbed)."""
    from types import SimpleNamespace

    from jupyter_flow.ui import progress

    clock = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    view = progress.Progress(quiet=True)
    flow = SimpleNamespace(steps={"train": SimpleNamespace(foreach=None)}, warnings=[], name="f")
    view.set_runner(SimpleNamespace(flow=flow))
    view.event({"type": "task", "step": "train", "index": 0, "status": "running"})

    def time_cell():
        return list(view._table().columns[3].cells)[0]

    clock[0] = 103.0
    assert time_cell() == "3.0s"
    clock[0] = 107.5
    assert time_cell() == "7.5s"


@pytest.fixture
def arrays_notebook(tmp_path):
    nb = nbformat.v4.new_notebook()
    long = "a parameter value long enough to be elided in a table, " * 3
    nb.cells = [
        nbformat.v4.new_code_cell(f"k_features = 10\nlabel = {long!r}\nseed = 0\nalpha = 0.5",
                                  metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("import numpy as np\nimport pandas as pd", metadata={"tags": ["imports"]}),
        nbformat.v4.new_code_cell("X = np.arange(569 * 30, dtype=float).reshape(569, 30) / 7\n"
                                  "frame = pd.DataFrame(X[:, :8])", metadata={"tags": ["step:make"]}),
        nbformat.v4.new_code_cell("print('mean', X.mean())\nbad = frame.shape[0] / (k_features - 10)",
                                  metadata={"tags": ["step:use"]}),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "arrays.ipynb"
    nbformat.write(nb, str(path))
    return path


@pytest.mark.slow
def test_terminal_views_of_a_failed_run(store, arrays_notebook):
    narrow = {"COLUMNS": "80"}  # an 80-column terminal: ids, paths and commands stay whole for copy-paste
    said = cli("run", arrays_notebook, env=narrow, check=1).stderr
    run = json.loads(cli("runs", "--format", "json", check=0).stdout)[0]
    lines = said.splitlines()
    for whole in (f"run {run['id']} failed", f"jupyter flow logs {run['id']} use",
                  f"jupyter_flow.load({run['id']!r}, 'use')", f"jupyter flow resume {run['id']}",
                  f"{store}/flows/arrays/runs/{run['id']}/*/*/attempts/*/output.ipynb"):
        assert any(whole in line for line in lines), (whole, said)
    assert max(map(len, lines)) > 80  # long lines overflow the terminal rather than being broken
    for command in (("show", run["id"]), ("show", run["id"], "--step", "use")):
        out = cli(*command, env=narrow, check=0).stdout
        assert f"run {run['id']}" in out or f"%flow load {run['id']} use" in out, out

    listed = cli("runs", check=0).stdout  # a pipe: not wrapped at 80 columns, values never cut silently
    row = next(line for line in listed.splitlines() if run["id"] in line)
    assert "k_features=10, label='a parameter value long enough to be…, seed=0, alpha=0.5" in row

    logs = cli("logs", run["id"], "use", check=0).stdout
    assert logs.startswith("mean 1219.21")  # what the step printed, then the traceback
    assert "----> 2 bad = frame.shape[0] / (k_features - 10)" in logs
    assert logs.rstrip().endswith("ZeroDivisionError: division by zero")

    shown = cli("artifacts", run["id"], "use", check=0).stdout
    lines = shown.splitlines()
    assert any(line.split()[:3] == ["input", "X", "numpy.ndarray"] and "(569, 30) float64" in line for line in lines)
    assert any(line.split()[:3] == ["snapshot", "frame", "pandas.DataFrame"] and "(569, 8) float64(8)" in line
               for line in lines)
    assert "array([[" in shown and "…" not in shown.split("array([[")[1].splitlines()[0][:20]
    artifacts = json.loads(cli("artifacts", run["id"], "use", "--format", "json", check=0).stdout)
    assert set(artifacts["failure"]["variables"]) >= {"X", "frame"} and artifacts["outputs"] == {}
    for meta in [*artifacts["inputs"].values(), *artifacts["failure"]["variables"].values()]:
        assert meta["preview"].endswith(("…", ")", "]", "'")) or meta["preview"][-1].isdigit(), meta["preview"]

    detail = cli("show", run["id"], check=0).stdout
    folder = f"{store}/flows/arrays/runs/{run['id']}/"
    assert folder in detail  # the whole path on one line, never broken
    assert "X: numpy.ndarray (569, 30) float64" in detail
    assert "ZeroDivisionError: division by zero" in detail
