"""Cancel stops a run cleanly every time, and every interrupted task keeps its failure snapshot.

Every door is covered: Ctrl-C in the terminal (SIGINT to the foreground process group), SIGTERM,
`jupyter flow cancel` from another terminal, and `RunHandle.cancel()`. Each is tried at several
moments of the task's life (its kernel still booting, its kernel ready, its step running) while
every core is busy with another process, because that is where the races live.
"""
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from conftest import SCENARIOS, cli, wait_for

import jupyter_flow
from jupyter_flow import runtime

pytestmark = pytest.mark.slow

SLOW = SCENARIOS / "slow.ipynb"
LONG = ["-p", "sleep_s", "600"]  # never ends by itself within the test: only a cancel can stop it


def _task(store, step="sleepy") -> dict | None:
    for path in Path(store).glob(f"flows/*/runs/*/{step}/0/task.json"):
        try:
            return json.loads(path.read_text())
        except ValueError:  # being replaced right now
            return None
    return None


def _log(store, step="sleepy") -> str:
    # each attempt logs into its own folder (store/layout.py attempt_key) while it runs
    return "".join(p.read_text() for p in Path(store).glob(f"flows/*/runs/*/{step}/0/attempts/*/log.txt"))


MOMENTS = {
    # the task exists; its kernel may still be booting
    "task started": lambda store: (_task(store) or {}).get("status") == "running",
    # its kernel is ready and handed to the task
    "kernel ready": lambda store: bool((_task(store) or {}).get("kernel_pid")),
    # the step's own code is running
    "step running": lambda store: "sleepy: started" in _log(store),
}


def _wait_for_moment(moment: str, store, proc: subprocess.Popen) -> None:
    wait_for(lambda: MOMENTS[moment](store) or proc.poll() is not None, what=moment)
    assert proc.poll() is None, proc.communicate()


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _assert_cancelled_with_snapshot(store, run_id: str) -> None:
    run = jupyter_flow.Run(run_id, store)
    assert run.status == "cancelled", run.status
    assert run["start"].status == "succeeded"
    sleepy = run["sleepy"].task.record
    assert sleepy["status"] == "cancelled", sleepy
    # interrupted, snapshot taken, then killed: the step's parameters and inputs are kept, whenever it stopped
    assert {"x", "sleep_s"} <= set(sleepy.get("failure", {}).get("variables", [])), sleepy
    values: dict = {}
    jupyter_flow.load(run_id, "sleepy", store=store, into=values, state="failure", quiet=True)
    assert values["x"] == 1 and values["sleep_s"] == 600
    with pytest.raises(Exception, match="did not run"):
        run["after"]
    if sleepy.get("kernel_pid"):
        wait_for(lambda: _pid_gone(sleepy["kernel_pid"]), what="the interrupted kernel to exit")


@pytest.mark.parametrize("moment", MOMENTS)
def test_ctrl_c_in_the_terminal(store, busy_cores, moment):
    # A terminal's Ctrl-C is a SIGINT to the whole foreground process group: the CLI and every child
    # in its group. The CLI gets its own group here so that the signal reaches only what a terminal's would.
    proc = subprocess.Popen(["jupyter", "flow", "run", SLOW, *LONG], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    _wait_for_moment(moment, store, proc)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 1, err
    assert "cancelled" in err
    _assert_cancelled_with_snapshot(store, out.strip().splitlines()[-1])


def _ignore_sigint():
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def test_ctrl_c_works_when_the_parent_ignores_sigint(store, busy_cores):
    # CI harnesses and `cmd &` in a script start programs with SIGINT ignored; Ctrl-C (or kill -INT)
    # must still cancel the run rather than do nothing while the step runs on.
    proc = subprocess.Popen(["jupyter", "flow", "run", SLOW, *LONG], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, preexec_fn=_ignore_sigint)
    _wait_for_moment("step running", store, proc)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 1, err
    _assert_cancelled_with_snapshot(store, out.strip().splitlines()[-1])


def test_sigterm_cancels_cleanly(store, busy_cores):
    proc = subprocess.Popen(["jupyter", "flow", "run", SLOW, *LONG, "--quiet"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    _wait_for_moment("step running", store, proc)
    proc.terminate()
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 1, err
    _assert_cancelled_with_snapshot(store, out.strip().splitlines()[-1])


@pytest.mark.parametrize("moment", ["task started", "step running"])
def test_cancel_from_another_terminal(store, busy_cores, moment):
    proc = subprocess.Popen(["jupyter", "flow", "run", SLOW, *LONG, "--quiet"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    _wait_for_moment(moment, store, proc)
    cli("cancel", _task(store)["run_id"], check=0)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 1, err
    _assert_cancelled_with_snapshot(store, out.strip())


@pytest.mark.parametrize("moment", ["task started", "kernel ready", "step running"])
def test_run_handle_cancel(store, busy_cores, moment):
    handle = runtime.start_run(SLOW, parameters={"sleep_s": 600}, store=store)
    wait_for(lambda: MOMENTS[moment](store) or handle.done, what=moment)
    handle.cancel()
    assert handle.wait(240) == "cancelled"
    _assert_cancelled_with_snapshot(store, handle.run_id)


def test_a_cell_that_swallows_interrupts_is_killed(store, tmp_path, busy_cores):
    # Interrupted again and again, it never stops, and a kernel stuck in a cell cannot take a snapshot:
    # after the grace period it is killed, so that the cancel still completes.
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(cells=[
        new_code_cell("import time", metadata={"tags": ["imports"]}),
        new_code_cell("x = 1", metadata={"tags": ["step:start"]}),
        new_code_cell("stubborn = x + 1\nprint('sleepy: started', flush=True)\nwhile True:\n    try:\n"
                      "        time.sleep(0.1)\n    except KeyboardInterrupt:\n        pass",
                      metadata={"tags": ["step:sleepy"]}),
    ], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    path = tmp_path / "stubborn.ipynb"
    nbformat.write(nb, path)
    handle = runtime.start_run(path, store=store)
    wait_for(lambda: MOMENTS["step running"](store) or handle.done, what="the step to run")
    handle.cancel()
    assert handle.wait(240) == "cancelled"
    sleepy = jupyter_flow.Run(handle.run_id, store)["sleepy"].task.record
    assert sleepy["status"] == "cancelled" and "killed" in sleepy["error"]["message"], sleepy
    wait_for(lambda: _pid_gone(sleepy["kernel_pid"]), what="the stubborn kernel to be killed")
