"""`jupyter flow agent`: with it running, `jupyter flow run|resume|batch` runs in a process the agent
forks (its imports done) and behaves exactly as without it; without it, or with a stale one, the CLI
runs on its own. A real agent, real CLI processes, real kernels."""
import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import SCENARIOS, cli, tagged_notebook, wait_for
from execution.test_cancel import LONG, SLOW, _assert_cancelled_with_snapshot, _wait_for_moment
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runtime import test_crash as crash

import jupyter_flow
from jupyter_flow.readers.client import list_runs
from jupyter_flow.store import open_store, records
from jupyter_flow.store.fsck import check

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")]

WHO = ("import os\nwho = os.getpid()\nstat = open(f'/proc/{os.getppid()}/stat').read()\n"
       "zp = int(stat.rsplit(')', 1)[1].split()[1])")


@pytest.fixture
def agent(monkeypatch, store):
    """A running agent whose sockets are in a runtime folder of this test (a short path: Unix socket
    paths are limited to 107 bytes); CLI processes of the test find it there."""
    runtime = tempfile.mkdtemp(prefix="jf-rt-")
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", runtime)
    proc = subprocess.Popen(["jupyter", "flow", "agent"], stderr=subprocess.PIPE, text=True)
    wait_for(lambda: _listening(runtime) or proc.poll() is not None, what="the agent's sockets")
    assert proc.poll() is None, proc.communicate()
    proc.runtime = Path(runtime)
    yield proc
    proc.kill()  # kill -9: its socket files stay behind
    proc.wait(60)
    shutil.rmtree(runtime, ignore_errors=True)


def _runner_pid(store: str, run_id: str) -> int:
    return json.loads(next(Path(store).glob(f"flows/*/runs/{run_id}/run.json")).read_text())["pid"]


