"""Start python kernels by forking a process that has already imported ipykernel.

Importing ipykernel and IPython is most of a kernel's start (about 0.9 s of CPU here); a forked
child skips it and is ready in about a third of the time. A zygote process imports the kernel stack
once (no threads, no sockets: safe to fork) and forks a kernel per request; a runner has one per
kernel command it needs (`fork_plan`: interpreter, its options, the PYTHON* variables it starts
with), each started as that command would start its interpreter. A zygote reaps its children and
reports their exit status, so the runner can tell a kernel killed by a signal; it is also the one
that signals them, while it knows the pid is still theirs (see ForkedProcess). When the runner goes
away the zygote's stdin closes and it exits; its kernels see their parent gone and exit too
(ipykernel's parent poller).

Imports are paid once per run, not once per step: a spawn request names the modules that the
notebook's `imports` and `functions` cells import (`modules_to_preload`), and the zygote imports those
it has not imported yet before it forks. Each step still runs those cells (for their side effects and
names); the imports in them then cost nothing. Only installed modules are preloaded: never one the
notebook's folder could shadow. After a fork the child reseeds numpy's global random state, as a fresh
process would have its own (Python reseeds `random` itself). `JUPYTER_FLOW_PRELOAD=0` turns it off.

A fork carries only the thread that forks: a library whose import starts threads (gRPC, CUDA, OpenMP
pools) is not safe to fork. So a zygote preloads only modules known to be safe (PRELOAD_ALLOWED: the
standard library, numpy, pandas, matplotlib, scikit-learn...; JUPYTER_FLOW_PRELOAD_ALLOW adds more), and
before every fork it counts its threads (native ones too, in /proc/self/task): if one exists that is not
known to survive a fork (FORK_SAFE_THREADS: OpenBLAS's), it forks no more, and the runner's later kernels
come from a new zygote that preloads nothing (`--debug` says so). A forked kernel's own stdout and stderr
go to the file the runner gives (the task reads it if the kernel dies), and its exit status is the one a
fresh kernel process would have.

Used, through the kernel provisioner in execution/kernel_pool.py, for every kernelspec that runs `python [options]
-m ipykernel_launcher`, of this environment or another; anything else (another language, options
a fork cannot honour: NOT_FORKED) starts the ordinary way. A local run starts the zygote of its
python3 kernelspec first thing (`prestart`), so the zygote's imports overlap the runner's.

The optional agent (`jupyter flow agent`, cli/agent.py) keeps the imported stack between runs and forks
a zygote for each runner that connects (`serve_zygotes`) (its preloads and kernels are that run's alone; it exits when
the runner hangs up). A runner that finds no agent starts its own zygote, as without one.
"""
from __future__ import annotations

import ast
import contextlib
import gc
import hashlib
import importlib
import itertools
import json
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from typing import NamedTuple

if __name__ != "__main__":  # the runner's side; a zygote runs this file by path, maybe where jupyter_flow is not
    from jupyter_flow.flow.kernelspecs import spec_command
    from jupyter_flow.speed import agent

_servers: dict = {}  # Zygote -> ForkServer
_server_lock = threading.Lock()
_log = logging.getLogger(__name__)

IPYKERNEL = ("ipykernel_launcher", "ipykernel")  # `python -m` either of these runs an ipykernel
OPTION_LETTERS = "bBdEiIOPqRsSuvx"  # the interpreter's options without a value (they combine: -sE)
NOT_FORKED = {  # options a forked kernel cannot honour: each asks for a report of the kernel's own imports,
    "-v": "-v reports the kernel's own imports",  # which the zygote did before the fork
    "-Ximporttime": "-X importtime reports the kernel's own imports",
}


