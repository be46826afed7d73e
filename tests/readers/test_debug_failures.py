"""The failing frames: kept when a step fails, listed by `show --step`, walked by %debug after a load."""
import json
import os
import re

import pytest
from conftest import SCENARIOS, cli, one_line_error

from jupyter_flow.store import open_store, records

pytestmark = pytest.mark.slow


@pytest.fixture
def failed(run_flow):
    return run_flow("frames_in_a_helper.ipynb", expect="failed")


def test_each_notebook_frame_and_the_first_library_frame_are_kept_with_their_locals(failed, store):
    record = failed["parse"].task.record
    frames = record["failure"]["frames"]
    assert [(f["where"], f["function"], f["line"]) for f in frames[:2]] == [("cell 4", "<module>", 3),
                                                                           ("cell 3", "parse", 4)]
    assert frames[2]["function"] == "loads" and frames[2]["where"].endswith("json/__init__.py")
    assert len(frames) == 3  # the json decoder's own frames under json.loads are left out
    assert frames[1]["locals"]["field"] == "'oops'" and frames[1]["locals"]["row"] == "'c,oops'"
    assert "cannot be pickled" in frames[1]["locals"]["guard"]  # named with its type
    s = open_store(store)
    failure = records.read_failure(s, records.read_task(s, records.find_run(s, failed.id), "parse", 0))
    local = failure["frames"][1]["locals"]["field"]
    assert s.load_value(local["hash"]) == "oops"  # a blob, as the globals are
    assert failure["frames"][1]["unpicklable"] == {"guard": "_thread.lock"}
    assert failure["frames"][1]["cell"] == 3 and "def parse(row):" in failure["frames"][1]["source"]


def test_show_step_lists_the_frames(failed, store):
    out = cli("show", failed.id, "--step", "parse", check=0).stdout
    assert "JSONDecodeError" in out
    assert "cell 3, line 4, in parse" in out and "field = 'oops'" in out
    assert "cell 4, line 3, in <module>" in out and "(library)" in out
    proc = cli("show", failed.id, "--step", "nosuch", check=2)
    assert "has no step 'nosuch'" in one_line_error(proc) and not proc.stdout


def _debug_session(code: str, commands: list[str], env: dict | None = None) -> str:
    """Run `code` in a fresh kernel (another process, maybe another user), then %debug with `commands`
    typed at its prompt; everything it showed, as text."""
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3", env={**os.environ, **(env or {})})
    shown, typed = [], iter(commands)

    def hook(msg):
        c = msg["content"]
        shown.append(c.get("text") or "\n".join(c.get("traceback") or [])
                     or str(c.get("data", {}).get("text/plain", "")))

    try:
        reply = kc.execute_interactive(code, timeout=60, output_hook=hook)
        assert reply["content"]["status"] == "ok", reply["content"]
        kc.execute_interactive("%debug", timeout=60, output_hook=hook, allow_stdin=True,
                               stdin_hook=lambda msg: kc.input(next(typed, "q")))
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    return re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(shown))


def test_debug_after_load_walks_a_colleagues_frames(store):
    run_id = cli("run", SCENARIOS / "frames_in_a_helper.ipynb", "--quiet",
                 env={"JUPYTERHUB_USER": "alice"}).stdout.strip()
    out = _debug_session(f"%load_ext jupyter_flow\n%flow_load {run_id} parse --store {store}",
                         ["p s", "up", "p field, row", "list", "up", "p seen", "p rows[2]", "q"])
    assert "JSONDecodeError: Expecting value" in out  # the load shows the colleague's traceback
    assert "'oops'" in out.split("p s")[0] or "'oops'" in out  # json.loads's own local
    assert "('oops', 'c,oops')" in out  # the helper's locals, one frame up
    assert "return json.loads(field)" in out  # `list` shows the cell's source
    assert "[1, 2]" in out and "'c,oops'" in out  # the cell's frame sees the snapshot's globals
    assert "frames_in_a_helper.ipynb, cell 3 of step parse" in out


def test_load_outside_ipython_makes_pdb_pm_work(failed, store):
    import sys

    import jupyter_flow

    ns = {}
    jupyter_flow.load(failed.id, "parse", store=store, into=ns, quiet=True)
    frames = []
    tb = sys.last_traceback.tb_next  # the first entry stands for the caller, as IPython expects
    while tb is not None:
        frames.append((tb.tb_frame.f_code.co_name, tb.tb_lineno, dict(tb.tb_frame.f_locals)))
        tb = tb.tb_next
    assert [(f[0], f[1]) for f in frames[:2]] == [("<module>", 3), ("parse", 4)] and frames[2][0] == "loads"
    assert frames[1][2] == {"row": "c,oops", "name": "c", "field": "oops"}
    assert isinstance(sys.last_value, json.JSONDecodeError)


def test_gc_keeps_the_frames_locals_of_a_kept_failed_run(tmp_path):
    from jupyter_flow.store import layout
    from jupyter_flow.store.gc import collect
    from jupyter_flow.store.records import RunRecord, TaskRecord
    from jupyter_flow.store.status import Status

    s = open_store(str(tmp_path / "store"))
    local, exc = s.save_value("oops")[0], s.save_value(ValueError("x"))[0]
    for digest in (local, exc):  # old enough for gc to take, were they not referenced
        path = os.path.join(s.url, *layout.blob(digest).split("/"))
        os.utime(path, (0, 0))
    run_id = "20250101T000000-000001"
    records.write_run(s, RunRecord(id=run_id, flow="f", status=Status("failed"), created="2025-01-01T00:00:00+00:00",
                                   heartbeat="2025-01-01T00:00:00+00:00", steps=[{"name": "a"}],
                                   user=records.current_user()))
    records.write_task(s, TaskRecord(run_id=run_id, flow="f", step="a", status=Status("failed")))
    s.write_json(layout.task_key("f", run_id, "a", 0) + "/failure.json",
                 {"variables": {}, "unpicklable": {}, "modules": {},
                  "frames": [{"function": "parse", "locals": {"field": {"hash": local}}, "exception": {"hash": exc}}]})
    collect(s, keep=1)
    assert s.load_value(local) == "oops" and isinstance(s.load_value(exc), ValueError)


def test_flow_load_magic_in_a_kernel_and_its_one_line_errors(store):
    run_id = cli("run", SCENARIOS / "frames_in_a_helper.ipynb", "--quiet").stdout.strip()
    out = _debug_session(f"%load_ext jupyter_flow\n%flow load {run_id} parse --store {store}\n"
                         "print('rows =', rows)\n%flow\n%flow unload x", ["q"])
    assert "Loaded failure snapshot of parse[0]" in out and "rows = [" in out
    assert out.count("error: %flow needs a command: load") == 2


def test_load_returns_the_values_and_writes_nowhere_outside_ipython(failed, store):
    import jupyter_flow

    before = set(globals())
    values = jupyter_flow.load(failed.id, "parse", store=store, quiet=True)
    assert values["seen"] == [1, 2] and set(globals()) == before  # nothing set in the caller's module
    assert values == list(values)  # equal to its names, as load returned before
