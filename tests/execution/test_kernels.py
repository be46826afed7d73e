"""Where a step's kernel comes from: jupyter_flow's kernel provisioner forks python kernels from the
run's zygote, a fresh one per step; any other kernel command, and every kernel under
JUPYTER_FLOW_FORK=0, is started the usual way."""
import json
import os
import sys
import time
from pathlib import Path

import pytest
from conftest import cli, tagged_notebook

import jupyter_flow
from jupyter_flow.execution import kernel_pool

pytestmark = pytest.mark.slow

PROCESS = "import os\n{step}_pid, {step}_parent = os.getpid(), os.getppid()\nmarker_{step} = 1\n"


def _processes(store: str, stdout: str, steps) -> tuple[dict, int]:
    """(step -> (kernel pid, kernel's parent pid), the runner's pid) of the run the CLI printed."""
    run = jupyter_flow.Run(stdout.strip(), store)
    runner = json.loads(next(Path(store).glob(f"flows/*/runs/{run.id}/run.json")).read_text())["pid"]
    return {s: (getattr(run[s].data, f"{s}_pid"), getattr(run[s].data, f"{s}_parent")) for s in steps}, runner


def test_each_step_gets_a_fresh_kernel_forked_from_the_zygote(tmp_path, store):
    saw = "b_saw = sorted(k for k in globals() if k.startswith('marker_') and k != 'marker_b')"
    path = tagged_notebook(tmp_path, [(["step:a"], PROCESS.format(step="a")),
                                      (["step:b"], PROCESS.format(step="b") + saw)])
    result = cli("run", path, "--quiet", check=0)
    procs, runner = _processes(store, result.stdout, "ab")
    assert procs["a"][0] != procs["b"][0]  # a kernel per step, never reused
    assert procs["a"][1] == procs["b"][1] != runner  # both forked by the same zygote, not started by the runner
    assert jupyter_flow.Run(result.stdout.strip(), store)["b"].data.b_saw == []  # nothing left over from a


def test_fork_can_be_switched_off(tmp_path, store):
    path = tagged_notebook(tmp_path, [(["step:a"], PROCESS.format(step="a"))])
    result = cli("run", path, "--quiet", env={"JUPYTER_FLOW_FORK": "0"}, check=0)
    procs, runner = _processes(store, result.stdout, "a")
    assert procs["a"][1] == runner  # started by the runner itself, as jupyter_client does


def _kernelspec(tmp_path, name: str, argv: list[str]) -> dict:
    """A kernelspec `name` of this test's JUPYTER_PATH; the environment a CLI run needs to find it."""
    kernel_dir = tmp_path / "jupyter" / "kernels" / name
    kernel_dir.mkdir(parents=True)
    (kernel_dir / "kernel.json").write_text(json.dumps({
        "argv": [*argv, "-f", "{connection_file}"], "display_name": f"Python ({name})", "language": "python"}))
    return {"JUPYTER_PATH": str(tmp_path / "jupyter")}


def test_a_kernelspec_with_interpreter_options_forks_from_a_zygote_started_with_them(tmp_path, store):
    env = _kernelspec(tmp_path, "other", [sys.executable, "-X", "utf8", "-m", "ipykernel_launcher"])
    utf8 = "import sys\nutf8 = sys.flags.utf8_mode"
    path = tagged_notebook(tmp_path, [(["step:a"], PROCESS.format(step="a")),
                                      (["step:b", "kernel:other"], PROCESS.format(step="b") + utf8),
                                      (["step:c", "kernel:other"], PROCESS.format(step="c"))])
    result = cli("run", path, "--quiet", env=env, check=0)
    procs, runner = _processes(store, result.stdout, "abc")
    assert runner not in {procs["a"][1], procs["b"][1]}  # both forked...
    assert procs["a"][1] != procs["b"][1] == procs["c"][1]  # ...`other` from a zygote of its own, with -X utf8
    assert jupyter_flow.Run(result.stdout.strip(), store)["b"].data.utf8 == 1


def test_a_kernelspec_that_cannot_be_forked_starts_the_usual_way_and_says_why_once(tmp_path, store):
    env = _kernelspec(tmp_path, "timed", [sys.executable, "-X", "importtime", "-m", "ipykernel_launcher"])
    path = tagged_notebook(tmp_path, [(["step:a", "kernel:timed"], PROCESS.format(step="a")),
                                (["step:b", "kernel:timed"], PROCESS.format(step="b"))])
    result = cli("run", path, "--quiet", "--debug", env=env, check=0)
    procs, runner = _processes(store, result.stdout, "ab")
    assert procs["a"][1] == procs["b"][1] == runner  # launched by the runner, as its spec says
    said = [line for line in result.stderr.splitlines() if "not forked" in line]
    why = "-X importtime reports the kernel's own imports"
    assert said == [f"debug: kernelspec 'timed' starts cold, not forked: {why}"], result.stderr
    assert "not forked" not in cli("run", path, "--quiet", "--no-cache", env=env, check=0).stderr  # only with --debug