class Zygote(NamedTuple):
    """How a zygote is started; a kernel forks from the one started as its own command would start."""
    python: str  # the interpreter (this one as sys.executable; another environment's as its kernelspec names it)
    options: tuple = ()  # interpreter options, as the command line gives them (-Xfrozen_modules=off, -E...)
    startup_env: tuple = ()  # the PYTHON* variables, which the interpreter reads as it starts (PYTHONPATH...)

    def command(self) -> list[str]:
        """The zygote is this file, run by path: the interpreter needs only ipykernel, not jupyter_flow."""
        boot = f"import runpy; runpy.run_path({os.path.abspath(__file__)!r}, run_name='__main__')"
        return [self.python, *self.options, "-c", boot]

    def environ(self) -> dict:
        return {**{k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}, **dict(self.startup_env)}


def fork_plan(cmd: list[str], env: dict | None = None) -> tuple[Zygote, list[str]] | str:
    """For a kernelspec's command (`python [options] -m ipykernel_launcher ARGS`): the zygote to fork its
    kernel from and the kernel's ARGS; or, if it cannot be forked, why not (one line)."""
    env = os.environ if env is None else env
    if os.name != "posix":
        return "kernels are forked on POSIX systems only"
    options, module, args = _parse_python(cmd)
    if module not in IPYKERNEL:
        return f"its command ({' '.join(cmd[:4])}...) is not `python -m ipykernel_launcher`"
    for option in options:
        if option.split("=")[0] in NOT_FORKED:
            return NOT_FORKED[option.split("=")[0]]
        if option.startswith("-") and option[:2] not in ("-X", "-W", "--") and option[1:] not in OPTION_LETTERS:
            return f"its interpreter option {option} is unknown here"
    python = cmd[0] if os.sep in cmd[0] else shutil.which(cmd[0], path=env.get("PATH"))
    if python is None:
        return f"{cmd[0]} is not on its PATH"
    if _environment(python) == _environment(sys.executable):
        python = sys.executable  # a symlink to this interpreter, in this environment (not another venv's)
    startup = tuple(sorted((k, v) for k, v in env.items() if k.startswith("PYTHON")))
    return Zygote(os.path.abspath(python), tuple(options), startup), args


def _parse_python(cmd: list[str]) -> tuple[list[str], str | None, list[str]]:
    """(options, module, module's arguments) of `python [options] -m module ...` as the interpreter reads
    its command line; module None if it runs no module. Options come one per item, -X and -W with their
    value attached (`-X utf8` and `-Xutf8` are the same zygote), --check-hash-based-pycs and its value as two."""
    options, i = [], 1
    while i < len(cmd) and cmd[i].startswith("-") and cmd[i] != "-":
        arg, i = cmd[i], i + 1
        if arg.startswith("--"):
            if arg != "--check-hash-based-pycs" or i >= len(cmd):
                return options, None, []
            options += [arg, cmd[i]]
            i += 1
            continue
        for j, letter in enumerate(arg[1:], 2):
            if letter not in "cmWX":
                options.append("-" + letter)
                continue
            value = arg[j:]
            if not value and i < len(cmd):
                value, i = cmd[i], i + 1
            if letter == "m":
                return options, value, cmd[i:]
            if letter == "c":
                return options, None, []
            options.append(f"-{letter}{value}")
            break
    return options, None, []


def _environment(python: str) -> tuple[str, str]:
    """What makes an interpreter path the environment it is: its binary (symlinks resolved), and its
    virtualenv, found as the interpreter finds it (a pyvenv.cfg beside it or one folder up): a venv's
    python is a symlink to the base interpreter, with a sys.prefix of its own."""
    here = os.path.dirname(os.path.abspath(python))
    venv = next((d for d in (here, os.path.dirname(here)) if os.path.isfile(os.path.join(d, "pyvenv.cfg"))), "")
    return os.path.realpath(python), venv


def native(env: dict | None = None) -> Zygote:
    """The zygote of this interpreter, without options, in this environment."""
    return fork_plan([sys.executable, "-m", "ipykernel_launcher"], env)[0]


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


def enabled() -> bool:
    """JUPYTER_FLOW_FORK=0: start kernels the usual way (read when asked: an agent's command has the
    environment of the CLI that sent it)."""
    return os.name == "posix" and os.environ.get("JUPYTER_FLOW_FORK", "1") != "0"


