"""Start python kernels by forking a process that has already imported ipykernel.

Importing ipykernel and IPython is most of a kernel's start (about 0.9 s of CPU here); a forked
child skips it and is ready in about a third of the time. One zygote process per runner imports
the kernel stack once (no threads, no sockets: safe to fork) and forks a kernel per request. It
reaps its children and reports their exit status, so the runner can tell a kernel killed by a
signal. When the runner goes away the zygote's stdin closes and it exits; its kernels see their
parent gone and exit too (ipykernel's parent poller).

Imports are paid once per run, not once per step: a spawn request names the modules that the
notebook's `imports` and `functions` cells import (`modules_to_preload`), and the zygote imports those
it has not imported yet before it forks. Each step still runs those cells (for their side effects and
names); the imports in them then cost nothing. Only installed modules are preloaded: never one the
notebook's folder could shadow. After a fork the child reseeds numpy's global random state, as a fresh
process would have its own (Python reseeds `random` itself). `JUPYTER_FLOW_PRELOAD=0` turns it off.

Used, through the kernel provisioner in kernels.py, for kernelspecs that run this same Python with
ipykernel_launcher; anything else (another environment, another language) starts the ordinary way.
A local run starts its zygote first thing (`prestart`), so the zygote's imports overlap the runner's.

The optional agent (`jupyter flow agent`, agent.py) keeps the imported stack between runs and forks
a zygote for each runner that connects (its preloads and kernels are that run's alone; it exits when
the runner hangs up). A runner that finds no agent starts its own zygote, as without one.
"""
from __future__ import annotations

import ast
import contextlib
import gc
import importlib
import json
import os
import subprocess
import sys
import threading
import time

_server: "ForkServer | None" = None
_server_lock = threading.Lock()


def can_fork(cmd: list[str]) -> bool:
    """Whether `cmd` (a kernelspec's argv) is this interpreter running ipykernel."""
    return (os.name == "posix" and len(cmd) > 2 and os.path.realpath(cmd[0]) == os.path.realpath(sys.executable)
            and cmd[1:3] == ["-m", "ipykernel_launcher"])


def modules_to_preload(sources) -> list[str]:
    """The absolute modules imported by these cells (their code is parsed, never run)."""
    if os.environ.get("JUPYTER_FLOW_PRELOAD", "1") == "0":
        return []
    names: list[str] = []
    for source in sources:
        try:
            tree = ast.parse(source)
        except SyntaxError:  # magics: IPython syntax is not Python; the kernel imports these itself
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.append(node.module)
    return list(dict.fromkeys(names))


