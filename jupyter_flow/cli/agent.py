"""`jupyter flow agent`: keep the runner's and the kernels' imports warm between local runs.

Never required: a command finds no agent, or one for another environment, and runs as it would
without. With one running, a run starts in a few milliseconds instead of paying its imports again.

The agent is two long-lived processes, each listening on a Unix socket in Jupyter's runtime
directory (the names carry a digest of this Python, its site-packages, PYTHONPATH and jupyter_flow's
sources, so a runner only ever uses an agent that would import what it would):

* the zygote parent (`...sock`) has imported the kernel stack (ipykernel, IPython) and nothing else.
  A runner that connects gets a zygote forked for it alone (see speed/forkserver.py); its kernels are forked
  from that zygote, so they start as fresh kernels would, with no runner module in them. If the
  python3 kernelspec runs another command (`-Xfrozen_modules=off`, as `python -m ipykernel install`
  writes it, or another environment's python), the agent also starts a zygote parent as that command
  says (`...-zygote-DIGEST.sock`); it exits with the agent.
* the runner parent (`...-run.sock`) has imported the runner's stack (papermill, nbformat and its
  validator, jupyter_client, jupyter_flow's CLI). `jupyter flow run|resume|batch` sends it the
  command line, its working directory, environment, umask and standard streams (the file descriptors
  themselves, so a terminal stays a terminal); the runner parent forks a process that becomes the
  command, and the CLI waits for its exit status. Ctrl-C, Ctrl-Z, `fg` and `kill` of the CLI are
  forwarded to it; if the CLI dies, its run is cancelled as a Ctrl-C would cancel it (the tasks save
  their state).

Both forks happen in single-threaded processes with no open sockets but the listener's.

Where its sockets are, and how a fork server reaches it, is speed/agent.py's.
"""
from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading

from jupyter_flow.errors import FlowError
from jupyter_flow.flow.kernelspecs import spec_command
from jupyter_flow.speed import forkserver
from jupyter_flow.speed.agent import address, connect, enabled

COMMANDS = ("run", "resume", "batch")  # the ones that start a runner; the rest are quick on their own


# -- the CLI's side -------------------------------------------------------------------------------
def delegate(argv: list[str]) -> int | None:
    """Run `jupyter flow ARGV` in the agent if one is running; its exit status, or None (run it here)."""
    if not argv or argv[0] not in COMMANDS or not enabled() or {"-h", "--help"} & set(argv):
        return None
    sock = connect("run")
    if sock is None:
        return None
    with sock:
        message = {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), "umask": forkserver.current_umask(),
                   "encoding": sys.stdout.encoding or "utf-8"}
        try:
            socket.send_fds(sock, [json.dumps(message).encode() + b"\n"], _standard_fds())
            replies = sock.makefile("r")
            started = json.loads(replies.readline() or "null")
        except (OSError, ValueError):
            started = None
        if not started:  # the agent is going away: nothing ran yet, so run it here
            return None
        pid = started["pid"]
        send_signal = _signaller(pid)

        def forward(signum, frame):
            # Ctrl-Z: the command's process is in a session of its own, where a terminal stop signal
            # would be discarded; it gets SIGSTOP, then this process stops as it would have
            stop = signum == signal.SIGTSTP
            send_signal(signal.SIGSTOP if stop else signum)
            if stop:
                signal.signal(signal.SIGTSTP, signal.SIG_DFL)
                os.kill(os.getpid(), signal.SIGTSTP)
                signal.signal(signal.SIGTSTP, forward)
                # continued by fg/bg, or never stopped: the kernel discards a stop signal in a group no
                # shell controls (an orphaned one), and then the run goes on as it would without the agent
                send_signal(signal.SIGCONT)

        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGTSTP, signal.SIGCONT):
            signal.signal(signum, forward)
        try:
            ended = json.loads(replies.readline() or "null")
        except (OSError, ValueError):
            ended = None
    if not ended:
        print(f"error: the agent's process for this command (pid {pid}) ended without an exit status; "
              "`jupyter flow runs` shows what became of the run", file=sys.stderr)
        return 1
    return ended["exit"]