def prestart(kernel: str = "python3") -> None:
    """Start the zygote of `kernel` (a kernelspec name) now, so its imports overlap the runner's own
    start-up (the first kernel a run needs comes from it)."""
    if enabled():
        plan = fork_plan(*spec_command(kernel))
        if not isinstance(plan, str):
            with contextlib.suppress(RuntimeError):
                server(plan[0])


def server(zygote: Zygote | None = None) -> ForkServer:
    """The running zygote started as `zygote` says (this interpreter's by default), started if need be;
    RuntimeError if it cannot start (why: its first words). One whose preloads started a thread is
    replaced by one that preloads nothing (see _serve)."""
    zygote = zygote or native()
    with _server_lock:
        found = _servers.get(zygote)
        if found is not None and found.failed:
            raise RuntimeError(found.failed)
        if found is None or not found.alive():
            preloads = found is None or found.preloads and not found.unsafe
            found = _servers[zygote] = ForkServer(zygote, preloads)
        return found


_said: set[str] = set()


def say_once(message: str) -> None:
    """A debug line (`jupyter flow --debug` shows it), once per process, however many kernels meet it."""
    with _server_lock:
        if message in _said:
            return
        _said.add(message)
    _log.debug(message)


def zygote_kind(zygote: Zygote) -> str:
    """The agent's socket for runners that need `zygote`: "zygote" for this interpreter's own (see
    native), one of its own for each other (the python3 kernelspec's, if it has options)."""
    if zygote == native():
        return "zygote"
    return "zygote-" + hashlib.sha1(json.dumps(zygote).encode()).hexdigest()[:10]


class ForkServer:
    """The runner's end of a zygote: one started for this runner, or one the agent forked for it (from
    its own process for this interpreter without options; the python3 kernelspec's, if it differs, from
    a process the agent started as that kernelspec's command says)."""

    def __init__(self, zygote: Zygote, preloads: bool = True):
        self.zygote, self.lock = zygote, threading.Lock()
        self.proc = None
        self.closed = False
        self.failed = ""  # why it could not start: the interpreter cannot import the kernel stack
        self.preloads = preloads  # False: it imports no module of the notebook's (an earlier one's started a thread)
        self.unsafe = ""  # why it stopped forking: a thread it cannot fork safely exists in it
        connection = agent.connect(zygote_kind(zygote))
        if connection is not None:
            self.reader, self.writer = connection.makefile("r"), connection.makefile("w")
            return
        # Its own session: a terminal's Ctrl-C (SIGINT to the foreground process group) must not kill
        # the zygote, whose death would take every kernel with it before they can be interrupted cleanly.
        try:
            self.proc = subprocess.Popen(zygote.command(), env=zygote.environ(), stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1,
                                         start_new_session=True)
        except OSError as e:  # no such interpreter: the kernel's own start will say so
            raise RuntimeError(f"its interpreter cannot be started ({e})") from e
        self.reader, self.writer = self.proc.stdout, self.proc.stdin

    def alive(self) -> bool:
        return not self.closed and not self.unsafe and (self.proc is None or self.proc.poll() is None)

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
        reply = json.loads(line)
        if "failed" in reply:  # its first and last words
            self.closed, self.failed = True, reply["failed"]
        if "unsafe" in reply:  # it forks no more (it still serves the kernels it forked)
            self.unsafe = reply["unsafe"]
        if "failed" in reply or "error" in reply:
            raise RuntimeError(reply.get("failed") or reply["error"])
        return reply

    def spawn(self, argv: list[str], args: list[str], cwd: str | None, env: dict | None,
              preload=(), output: str | None = None) -> ForkedProcess:
        """Fork a kernel: `argv[0] -m ipykernel_launcher ARGS` as a fresh process would be, its own stdout
        and stderr appended to the file `output` (/dev/null if None)."""
        reply = self.request(op="spawn", argv0=argv[0], args=args, cwd=cwd, env=env or dict(os.environ),
                             preload=list(preload) if self.preloads else [], umask=current_umask(), output=output)
        if "unsafe" in reply:
            if not self.preloads:  # a thread it cannot fork with, and not from a preload: start cold
                raise RuntimeError(f"its zygote cannot fork safely: {reply['unsafe']}")
            say_once(f"the zygote of {' '.join([self.zygote.python, *self.zygote.options])}: {reply['unsafe']}; "
                     "its kernels now fork from one that preloads nothing")
            return server(self.zygote).spawn(argv, args, cwd, env, preload, output)
        return ForkedProcess(self, reply["pid"], reply["id"])