def send_signal(pid: int, signum: int) -> None:
    """Signal a process that may have ended already."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def enabled() -> bool:
    """JUPYTER_FLOW_FORK=0: start kernels the usual way (read when asked: an agent's command has the
    environment of the CLI that sent it)."""
    return os.name == "posix" and os.environ.get("JUPYTER_FLOW_FORK", "1") != "0"


def prestart() -> None:
    """Start the zygote now, so its imports overlap the runner's own start-up (the first kernel a run
    needs comes from it)."""
    if enabled():
        server()


def server() -> "ForkServer":
    global _server
    with _server_lock:
        if _server is None or not _server.alive():
            _server = ForkServer()
        return _server


class ForkServer:
    """The runner's end of its zygote: one started for this runner, or one the agent forked for it."""

    def __init__(self):
        self.lock = threading.Lock()
        self.proc = None
        self.closed = False
        from .agent import connect

        agent = connect("zygote")
        if agent is not None:
            self.reader, self.writer = agent.makefile("r"), agent.makefile("w")
            return
        # Its own session: a terminal's Ctrl-C (SIGINT to the foreground process group) must not kill
        # the zygote, whose death would take every kernel with it before they can be interrupted cleanly.
        self.proc = subprocess.Popen([sys.executable, "-m", "jupyter_flow.forkserver"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1,
                                     start_new_session=True)
        self.reader, self.writer = self.proc.stdout, self.proc.stdin

    def alive(self) -> bool:
        return not self.closed and (self.proc is None or self.proc.poll() is None)

    def request(self, **message) -> dict:
        with self.lock:
            try:
                self.writer.write(json.dumps(message) + "\n")
                self.writer.flush()
                line = self.reader.readline()
            except OSError:
                line = ""
        if not line:
            self.closed = True
            raise RuntimeError("the kernel fork server exited")
        return json.loads(line)

    def spawn(self, argv: list[str], cwd: str | None, env: dict | None, preload=()) -> "ForkedProcess":
        reply = self.request(op="spawn", argv=argv, cwd=cwd, env=env or dict(os.environ), preload=list(preload),
                             umask=current_umask())
        return ForkedProcess(self, reply["pid"])


class ForkedProcess:
    """What jupyter_client's LocalProvisioner needs of a Popen, for a kernel forked by the zygote."""

    stdin = stdout = stderr = None  # the kernel's streams go to /dev/null

    def __init__(self, server: ForkServer, pid: int):
        self.server, self.pid, self.returncode = server, pid, None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                self.returncode = self.server.request(op="status", pid=self.pid)["status"]
            except (RuntimeError, OSError, ValueError):
                self.returncode = -9  # the zygote is gone, and its kernels with it
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout)
            time.sleep(0.02)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        send_signal(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(9)

    def terminate(self) -> None:
        self.send_signal(15)


def current_umask() -> int:
    """This process's umask, read without setting it (other threads may be creating files)."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1], 8) for line in status if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        mask = os.umask(0o022)
        os.umask(mask)
        return mask


# -- the zygote --------------------------------------------------------------------------------
def _import_kernel_stack() -> None:
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # as kernels have it (kernels.start_kernel)
    import cloudpickle  # noqa: F401 - what every step's set-up cell imports, and the kernels' warm-up
    import ipykernel.debugger  # noqa: F401 - imported by every kernel's set-up (debugpy: 0.05 s)
    import ipykernel.ipkernel  # the point of this process: import once, fork many
    import ipykernel.kernelapp  # noqa: F401

    import jupyter_flow.inkernel
    import jupyter_flow.store  # noqa: F401

    if sys.path and sys.path[0] in ("", os.getcwd()):
        del sys.path[0]  # the runner's folder (from -m); ipykernel adds the kernel's own ('') as usual


def _serve(reader, writer) -> None:
    """Fork a kernel per spawn request, report their exit statuses; until the runner hangs up."""
    statuses: dict[int, int] = {}
    children: set[int] = set()
    for line in reader:
        message = json.loads(line)
        _reap(children, statuses)
        if message["op"] == "spawn":
            _preload(message.get("preload") or [], message.get("cwd") or os.getcwd(), message["env"])
            gc.freeze()  # the child's collections skip what the zygote made: no copy-on-write of it all
            pid = os.fork()
            if pid == 0:
                _become_kernel(message)
            children.add(pid)
            reply = {"pid": pid}
        else:
            pid = message["pid"]
            reply = {"status": statuses.get(pid) if pid in children or pid in statuses else -9}
        writer.write(json.dumps(reply) + "\n")
        writer.flush()


def _reap(children: set[int], statuses: dict[int, int]) -> None:
    for pid in list(children):
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done, status = pid, 0
        if done:
            children.discard(pid)
            statuses[pid] = os.waitstatus_to_exitcode(status)


def _preload(modules: list[str], cwd: str, env: dict) -> None:
    """Import the installed modules among `modules` that are not imported yet; errors are the step's
    to meet when it runs its own import."""
    os.environ.clear()  # modules read it as they import (thread counts...): the run's, even in an agent's zygote
    os.environ.update(env)
    # matplotlib picks its backend when imported: the one ipykernel would give the kernel
    os.environ.setdefault("MPLBACKEND", env.get("MPLBACKEND") or "module://matplotlib_inline.backend_inline")
    for name in modules:
        top = name.partition(".")[0]
        if name in sys.modules or os.path.exists(os.path.join(cwd, top + ".py")) \
                or os.path.isdir(os.path.join(cwd, top)):
            continue  # imported already, or the notebook's folder has a module of that name
        try:
            importlib.import_module(name)
        except BaseException:  # noqa: BLE001 - ImportError, SystemExit, anything a module's top level raises
            pass


def _become_kernel(message: dict) -> None:
    try:
        os.setsid()  # its own process group: interrupts go to it alone
        if message.get("cwd"):
            os.chdir(message["cwd"])
        if message.get("umask") is not None:  # the runner's (an agent's zygote has the agent's)
            os.umask(message["umask"])
        if "numpy.random" in sys.modules:  # a fresh process would have drawn its own seed
            sys.modules["numpy.random"].seed()
        os.environ.clear()
        os.environ.update(message["env"])
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        sys.stdin = open(os.devnull)
        sys.stdout = sys.__stdout__ = open(os.devnull, "w")
        sys.stderr = sys.__stderr__ = open(os.devnull, "w")
        from ipykernel.kernelapp import IPKernelApp

        argv = message["argv"][3:] + [f"--IPKernelApp.parent_handle={os.getppid()}"]
        sys.argv = [message["argv"][0], *argv]
        IPKernelApp.launch_instance(argv=argv)
    finally:
        os._exit(0)


if __name__ == "__main__":
    _import_kernel_stack()
    _serve(sys.stdin, sys.stdout)