def test_the_agent_serves_runs_and_is_never_required(tmp_path, store, agent):
    path = tagged_notebook(tmp_path, [(["step:a"], WHO)])
    proc = subprocess.Popen(["jupyter", "flow", "run", path, "--quiet"], stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0
    run_id = out.strip()
    assert _runner_pid(store, run_id) != proc.pid  # the run ran in the agent's process, not the CLI's
    assert jupyter_flow.Run(run_id, store)["a"].data.zp == agent.pid  # kernel < zygote < agent
    # only this user may connect: whoever can runs commands as them
    assert {stat.S_IMODE(p.stat().st_mode) for p in agent.runtime.glob("*.sock")} == {0o600}
    second = cli("agent", check=2)
    assert second.stderr.startswith("error: an agent for this environment is running already")
    agent.kill()  # kill -9: its socket files stay behind
    agent.wait(60)
    result = cli("run", path, "--quiet", "--no-cache", check=0)  # no agent: a runner and a zygote of its own
    run = jupyter_flow.Run(result.stdout.strip(), store)
    assert run["a"].data.zp != agent.pid
    assert cli("run", path, "--quiet", "--no-cache", env={"JUPYTER_FLOW_AGENT": "0"}, check=0).returncode == 0


@pytest.fixture
def installed_python3(tmp_path, monkeypatch):
    """`python -m ipykernel install --user --name python3` in this test's HOME: python3's command is
    this interpreter with -Xfrozen_modules=off (a zygote the agent's own process cannot be)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "home" / "jupyter"))
    subprocess.run([sys.executable, "-m", "ipykernel", "install", "--user", "--name", "python3"], check=True,
                   capture_output=True)


LINEAGE = ("import os, sys\n"
           "def up(pid): return int(open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()[1])\n"
           "above_zygote = up(up(os.getppid()))\nfrozen = sys._xoptions.get('frozen_modules')")


def test_the_agent_keeps_the_zygote_of_an_installed_python3_kernelspec_warm(tmp_path, store, installed_python3, agent):
    path = tagged_notebook(tmp_path, [(["step:a"], LINEAGE)])
    result = cli("run", path, "--quiet", check=0)
    a = jupyter_flow.Run(result.stdout.strip(), store)["a"].data
    # kernel < zygote (this run's) < the agent's process that imported the stack with -Xfrozen_modules=off < agent
    assert (a.above_zygote, a.frozen) == (agent.pid, "off")


def test_a_run_through_the_agent_is_the_clis_own(tmp_path, store, agent, monkeypatch):
    # its folder (a relative notebook path), parameters, environment (the store, a variable the step
    # reads), umask, exit status and both output streams are the CLI's, not the agent's
    (tmp_path / "sub").mkdir()
    shutil.copy(SCENARIOS / "linear.ipynb", tmp_path / "sub" / "linear.ipynb")
    env = {"JUPYTER_FLOW_STORE": str(tmp_path / "other-store")}
    done = cli("run", "sub/linear.ipynb", "-p", "start", "5", "--quiet", cwd=tmp_path, env=env, check=0)
    run = jupyter_flow.Run(done.stdout.strip(), env["JUPYTER_FLOW_STORE"])
    assert run.status == "succeeded" and run.parameters["start"] == 5 and run["e"].data.e == 149
    assert Path(run.record["notebook"]) == tmp_path / "sub" / "linear.ipynb"
    assert not Path(store, "flows").exists()

    path = tagged_notebook(tmp_path, [(["step:a"], "import os\nseen = os.environ.get('JF_TEST_VALUE')\n"
                                                   "mask = os.umask(0); os.umask(mask)")])
    shown = cli("run", path, "--quiet", env={"JF_TEST_VALUE": "from the cli"}, check=0,
                preexec_fn=lambda: os.umask(0o027))
    data = jupyter_flow.Run(shown.stdout.strip(), store)["a"].data
    assert data.seen == "from the cli" and data.mask == 0o027

    bad = cli("run", path, "-p", "nope", "1", check=2)  # bad input: one line, exit 2, nothing written
    assert bad.stderr.count("\n") == 1 and bad.stderr.startswith("error: ") and "nope" in bad.stderr
    assert len(list_runs(store)) == 1

    failing = tagged_notebook(tmp_path, [(["step:a"], "raise ValueError('boom')")])
    failed = cli("run", failing, check=1)
    assert "ValueError: boom" in failed.stderr and failed.stdout.strip()
    debug = cli("run", tmp_path / "missing.ipynb", "--debug", check=1)
    assert "Traceback (most recent call last)" in debug.stderr


def test_ctrl_c_reaches_the_agents_run(store, agent):
    proc = subprocess.Popen(["jupyter", "flow", "run", SLOW, *LONG], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    _wait_for_moment("step running", store, proc)
    os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C: to the CLI's process group, which the run is not in
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 1, err
    assert "cancelled" in err
    _assert_cancelled_with_snapshot(store, out.strip().splitlines()[-1])


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_ctrl_z_stops_the_agents_run_and_fg_continues_it(tmp_path, store, agent):
    go = tmp_path / "go"
    # a job of its own, as a shell starts it: its parent (this test) is in the same session, so the
    # group is not orphaned and the kernel does not discard its stop signal, however pytest was started
    with _waiting_run(tmp_path, store, go, process_group=0) as (proc, runner):
        os.kill(proc.pid, signal.SIGTSTP)  # a terminal's Ctrl-Z
        wait_for(lambda: _state(runner) == "T" and _state(proc.pid) == "T", what="the CLI and the run stopped")
        os.kill(proc.pid, signal.SIGCONT)  # fg
        wait_for(lambda: _state(runner) != "T" and _state(proc.pid) != "T", what="the CLI and the run going on")
        go.touch()
        out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0 and jupyter_flow.Run(out.strip(), store)["a"].data.done == 1


def test_a_stop_signal_no_shell_would_continue_leaves_the_run_going(tmp_path, store, agent):
    """In a process group no shell controls the kernel discards SIGTSTP: the CLI goes on, and so must
    its run in the agent (as it would without the agent), not stay stopped with nobody to continue it."""
    go = tmp_path / "go"
    with _waiting_run(tmp_path, store, go, start_new_session=True) as (proc, runner):
        os.kill(proc.pid, signal.SIGTSTP)
        go.touch()
        out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0 and jupyter_flow.Run(out.strip(), store)["a"].data.done == 1


@contextlib.contextmanager
def _waiting_run(tmp_path, store, go, **popen):
    """A CLI whose run, in the agent, waits for the file `go`; (the CLI, the agent's process running it)."""
    path = tagged_notebook(tmp_path, [(["step:a"], f"import os, time\nwhile not os.path.exists({str(go)!r}):\n"
                                                   "    time.sleep(0.05)\ndone = 1")])
    proc = subprocess.Popen(["jupyter", "flow", "run", path, "--quiet"], stdout=subprocess.PIPE, text=True, **popen)
    try:
        runs = wait_for(lambda: [r for r in list_runs(store) if r["status"] == "running"],
                        what="the run to start")
        assert runs[0]["pid"] != proc.pid
        yield proc, runs[0]["pid"]
    finally:
        go.touch()
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
        proc.wait(60)


def test_a_killed_cli_cancels_its_run_in_the_agent(store, agent):
    proc = subprocess.Popen(["jupyter", "flow", "run", SLOW, *LONG, "--quiet"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    _wait_for_moment("step running", store, proc)
    proc.kill()
    proc.wait(60)
    runs = wait_for(lambda: [r for r in list_runs(store) if r["status"] != "running"], what="the run to end")
    _assert_cancelled_with_snapshot(store, runs[0]["id"])


def _start_agent(runtime: str) -> subprocess.Popen:
    proc = subprocess.Popen(["jupyter", "flow", "agent"], env={**os.environ, "JUPYTER_RUNTIME_DIR": runtime},
                            stderr=subprocess.DEVNULL)
    wait_for(lambda: _listening(runtime) or proc.poll() is not None, what="the agent's sockets")
    return proc


def _listening(runtime) -> bool:
    """The agent's zygote socket is there (jupyter-flow-agent-DIGEST.sock, bound after all its others)."""
    return any(p.stem.count("-") == 3 for p in Path(runtime).glob("*.sock"))


@pytest.fixture(scope="module")
def kill_store(tmp_path_factory):
    return str(tmp_path_factory.mktemp("agent-kills") / "store")


@settings(max_examples=int(os.environ.get("AGENT_KILL_EXAMPLES", "12")), deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(target=st.sampled_from(["cli", "runner", "kernel", "agent"]), step=st.sampled_from(crash.STEPS),
       delay=st.floats(0, 0.5))
def test_kills_around_the_agent_lose_nothing(kill_store, monkeypatch, target, step, delay):
    """kill -9 of the CLI (its run is cancelled), of the agent's process running the command (the run
    is crashed), of a kernel (its task fails) or of the agent itself (the run goes on), `delay` s
    after `step` starts: every value stays stored and intact, every run ends in a final state, and
    `resume` completes it."""
    runtime = tempfile.mkdtemp(prefix="jf-rt-")
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", runtime)
    agent = _start_agent(runtime)
    store = open_store(kill_store)
    proc = crash.start_run(kill_store, 10_000_000)
    try:
        crash.wait_for(lambda: crash.running_kernel(store, step) is not None or proc.poll() is not None)
        time.sleep(delay)
        running = records.list_runs(store, status="running")
        victim = {"cli": proc.pid, "agent": agent.pid, "kernel": crash.running_kernel(store, step),
                  "runner": running and running[0].pid}[target]
        if victim:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        proc.wait(300)
    finally:
        for p in (proc, agent):
            if p.poll() is None:
                p.kill()
                p.wait(60)
    report = check(store, dry_run=True)
    assert report["corrupt"] == [] and report["damaged"] == []
    assert crash.wait_for(lambda: all(r.status in crash.FINAL | {"cancelled"} for r in records.list_runs(store)),
                          120), [(r.id, r.status) for r in records.list_runs(store)]
    for run in records.list_runs(store):
        for task in records.list_tasks(store, run):
            assert all(store.has_blob(h) for h in task.blob_refs()), (run.id, task.step)
    latest = records.list_runs(store, limit=1)[0]
    if latest.status != "succeeded":
        resumed = cli("resume", latest.id, "--quiet", "--store", kill_store, env={"JUPYTER_FLOW_AGENT": "0"})
        assert resumed.returncode == 0, resumed.stderr
    assert records.list_runs(store, limit=1)[0].status == "succeeded"
    shutil.rmtree(runtime, ignore_errors=True)