class ForkedProcess:
    """What jupyter_client's LocalProvisioner needs of a Popen, for a kernel forked by a zygote. Its
    status and signals go through the zygote, which is its parent: only the zygote knows whether the
    pid is still this kernel's (a reaped kernel's pid may be any new process's, another kernel's too),
    so a kernel is named by the zygote's id for it, and signalled only while it is unreaped."""

    stdin = stdout = stderr = None  # the kernel's own output goes to a file (spawn's `output`)

    def __init__(self, server: ForkServer, pid: int, kernel_id: int):
        self.server, self.pid, self.id, self.returncode = server, pid, kernel_id, None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                self.returncode = self.server.request(op="status", id=self.id)["status"]
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
        """To the kernel's process group (the kernel and what it started), as jupyter_client signals a
        kernel it launched; nothing if the kernel has ended."""
        with contextlib.suppress(RuntimeError, OSError, ValueError):  # the zygote is gone, and the kernel with it
            self.server.request(op="signal", id=self.id, signum=int(signum))

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
    """What every kernel imports. jupyter_flow's in-kernel side only where it is importable: a zygote of
    another environment may not have it (its kernels then import it as a fresh kernel would, or fail to)."""
    if sys.path and sys.path[0] in ("", os.getcwd()):
        del sys.path[0]  # the runner's folder (from -c): ipykernel adds the kernel's own ('') as usual
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # as kernels have it (kernels.start_kernel)
    import ipykernel.debugger
    import ipykernel.ipkernel  # the point of this process: import once, fork many
    import ipykernel.kernelapp  # noqa: F401

    # What IPKernelApp.initialize imports on top of those (a sys.modules diff of an initialized kernel): ~17 ms a kernel
    for name in ("IPython.core.completerlib", "faulthandler", "tornado.platform.asyncio",
                 "cloudpickle", "jupyter_flow.execution.in_kernel", "jupyter_flow.store"):  # every step's set-up cell's
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


def serve_zygotes(listener, parent: int | None = None) -> None:
    """Fork a zygote (its own session, `_serve` on the connection) for each runner that connects to
    `listener`, from this process, which has imported the kernel stack: the agent's zygote parents.
    With `parent`, until that process is gone (checked every second)."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the zygotes are reaped by the system
    while parent is None or os.getppid() == parent:
        if not select.select([listener], [], [], 1)[0]:
            continue
        conn, _ = listener.accept()
        if os.fork() == 0:
            listener.close()
            child_signals()
            os.setsid()
            try:
                _serve(conn.makefile("r"), conn.makefile("w"))
            finally:
                os._exit(0)
        conn.close()


def child_signals() -> None:
    """A forked child's signals as in a fresh process."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _serve(reader, writer) -> None:
    """Fork a kernel per spawn request, report their exit statuses, signal them; until the runner hangs
    up. A kernel is named by an id of its own, never reused: its pid is its own only until it is reaped.

    Never forks with a thread in this process that a fork cannot carry (checked before every fork): if
    a preload started one, every later spawn is answered `unsafe` (the runner then uses a zygote that
    preloads nothing), while the kernels forked already are still served."""
    kernels: dict[int, int] = {}  # id -> pid of the kernels not reaped yet (their pids cannot be reused)
    statuses: dict[int, int] = {}  # id -> exit code of those reaped
    ids = itertools.count()
    threads = [1]  # the threads allowed here: this one, then those fork-safe libraries start (see _preload)
    unsafe = ""
    for line in reader:
        message = json.loads(line)
        _reap(kernels, statuses)
        if message["op"] == "spawn":
            unsafe = unsafe or _preload(message.get("preload") or [], message.get("cwd") or os.getcwd(),
                                        message["env"], threads)
            if not unsafe and _threads() > threads[0]:
                unsafe = f"a thread started in it ({_threads()} threads, {threads[0]} expected)"
            if unsafe:
                reply = {"unsafe": unsafe}
            else:
                reply = _fork_kernel(message, kernels, ids)
        elif message["op"] == "signal":
            reply = {"sent": _signal_group(kernels.get(message["id"]), message["signum"])}
        else:
            reply = {"status": statuses.get(message["id"])}
        writer.write(json.dumps(reply) + "\n")
        writer.flush()


