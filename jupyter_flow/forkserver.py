"""Start python kernels by forking a process that has already imported ipykernel.

Importing ipykernel and IPython is most of a kernel's start (about 0.9 s of CPU here); a forked
child skips it and is ready in about a third of the time. One zygote process per runner imports
the kernel stack once (no threads, no sockets: safe to fork) and forks a kernel per request. It
reaps its children and reports their exit status, so the runner can tell a kernel killed by a
signal. When the runner goes away the zygote's stdin closes and it exits; its kernels see their
parent gone and exit too (ipykernel's parent poller).

Used for kernelspecs that run this same Python with ipykernel_launcher; anything else (another
environment, another language) starts the ordinary way.
"""
from __future__ import annotations

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


def server() -> "ForkServer":
    global _server
    with _server_lock:
        if _server is None or _server.proc.poll() is not None:
            _server = ForkServer()
        return _server


class ForkServer:
    def __init__(self):
        # Its own session: a terminal's Ctrl-C (SIGINT to the foreground process group) must not kill
        # the zygote, whose death would take every kernel with it before they can be interrupted cleanly.
        self.proc = subprocess.Popen([sys.executable, "-m", "jupyter_flow.forkserver"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1,
                                     start_new_session=True)
        self.lock = threading.Lock()

    def request(self, **message) -> dict:
        with self.lock:
            self.proc.stdin.write(json.dumps(message) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the kernel fork server exited")
        return json.loads(line)

    def spawn(self, argv: list[str], cwd: str | None, env: dict | None) -> "ForkedProcess":
        reply = self.request(op="spawn", argv=argv, cwd=cwd, env=env or dict(os.environ))
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
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        self.send_signal(9)

    def terminate(self) -> None:
        self.send_signal(15)


# -- the zygote --------------------------------------------------------------------------------
def _zygote() -> None:
    import ipykernel.ipkernel  # noqa: F401 - the point of this process: import once, fork many
    import ipykernel.kernelapp  # noqa: F401

    statuses: dict[int, int] = {}
    children: set[int] = set()
    for line in sys.stdin:
        message = json.loads(line)
        _reap(children, statuses)
        if message["op"] == "spawn":
            pid = os.fork()
            if pid == 0:
                _become_kernel(message)
            children.add(pid)
            reply = {"pid": pid}
        else:
            pid = message["pid"]
            reply = {"status": statuses.get(pid) if pid in children or pid in statuses else -9}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


def _reap(children: set[int], statuses: dict[int, int]) -> None:
    for pid in list(children):
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done, status = pid, 0
        if done:
            children.discard(pid)
            statuses[pid] = os.waitstatus_to_exitcode(status)


def _become_kernel(message: dict) -> None:
    try:
        os.setsid()  # its own process group: interrupts go to it alone
        if message.get("cwd"):
            os.chdir(message["cwd"])
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
    _zygote()