def test_the_provisioner_is_registered_and_launches_the_kernel(tmp_path):
    from jupyter_client.provisioning import KernelProvisionerFactory

    from jupyter_flow.speed import forkserver

    km = kernel_pool.start_kernel("python3", str(tmp_path))
    try:
        assert type(km.provisioner) is kernel_pool.ForkProvisioner
        registered = KernelProvisionerFactory.instance().provisioners[kernel_pool.PROVISIONER]
        assert registered.load() is kernel_pool.ForkProvisioner
        kc = kernel_pool.blocking_client(km)
        try:  # the answer comes in the reply itself (a new client may miss the first IOPub messages)
            kc.execute("import os", user_expressions={"parent": "os.getppid()"})
            reply = kc.get_shell_msg(timeout=60)
        finally:
            kc.stop_channels()
    finally:
        kernel_pool.kill_kernel(km)
    assert reply["content"]["status"] == "ok"
    parent = reply["content"]["user_expressions"]["parent"]["data"]["text/plain"]
    assert int(parent) == forkserver.server().proc.pid


def _reuse_pid_next(pid: int) -> bool:
    """Make `pid` the next one the system hands out (Linux, root: ns_last_pid), if this machine lets us."""
    try:
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(pid - 1))
        return True
    except OSError:
        return False


@pytest.mark.timeout(600)  # bounded: 300 releases took 110 s with both cores busy
def test_releasing_kernels_never_harms_their_running_siblings(tmp_path, busy_cores):
    # A diamond's step c lost its kernel ("killed by SIGKILL") as its sibling b's kernel was released:
    # the zygote had reaped an earlier kernel whose pid c's kernel then got, and still reported that
    # kernel's exit for it; signals sent by pid could hit it too. Here kernels are released a few hundred
    # times while a sibling runs a cell; each new sibling is given, where the machine allows, the pid of
    # a kernel released and reaped before it.
    pool = kernel_pool.KernelPool()
    stop = tmp_path / "stop"
    cell = f"import os, time\nwhile not os.path.exists({str(stop)!r}): time.sleep(0.005)\nok = os.getpid()"
    released: list[int] = []
    sibling = None
    try:
        for i in range(300):
            if i % 25 == 0:
                if sibling is not None:
                    _finish(sibling, stop, pool)
                if released and not os.path.exists(f"/proc/{released[-1]}"):
                    _reuse_pid_next(released[-1])  # best effort: other processes may take it first
                sibling = _running(kernel_pool.start_kernel("python3", str(tmp_path)), cell)
            km = kernel_pool.start_kernel("python3", str(tmp_path))
            released.append(kernel_pool.kernel_pid(km))
            pool.release(km)
            assert kernel_pool.kernel_exit(sibling[0]) is None, f"the running sibling died after {i + 1} releases"
        _finish(sibling, stop, pool)
        sibling = None
    finally:
        if sibling is not None:
            pool.release(sibling[0])


def _running(km, code: str):
    """(km, client, msg_id): `code` started in the kernel, not waited for."""
    kc = kernel_pool.blocking_client(km)
    return km, kc, kc.execute(code, user_expressions={"pid": "ok"})


def _finish(sibling, stop, pool) -> None:
    """The sibling's cell ends as it should (it was never killed); then it is released too."""
    km, kc, msg_id = sibling
    stop.touch()
    try:
        while (reply := kc.get_shell_msg(timeout=120))["parent_header"].get("msg_id") != msg_id:
            pass
        assert reply["content"]["status"] == "ok", reply["content"]
        assert reply["content"]["user_expressions"]["pid"]["data"]["text/plain"] == str(kernel_pool.kernel_pid(km))
    finally:
        kc.stop_channels()
        stop.unlink()
        pool.release(km)


@pytest.mark.parametrize("ending, status", [("os._exit(3)", 3), ("os.kill(os.getpid(), 9)", -9)])
def test_a_forked_kernel_keeps_its_exit_status_and_last_words(tmp_path, ending, status):
    km = kernel_pool.start_kernel("python3", str(tmp_path))
    try:
        assert km.provisioner.forked is not None  # from the zygote
        kc = kernel_pool.blocking_client(km)
        try:
            kc.execute(f"import os\nos.write(2, b'last words of the kernel\\n')\n{ending}")
            deadline = time.monotonic() + 120
            while kernel_pool.kernel_exit(km) is None and time.monotonic() < deadline:  # its state, not a duration
                time.sleep(0.05)
        finally:
            kc.stop_channels()
        assert kernel_pool.kernel_exit(km) == status
        assert "last words of the kernel" in kernel_pool.kernel_output(km)
    finally:
        kernel_pool.kill_kernel(km)


def test_a_zygote_with_a_thread_forks_nothing_and_its_kernels_start_cold(tmp_path):
    # a thread that exists before the zygote's first fork (here a sitecustomize starts one as the interpreter
    # starts): a fork would copy the zygote without it, its locks held by nobody. The kernel starts cold.
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import threading, time\n"
                                           "threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()\n")
    pythonpath = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    km = kernel_pool.start_kernel("python3", str(tmp_path), env={"PYTHONPATH": pythonpath})
    try:
        assert km.provisioner.forked is None  # launched as jupyter_client launches a kernel
        kc = kernel_pool.blocking_client(km)
        try:
            msg_id = kc.execute("x = 6 * 7", user_expressions={"x": "x"})
            while (reply := kc.get_shell_msg(timeout=120))["parent_header"].get("msg_id") != msg_id:
                pass
        finally:
            kc.stop_channels()
        assert reply["content"]["user_expressions"]["x"]["data"]["text/plain"] == "42"
    finally:
        kernel_pool.kill_kernel(km)