def _fork_kernel(message: dict, kernels: dict[int, int], ids) -> dict:
    gc.freeze()  # the child's collections skip what the zygote made: no copy-on-write of it all
    try:
        pid = os.fork()
    except OSError as e:  # out of processes or memory, for now: this kernel fails, not the zygote
        return {"error": f"the kernel fork server could not fork: {e}"}
    if pid == 0:
        _become_kernel(message)
    kernels[kernel_id := next(ids)] = pid
    return {"pid": pid, "id": kernel_id}


def _signal_group(pid: int | None, signum: int) -> bool:
    """Signal an unreaped kernel's process group (its own: it called setsid), or the kernel alone if it
    has not yet made its group."""
    if pid is None:
        return False
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
    return True


def _reap(kernels: dict[int, int], statuses: dict[int, int]) -> None:
    for kernel_id, pid in list(kernels.items()):
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done, status = pid, 0
        if done:
            del kernels[kernel_id]
            statuses[kernel_id] = os.waitstatus_to_exitcode(status)


# What a zygote preloads (imports before it forks), among the modules a notebook's `imports` and `functions`
# cells import: the standard library and the libraries below, known to import without starting a thread a fork
# cannot carry or opening a device or connection a forked child would share. JUPYTER_FLOW_PRELOAD_ALLOW adds more
# (comma-separated module names; a package covers its submodules). Every other module (torch, tensorflow, grpc,
# a notebook's own package...) is imported by each step's kernel itself, as without a zygote.
PRELOAD_ALLOWED = ("numpy", "pandas", "scipy", "matplotlib", "seaborn", "sklearn", "statsmodels", "sympy", "networkx",
                   "PIL", "yaml", "requests", "bs4", "tqdm", "dateutil", "pytz", "IPython", "ipywidgets", "cloudpickle",
                   "jupyter_flow")
# Of those, the ones whose import starts threads that do survive a fork: OpenBLAS (numpy's, scipy's) stops its
# threads before a fork and starts them again after (pthread_atfork). Any other thread found in the zygote (before
# every fork) stops its preloading. JUPYTER_FLOW_PRELOAD_FORK_SAFE adds more.
FORK_SAFE_THREADS = ("numpy", "scipy")


def listed(name: str, names, variable: str) -> bool:
    """Whether module `name` is among `names` or the comma-separated names in $variable (a package
    covers its submodules)."""
    extra = [n.strip() for n in os.environ.get(variable, "").split(",") if n.strip()]
    return any(name == n or name.startswith(n + ".") for n in (*names, *extra))


def preload_allowed(name: str) -> bool:
    """Whether a zygote may import module `name` before it forks (see PRELOAD_ALLOWED)."""
    stdlib = getattr(sys, "stdlib_module_names", ())  # (Python 3.10 on: another environment's may be older)
    return name.partition(".")[0] in stdlib or listed(name, PRELOAD_ALLOWED, "JUPYTER_FLOW_PRELOAD_ALLOW")


