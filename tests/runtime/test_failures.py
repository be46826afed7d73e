"""Failure as a starting point: snapshots, loading state into a kernel, resume, retry, timeout, catch,
killed tasks, crashed runners, cancel."""
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from conftest import SCENARIOS, cli, wait_for

import jupyter_flow

pytestmark = pytest.mark.slow


def test_failed_step_keeps_notebook_error_and_snapshot(run_flow, store):
    run = run_flow("error_notebook.ipynb", expect="failed")
    second = run["second"]
    assert second.status == "failed"
    assert second.error["type"] == "ZeroDivisionError" and second.error["source_cell"] is not None
    assert set(second.task.record["failure"]["variables"]) >= {"a", "b", "x"}
    executed = second.notebook
    assert any(c.get("metadata", {}).get("papermill", {}).get("exception") for c in executed.cells)
    assert "ZeroDivisionError" in json.dumps(executed.cells[-2].outputs if len(executed.cells) > 1 else [])
    assert run["first"].status == "succeeded"
    with pytest.raises(Exception, match="did not run"):
        run["third"]


def _kernel_values(code_before: str, names: list[str], env: dict | None = None) -> dict:
    """Start a real kernel (another process, optionally another user), run code, return values as JSON."""
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3", env={**os.environ, **(env or {})})
    try:
        reply = kc.execute_interactive(code_before, timeout=60)
        assert reply["content"]["status"] == "ok", reply["content"]
        outputs = []
        kc.execute_interactive(f"import json; print(json.dumps({{n: globals().get(n) for n in {names!r}}}))",
                               timeout=30, output_hook=lambda m: outputs.append(m))
        text = "".join(m["content"].get("text", "") for m in outputs if m["msg_type"] == "stream")
        return json.loads(text.strip().splitlines()[-1])
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_load_failure_snapshot_into_a_fresh_kernel(run_flow, store):
    run = run_flow("error_notebook.ipynb", expect="failed")
    values = _kernel_values(f"import jupyter_flow\nnames = jupyter_flow.load({run.id!r}, 'second', store={store!r})",
                            ["a", "b", "x", "names"])
    assert values["a"] == 2 and values["b"] == 0 and values["x"] == 1
    assert set(values["names"]) >= {"a", "b", "x"}


def test_another_user_loads_my_failed_run(store, tmp_path):
    proc = cli("run", SCENARIOS / "error_notebook.ipynb", "--quiet", env={"JUPYTERHUB_USER": "alice"})
    run_id = proc.stdout.strip()
    assert jupyter_flow.Run(run_id).user == "alice"
    values = _kernel_values(f"%load_ext jupyter_flow\n%flow_load {run_id} second --store {store}", ["a", "b"],
                            env={"JUPYTERHUB_USER": "bob"})
    assert values == {"a": 2, "b": 0}


def test_load_inputs_and_cells_outside_jupyter(run_flow, store, capsys):
    run = run_flow("error_notebook.ipynb", expect="failed")
    namespace = {}
    names = jupyter_flow.load(run.id, "second", store=store, into=namespace, state="inputs", cells=True)
    assert names == ["x"] and namespace == {"x": 1}
    printed = capsys.readouterr().out
    assert "Loaded inputs of second[0]" in printed and "source of step 'second'" in printed


def test_resume_reruns_only_the_failed_step_and_matches_a_clean_run(run_flow, notebook_copy, tmp_path, store):
    counter = tmp_path / "counter.txt"
    notebook = notebook_copy("counter.ipynb")
    failed = run_flow(notebook, parameters={"counter_path": str(counter), "fail": True}, expect="failed")
    assert counter.read_text().split() == ["a", "b", "c", "d"]
    resumed = jupyter_flow.resume(failed.id, parameters={"fail": False}, store=store)
    assert resumed.status == "succeeded" and resumed.origin_run == failed.id
    assert counter.read_text().split() == ["a", "b", "c", "d", "d"]  # a, b, c reused, not re-executed
    assert [resumed[s].status for s in "abc"] == ["reused"] * 3
    clean = run_flow(notebook, parameters={"counter_path": str(tmp_path / "other.txt"), "fail": False},
                     no_cache=True)
    assert resumed["d"].data.d == clean["d"].data.d == 4


