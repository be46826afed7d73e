"""Reading runs back: cache, namespaces, metrics, the runs table, logs, artifacts, gc, concurrent runs."""
import json
import subprocess
from pathlib import Path

import pytest
from conftest import SCENARIOS, cli, wait_for

import jupyter_flow
from jupyter_flow.readers import client

pytestmark = pytest.mark.slow


def _set_source(notebook: Path, old: str, new: str) -> None:
    raw = json.loads(notebook.read_text())
    for cell in raw["cells"]:
        source = "".join(cell["source"])
        if old in source:
            cell["source"] = source.replace(old, new)
    notebook.write_text(json.dumps(raw))


def test_unchanged_rerun_is_served_from_cache(run_flow, notebook_copy, tmp_path):
    counter = tmp_path / "count.txt"
    notebook = notebook_copy("counter.ipynb")
    first = run_flow(notebook, parameters={"counter_path": str(counter)})
    second = run_flow(notebook, parameters={"counter_path": str(counter)})
    assert [t.status for t in second.tasks] == ["cached"] * 4
    assert counter.read_text().split() == ["a", "b", "c", "d"]  # nothing ran twice
    assert second["d"].origin["run_id"] == first.id and second["d"].data.d == 4
    assert "d = c + 1" in second["d"].notebook.cells[-2].source  # the origin's executed notebook

    _set_source(notebook, "c = b + 1", "c = b + 1  # a comment does not change the code")
    assert [t.status for t in run_flow(notebook, parameters={"counter_path": str(counter)}).tasks] == ["cached"] * 4

    _set_source(notebook, "c = b + 1", "c = b + 2")
    changed = run_flow(notebook, parameters={"counter_path": str(counter)})
    assert [changed[s].status for s in "abcd"] == ["cached", "cached", "succeeded", "succeeded"]
    assert changed["d"].data.d == 5

    other = run_flow(notebook, parameters={"counter_path": str(tmp_path / "other.txt")})
    assert all(t.status == "succeeded" for t in other.tasks)  # a parameter the steps read changed


def test_no_cache_and_cache_disabled(run_flow, tmp_path):
    params = {"counter_path": str(tmp_path / "c.txt")}
    run_flow("counter.ipynb", parameters=params)
    again = run_flow("counter.ipynb", parameters=params, no_cache=True)
    assert all(t.status == "succeeded" for t in again.tasks)


def test_namespaces_and_runs_table(store):
    for user, start in (("alice", "1"), ("bob", "2")):
        cli("run", SCENARIOS / "linear.ipynb", "-p", "start", start, "--quiet", env={"JUPYTERHUB_USER": user},
            check=0)
    mine = json.loads(cli("runs", "--format", "json", env={"JUPYTERHUB_USER": "alice"}, check=0).stdout)
    assert [r["user"] for r in mine] == ["alice"]
    everyone = json.loads(cli("runs", "--all-users", "--format", "json", check=0).stdout)
    assert sorted(r["user"] for r in everyone) == ["alice", "bob"]

    jupyter_flow.namespace("bob")
    try:
        flow = jupyter_flow.Flow("linear", store=store)
        assert [r.user for r in flow.runs()] == ["bob"]
        assert flow.latest_successful_run.parameters == {"start": 2}
        jupyter_flow.namespace(None)
        assert len(flow.runs()) == 2
        table = jupyter_flow.runs_table("linear", store=store)
        assert list(table.sort_values("start")["user"]) == ["alice", "bob"]
        assert set(table.columns) >= {"id", "status", "user", "start", "duration"}
    finally:
        jupyter_flow.namespace()


def test_metrics_from_record_and_pipeline_metrics(run_flow, store):
    run = run_flow("explicit_prev.ipynb")
    assert run.metrics["total"] == 5
    jupyter_flow.namespace(None)
    try:
        table = jupyter_flow.runs_table("explicit_prev", store=store)
    finally:
        jupyter_flow.namespace()
    assert table.loc[0, "total"] == 5 and table.loc[0, "n"] == 3


def test_record_works_outside_a_run():
    assert jupyter_flow.record("loss", 0.5) == 0.5
    with pytest.raises(TypeError, match="a metric is a number"):
        jupyter_flow.record("name", "text")


def test_logs_and_artifacts_commands(run_flow):
    run = run_flow("explicit_prev.ipynb")
    shown = cli("artifacts", run.id, "load", "--format", "json", check=0)
    assert json.loads(shown.stdout)["outputs"]["values"]["preview"] == "[0, 1, 2]"
    assert "values" in cli("artifacts", run.id, "load", check=0).stdout
    proc = cli("logs", run.id, "nope")
    assert proc.returncode == 2 and "no step 'nope'" in proc.stderr


def test_task_log_holds_what_cells_printed(run_flow):
    run = run_flow("error_notebook.ipynb", expect="failed")
    assert run["second"].log is not None
    assert "ZeroDivisionError" not in cli("logs", run.id, "first", check=0).stdout


def test_gc_keeps_newest_runs_and_their_blobs(run_flow, store):
    runs = [run_flow("linear.ipynb", parameters={"start": n}) for n in (1, 2, 3)]
    report = cli("gc", "--keep", "1", check=0).stdout
    assert "deleted 2 runs" in report
    kept = jupyter_flow.Run(runs[-1].id, store=store)
    assert kept["e"].data.e == 109  # its values are intact
    assert [r["id"] for r in client.list_runs(store)] == [runs[-1].id]


def test_two_runs_at_once_on_one_store(store):
    procs = [subprocess.Popen(["jupyter", "flow", "run", SCENARIOS / "linear.ipynb", "-p", "start", str(n),
                               "--quiet", "--no-cache"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for n in (1, 2)]
    ids = [p.communicate(timeout=300)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0] and len(set(ids)) == 2
    values = sorted(jupyter_flow.Run(i, store=store)["e"].data.e for i in ids)
    assert values == [69, 89]


def test_background_run_and_cancel_in_process(store):
    from jupyter_flow import runtime

    events = []
    handle = runtime.start_run(SCENARIOS / "slow.ipynb", parameters={"sleep_s": 600}, store=store,
                               on_event=events.append)
    wait_for(lambda: any(e.get("step") == "sleepy" and e["status"] == "running" for e in events),
             what="a running event for sleepy")
    handle.cancel()
    assert handle.wait(240) == "cancelled"
    assert client.get_run(store, handle.run_id)["status"] == "cancelled"