def _threads() -> int:
    """This process's threads, native ones too (OpenBLAS's, gRPC's), which Python's threading never sees."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:  # no /proc (macOS): Python's own threads only
        return threading.active_count()


def _preload(modules: list[str], cwd: str, env: dict, threads: list[int]) -> str:
    """Import the installed modules among `modules` that are not imported yet and may be (preload_allowed);
    errors are the step's to meet when it runs its own import. `threads[0]` grows by the threads that
    fork-safe libraries start. Returns why this process can no longer fork safely ("" if it can): an
    import started another thread, and preloading stops there."""
    os.environ.clear()  # modules read it as they import (thread counts...): the run's, even in an agent's zygote
    os.environ.update(env)
    # matplotlib picks its backend when imported: the one ipykernel would give the kernel
    os.environ.setdefault("MPLBACKEND", env.get("MPLBACKEND") or "module://matplotlib_inline.backend_inline")
    for name in modules:
        top = name.partition(".")[0]
        if name in sys.modules or os.path.exists(os.path.join(cwd, top + ".py")) \
                or os.path.isdir(os.path.join(cwd, top)) or not preload_allowed(name):
            continue  # imported already, the notebook's folder has a module of that name, or not known fork-safe
        before, imported = _threads(), set(sys.modules)
        try:
            importlib.import_module(name)
        except BaseException:  # noqa: BLE001 - ImportError, SystemExit, anything a module's top level raises
            pass
        started = _threads() - before
        if started <= 0:
            continue
        if any(listed(m, FORK_SAFE_THREADS, "JUPYTER_FLOW_PRELOAD_FORK_SAFE") for m in set(sys.modules) - imported):
            threads[0] += started
            continue
        return (f"importing {name} started {started} thread{'s' if started > 1 else ''} (take it out of "
                "JUPYTER_FLOW_PRELOAD_ALLOW, or add it to JUPYTER_FLOW_PRELOAD_FORK_SAFE if its threads survive "
                "a fork)")
    return ""


def _become_kernel(message: dict) -> None:
    """This forked child becomes the kernel, its own stdout and stderr appended to the runner's file
    for them; it exits as a fresh kernel process would: its exit status, its last words on stderr."""
    code = 1
    try:
        os.setsid()  # its own process group: interrupts go to it alone
        devnull = os.open(os.devnull, os.O_RDWR)
        output = os.open(message.get("output") or os.devnull, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        for fd, to in ((0, devnull), (1, output), (2, output)):
            os.dup2(to, fd)
        sys.stdin = open(0, closefd=False)
        sys.stdout = sys.__stdout__ = open(1, "w", closefd=False, buffering=1)
        sys.stderr = sys.__stderr__ = open(2, "w", closefd=False, buffering=1, errors="backslashreplace")
        if message.get("cwd"):
            os.chdir(message["cwd"])
        if message.get("umask") is not None:  # the runner's (an agent's zygote has the agent's)
            os.umask(message["umask"])
        if "numpy.random" in sys.modules:  # a fresh process would have drawn its own seed
            sys.modules["numpy.random"].seed()
        os.environ.clear()
        os.environ.update(message["env"])
        from ipykernel.kernelapp import IPKernelApp  # lazy: 0.3 s, a kernel's only; the CLI imports this module

        argv = [*message["args"], f"--IPKernelApp.parent_handle={os.getppid()}"]
        sys.argv = [message["argv0"], *argv]
        IPKernelApp.launch_instance(argv=argv)
        code = 0
    except SystemExit as e:  # as the interpreter reads it
        code = e.code if isinstance(e.code, int) else int(e.code is not None)
        if e.code is not None and not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - its traceback, as a fresh process would print it
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(code)  # never return into the zygote's code


if __name__ == "__main__":  # a zygote, started by ForkServer
    try:
        _import_kernel_stack()
    except BaseException as e:  # noqa: BLE001 - ipykernel missing in that environment...: the runner says why
        print(json.dumps({"failed": f"its interpreter cannot import the kernel stack ({type(e).__name__}: {e})"}))
        sys.exit(1)
    if sys.argv[1:2] == ["--listen-fd"]:  # a zygote parent the agent started for another kernelspec's zygote
        import socket

        serve_zygotes(socket.socket(fileno=int(sys.argv[2])), parent=os.getppid())
    else:
        _serve(sys.stdin, sys.stdout)