def test_resume_picks_up_the_fixed_notebook_from_the_cli(notebook_copy, store, tmp_path):
    counter = tmp_path / "counter.txt"
    notebook = notebook_copy("counter.ipynb")
    proc = cli("run", notebook, "-p", "counter_path", counter, "-p", "fail", "True", "--quiet", check=1)
    run_id = proc.stdout.strip()
    raw = json.loads(notebook.read_text())
    for cell in raw["cells"]:  # "fix the code": the failing step no longer honours `fail`
        src = "".join(cell["source"])
        if "raise" in src:
            cell["source"] = src.replace("raise", "print('fixed') #")
    notebook.write_text(json.dumps(raw))
    proc = cli("resume", run_id, check=0)
    assert "reused" in proc.stderr
    assert counter.read_text().split() == ["a", "b", "c", "d", "d"]


def test_resume_from_a_step_reruns_it_and_downstream(run_flow, store, tmp_path):
    counter = tmp_path / "counter.txt"
    run = run_flow("counter.ipynb", parameters={"counter_path": str(counter)})
    again = jupyter_flow.resume(run.id, from_step="c", store=store)
    assert again.status == "succeeded"
    assert counter.read_text().split() == ["a", "b", "c", "d", "c", "d"]


def test_retry_keeps_every_attempt(run_flow, tmp_path, store):
    run = run_flow("retry.ipynb", parameters={"counter_path": str(tmp_path / "n.txt")})
    flaky = run["flaky"].task
    assert flaky.attempt == 2 and flaky.record["attempts"][0]["status"] == "failed"
    folder = Path(store) / "flows" / "retry" / "runs" / run.id / "flaky" / "0" / "attempts"
    first, second = sorted(folder.iterdir())  # each attempt's files in a folder of its own
    assert first.name.startswith("1-") and second.name.startswith("2-")
    assert (first / "output.ipynb").exists() and (first / "failure.json").exists()
    assert flaky.record["files_at"].endswith(second.name) and "RuntimeError" not in flaky.log
    assert run["after"].data.done == 11


def test_timeout_interrupts_and_snapshots(run_flow):
    run = run_flow("timeout.ipynb", expect="failed")
    slow = run["slow"].task
    assert slow.status == "timed_out" and "timed out after 2" in slow.error["message"]
    assert slow.duration < 30  # stopped before its 30 s sleep would have ended
    assert "x" in slow.record["failure"]["variables"]


def test_catch_lets_independent_steps_run_and_explains_missing_names(run_flow):
    run = run_flow("catch.ipynb", expect="failed")
    assert run["risky"].status == "failed" and run["independent"].data.z == 101
    assert "'risky_result' is missing: step 'risky' failed" in run["dependent"].error["message"]


def _running_task(store, step):
    def find():
        for path in Path(store).glob(f"flows/*/runs/*/{step}/0/task.json"):
            record = json.loads(path.read_text())
            if record["status"] == "running" and record.get("kernel_pid"):
                return record
    return wait_for(find)


def test_kill_9_of_a_task_is_recorded_and_resume_completes(store):
    proc = subprocess.Popen(["jupyter", "flow", "run", SCENARIOS / "slow.ipynb", "--quiet"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    task = _running_task(store, "sleepy")
    os.kill(task["kernel_pid"], signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    run = jupyter_flow.Run(out.strip())
    assert run["sleepy"].status == "failed"
    assert "killed by SIGKILL" in run["sleepy"].error["message"]
    resumed = jupyter_flow.resume(run.id, parameters={"sleep_s": 0}, store=store)
    assert resumed.status == "succeeded" and resumed["start"].status == "reused"


def test_a_dead_runner_shows_as_crashed(store):
    proc = subprocess.Popen(["jupyter", "flow", "run", SCENARIOS / "slow.ipynb", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    task = _running_task(store, "sleepy")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    runs = json.loads(cli("runs", "--format", "json", check=0).stdout)
    assert runs[0]["id"] == task["run_id"] and runs[0]["status"] == "crashed"
    shown = json.loads(cli("show", task["run_id"], "--format", "json", check=0).stdout)
    assert {t["step"]: t["status"] for t in shown["tasks"]}["sleepy"] == "crashed"
    wait_for(lambda: not _pid_alive(task["kernel_pid"]), what="its kernel to exit")  # it followed the runner


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_a_kernel_that_exits_says_its_status_and_its_last_words(run_flow, tmp_path):
    """A kernel process that dies by itself (a C library aborting, os._exit): the step's error gives its
    exit status and the last line the kernel process wrote on its own stderr, not only "Kernel died"."""
    from conftest import tagged_notebook

    nb = tagged_notebook(tmp_path, [
        (["step:a"], "x = 1"),
        (["step:b"], "import os, sys\nsys.__stderr__.write('boom from the kernel\\n')\nsys.__stderr__.flush()\n"
                     "os._exit(3)"),
    ])
    run = run_flow(nb, expect="failed")
    message = run["b"].error["message"]
    assert "exit status 3" in message and message.endswith("it said last: boom from the kernel"), message