def _signaller(pid: int):
    """Signals to the command's process, which the agent's runner parent reaps, not this process: sent
    through a pidfd where the system has them (Linux 5.3), so none reaches a process that got its pid
    after it ended."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # no pidfds here, or it has ended already
        pidfd = None

    def send(signum: int) -> None:
        with contextlib.suppress(OSError):  # it has ended
            if pidfd is not None:
                signal.pidfd_send_signal(pidfd, signum)
            else:
                os.kill(pid, signum)

    return send


def _standard_fds() -> list[int]:
    """0, 1 and 2, with /dev/null for any that is closed."""
    fds = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
            fds.append(fd)
        except OSError:
            fds.append(os.open(os.devnull, os.O_RDWR))
    return fds


# -- the agent --------------------------------------------------------------------------------------
def run_agent() -> Command | None:
    """Serve runs and zygotes until Ctrl-C or kill; then None. Returns a Command in a process forked to
    be one (see _runner_parent): the caller runs it there and exits as the interpreter does."""
    zygote_at, run_at = address("zygote"), address("run")
    running = connect(where=zygote_at)
    if running is not None:
        running.close()
        raise FlowError(f"an agent for this environment is running already (socket {zygote_at}); stop it "
                        "(Ctrl-C where it runs, or kill it) before starting another")
    others = {address(forkserver.zygote_kind(z)): z for z in _other_zygotes()}
    if any(len(os.fsencode(where)) > 107 for where in (run_at, *others)):  # sockaddr_un's limit
        raise FlowError(f"the agent's socket path is too long for a Unix socket ({run_at}); set JUPYTER_RUNTIME_DIR "
                        "to a shorter folder")
    os.makedirs(os.path.dirname(zygote_at), mode=0o700, exist_ok=True)
    listeners = {}
    umask = os.umask(0o177)  # the sockets are this user's alone: whoever connects runs commands as them
    try:
        for where in (run_at, *others, zygote_at):  # the zygote's socket last: it is the one that says "running"
            if os.path.exists(where):
                os.unlink(where)  # left behind by an agent that was killed
            listeners[where] = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listeners[where].bind(where)
            listeners[where].listen(16)
    finally:
        os.umask(umask)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in the background
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    alive_r, alive_w = os.pipe()  # the runner parent exits when this closes: when this process ends
    if os.fork() == 0:
        os.close(alive_w)
        for where in (zygote_at, *others):
            listeners[where].close()
        return _runner_parent(listeners[run_at], alive_r)
    os.close(alive_r)
    listeners[run_at].close()
    parents = []
    for where, zygote in others.items():  # each imports the kernel stack with its interpreter and options
        fd = listeners.pop(where).detach()
        parents.append(subprocess.Popen([*zygote.command(), "--listen-fd", str(fd)], env=zygote.environ(),
                                        pass_fds=[fd], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True))
        os.close(fd)
    forkserver._import_kernel_stack()
    print(f"jupyter_flow agent: runs and kernels of {sys.executable} start warm (sockets {zygote_at}, "
          f"{run_at}); Ctrl-C stops it", file=sys.stderr, flush=True)
    try:
        forkserver.serve_zygotes(listeners[zygote_at])
    except KeyboardInterrupt:  # Ctrl-C or kill: stop, and remove the sockets
        pass
    finally:
        listeners[zygote_at].close()
        for parent in parents:
            parent.kill()
        for where in (zygote_at, run_at, *others):
            if os.path.exists(where):
                os.unlink(where)
    return None


def _other_zygotes() -> list:
    """The zygote of the python3 kernelspec if it is not this interpreter's own: one that `python -m
    ipykernel install` wrote runs it with -Xfrozen_modules=off, or it is another environment's."""
    plan = forkserver.fork_plan(*spec_command("python3"))
    return [] if isinstance(plan, str) or plan[0] == forkserver.native() else [plan[0]]


def _import_runner_stack() -> None:
    """What a run imports before its first task (papermill, about 0.3 s; more under load): imported
    here, in the runner parent, for the commands it forks; that is this function's whole point."""
    from jupyter_flow import runtime  # noqa: F401 - warming: imported here, once, for the commands this parent forks
    from jupyter_flow.execution import kernel_pool
    from jupyter_flow.execution.task import warm_imports
    from jupyter_flow.executors import local  # noqa: F401
    from jupyter_flow.ui import progress  # noqa: F401

    warm_imports()
    import jupyter_client.asynchronous  # noqa: F401 - warming, as above
    import zmq.asyncio  # noqa: F401

    kernel_pool._spec_manager_class()
    kernel_pool._fork_provisioner()


def _runner_parent(listener: socket.socket, alive: int) -> Command:
    """Fork a process per command sent to `listener`, until the agent's end of `alive` closes. Returns
    only in such a process, as the command it is to run; this process itself ends with os._exit (a
    forked process never returns into the agent's code)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C where the agent runs stops it through `alive`
    conn = None
    try:
        _import_runner_stack()
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # commands are reaped by the system
        while conn is None:
            ready, _, _ = select.select([listener, alive], [], [])
            if alive in ready:
                break
            accepted, _ = listener.accept()
            if os.fork() == 0:
                conn = accepted
            else:
                accepted.close()
    except BaseException:  # noqa: BLE001 - never return into the agent's code in this process
        os._exit(1)
    if conn is None:
        os._exit(0)
    listener.close()
    os.close(alive)
    forkserver.child_signals()
    try:
        return Command(conn)
    except BaseException:  # noqa: BLE001 - a command that could not be set up: the CLI says it ended without a status
        os._exit(1)


class Command:
    """This process becomes the CLI command `conn` sends: its streams, folder, environment, umask and
    argv. Its exit status goes back to the CLI when the interpreter exits, after every exit handler
    the command registered has run (this one is registered first, so it runs last)."""

    def __init__(self, conn: socket.socket):
        os.setsid()  # a Ctrl-C in the agent's terminal is not this command's
        data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
        while data and not data.endswith(b"\n"):
            data += conn.recv(1 << 16)
        message = json.loads(data)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        sys.stdin = open(0, closefd=False)
        sys.stdout = sys.__stdout__ = open(1, "w", encoding=message["encoding"], closefd=False,
                                           buffering=1 if os.isatty(1) else -1)
        sys.stderr = sys.__stderr__ = open(2, "w", encoding=message["encoding"], errors="backslashreplace",
                                           closefd=False, buffering=1)
        os.chdir(message["cwd"])
        os.environ.clear()
        os.environ.update(message["env"])
        os.umask(message["umask"])
        self.argv = message["argv"]
        sys.argv = ["jupyter-flow", *self.argv]
        self.conn, self.code = conn, 1
        self.finished = threading.Event()
        atexit.register(self._report)
        conn.sendall(json.dumps({"pid": os.getpid()}).encode() + b"\n")
        threading.Thread(target=_watch_client, args=(conn, self.finished), daemon=True,
                         name="jupyter-flow-client").start()

    def finish(self, code: int) -> int:
        """The command returned `code`: from here on a CLI that goes away cancels nothing."""
        self.code = code
        self.finished.set()
        return code

    def _report(self) -> None:
        for stream in (sys.stdout, sys.stderr):  # what it printed reaches the terminal before the CLI exits
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        with contextlib.suppress(OSError):
            self.conn.sendall(json.dumps({"exit": self.code}).encode() + b"\n")


def _watch_client(conn: socket.socket, finished: threading.Event) -> None:
    """The CLI went away (killed, its terminal closed): cancel as its Ctrl-C would, output to /dev/null."""
    try:
        while conn.recv(1 << 10):
            pass
    except OSError:
        pass
    if not finished.is_set():
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.kill(os.getpid(), signal.SIGINT)
