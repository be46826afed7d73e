"""Kernels started ahead of need, so a step does not wait for a cold kernel.

Every task gets a fresh kernel (steps never share state through a kernel). The pool keeps up to
`demand` kernels per (kernelspec, working directory) booting in the background while upstream steps
run; `acquire` hands one over ready, and the caller kills it after the task.

Kernels are launched through jupyter_client's supported hook: `ForkProvisioner`, a kernel
provisioner (entry point `jupyter-flow-fork`) that forks python kernels from the zygote (see
forkserver) and launches any other command as jupyter_client's LocalProvisioner does. Our
KernelSpecManager names it for every kernelspec that names no provisioner of its own. Each kernel
comes with a connected client that has seen it ready (`km.ready_client`); the papermill engine
(execution/control.py) hands it to nbclient.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import tempfile
import threading
import time
import uuid
from collections import defaultdict

from jupyter_flow.speed import forkserver
from jupyter_flow.errors import FlowError
from jupyter_flow.flow.notebook import PYTHON_LANGUAGES


def check_kernelspecs(flow) -> None:
    """Every kernel the flow's steps need is installed: the notebook's own (its metadata) and those
    of `kernel:` tags. The error says which one is missing and where it was asked for."""
    import importlib.util

    installed = installed_kernels()
    if importlib.util.find_spec("ipykernel") is not None:
        installed.setdefault("python3", "")
    if "python3" in installed:
        installed.setdefault("python", installed["python3"])  # jupyter_client's KernelManager reads it so
    tagged = {s.options["kernel"]: s.name for s in flow.steps.values() if "kernel" in s.options}
    for name in sorted(flow.kernels()):
        if name in installed:
            continue
        have = f"installed kernels: {', '.join(sorted(installed))}"
        if name in tagged:
            raise FlowError(f"no kernel named {name!r} (kernel:{name} on step {tagged[name]!r}); {have}. Install it "
                            "(python -m ipykernel install --user --name NAME) or fix the kernel: tag")
        language = "" if flow.notebook.python else f", language {flow.notebook.language}"
        where = "its metadata" if name == flow.notebook.kernel else "-k"
        raise FlowError(f"the notebook's kernel {name!r} ({where}{language}) is not installed; {have}. Install that "
                        "kernel, pick an installed one in Jupyter (Kernel > Change Kernel) and save, or run with -k NAME")


def installed_kernels(kernel_dirs=None) -> dict[str, str]:
    """{name: folder} of the installed kernelspecs, found as jupyter_client's KernelSpecManager finds
    them (a folder with a kernel.json in the kernels dirs of jupyter_path, the first one of a name
    wins) without importing jupyter_client (0.15 s, a third of a run served from the cache)."""
    from jupyter_core.paths import jupyter_path

    found: dict[str, str] = {}
    for kernels_dir in jupyter_path("kernels") if kernel_dirs is None else kernel_dirs:
        try:
            names = sorted(os.listdir(kernels_dir))
        except OSError:
            continue
        for name in names:
            folder = os.path.join(kernels_dir, name)
            if name.lower() not in found and os.path.isfile(os.path.join(folder, "kernel.json")):
                found[name.lower()] = folder
    return found


def spec_command(kernel_name: str) -> tuple[list[str], dict]:
    """The command and environment a kernelspec's kernel would be launched with, read without importing
    jupyter_client (to start its zygote early): ipykernel's own kernelspec, and `python3` where none is
    installed, run this interpreter; so does a bare `python` in a kernelspec (jupyter_client's rule)."""
    import json
    import sys

    argv, env = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"], {}
    folder = installed_kernels().get(kernel_name.lower())
    if folder is not None and folder != _ipykernel_resources():
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):  # jupyter_client will say what is wrong
            with open(os.path.join(folder, "kernel.json")) as f:
                spec = json.load(f)
            argv, env = list(spec["argv"]), dict(spec.get("env") or {})
    if argv and argv[0] in {"python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info[:2])}:
        argv[0] = sys.executable
    return argv, {**os.environ, "PYDEVD_DISABLE_FILE_VALIDATION": "1", **env}


def warmup_code(store_url: str) -> str:
    """Code a booting kernel runs so a task does not wait for these imports (about 0.4 s, more for S3)."""
    return f"import jupyter_flow.execution.in_kernel as _jf; _jf.warm({store_url!r})"


def start_kernel(kernel_name: str, cwd: str, startup_timeout: float = 60, warmup: str | None = None,
                 preload=(), python: str | None = None, env: dict | None = None):
    """A started, ready KernelManager; `km.ready_client` is its connected asynchronous client, which
    the papermill engine (execution/control.py) hands to nbclient. What the step prints reaches the task log
    through papermill; the kernel process's own stdout/stderr (startup chatter) is discarded. With
    `python`, the kernel is that interpreter running ipykernel (a step's own environment, see envs),
    started the usual way, with `env` added."""
    import zmq
    from jupyter_client import KernelManager
    from jupyter_client.asynchronous import AsyncKernelClient

    # IPC sockets, not TCP ports: kernels started at the same moment cannot race for a port.
    km = KernelManager(kernel_name=kernel_name, transport="ipc", ip=os.path.join(_socket_dir(), uuid.uuid4().hex[:12]),
                       kernel_spec_manager=_kernel_specs(tuple(preload), python))
    env = dict(os.environ, PYDEVD_DISABLE_FILE_VALIDATION="1", **(env or {}))
    speaks_python = km.kernel_spec.language.lower() in PYTHON_LANGUAGES  # ours: set-up code and options are Python's
    with open(os.devnull, "w") as devnull:
        # No history database: a step's kernel lives for one task (saves its sqlite set-up).
        km.start_kernel(cwd=cwd, env=env, stdout=devnull, stderr=devnull,
                        extra_arguments=["--HistoryManager.enabled=False"] if speaks_python else [])
    kc = AsyncKernelClient(**km.get_connection_info(session=True), connection_file=km.connection_file, parent=km)
    kc.allow_stdin = False  # as nbclient sets it on the clients it makes
    # The kernel binds its sockets a few ms after it starts; a client that connected before that
    # retries after zmq's reconnect interval (100 ms by default), on each channel. Retry sooner.
    kc.context.setsockopt(zmq.RECONNECT_IVL, RECONNECT_MS)
    kc.start_channels()
    km.ready_client = kc
    try:
        import asyncio  # here, not at the top: a run served from the cache never starts a kernel

        asyncio.run(_ready(kc, startup_timeout, warmup if speaks_python else None))
    except RuntimeError:
        kill_kernel(km)
        raise
    return km


RECONNECT_MS = 5
PROVISIONER = "jupyter-flow-fork"  # entry point in jupyter_client.kernel_provisioners (pyproject.toml)


def _kernel_specs(preload: tuple, python: str | None = None):
    """A KernelSpecManager whose kernelspecs name our fork provisioner, with the modules to preload
    as its config: the supported way to pick a kernel's provisioner without editing its kernelspec."""
    from jupyter_client.provisioning import KernelProvisionerFactory

    factory = KernelProvisionerFactory.instance()
    if PROVISIONER not in factory.provisioners:  # an install made before the entry point was declared
        from importlib.metadata import EntryPoint

        factory.provisioners[PROVISIONER] = EntryPoint(PROVISIONER, "jupyter_flow.execution.kernel_pool:ForkProvisioner",
                                                       KernelProvisionerFactory.GROUP_NAME)
    return _spec_manager_class()(preload=list(preload), python=python or "")


def _ipykernel_resources() -> str | None:
    """The folder of ipykernel's own kernelspec, found without importing ipykernel."""
    import importlib.util

    found = importlib.util.find_spec("ipykernel")
    return found and found.origin and os.path.join(os.path.dirname(found.origin), "resources")


@functools.lru_cache(maxsize=1)
def _spec_manager_class():
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager, NoSuchKernel
    from jupyter_client.provisioning import KernelProvisionerFactory
    from traitlets import List, Unicode

    class FlowKernelSpecs(KernelSpecManager):
        preload = List(Unicode())
        python = Unicode("")  # a step's own environment (envs): its interpreter runs ipykernel, not forked

        def _kernel_dirs_default(self):
            """jupyter_client's, with IPython's folder found as IPython finds it, without importing
            IPython (0.17 s of a run's start-up)."""
            from jupyter_core.paths import jupyter_path

            ipython_dir = os.environ.get("IPYTHONDIR") or os.path.join(os.path.expanduser("~"), ".ipython")
            return [*jupyter_path("kernels"), os.path.join(ipython_dir, "kernels")]

        def get_kernel_spec(self, kernel_name):
            if self.python:
                return KernelSpec(argv=[self.python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                                  display_name=f"Python ({self.python})", language="python")
            folder = installed_kernels(self.kernel_dirs).get(kernel_name.lower())
            if folder is None or folder == _ipykernel_resources():
                spec = super().get_kernel_spec(kernel_name)
            else:  # its kernel.json, read as jupyter_client reads it, which would first import ipykernel
                spec = KernelSpec.from_resource_dir(folder)  # to compare folders (and IPython: 0.2 s)
                if not KernelProvisionerFactory.instance(parent=self.parent).is_provisioner_available(spec):
                    raise NoSuchKernel(kernel_name)
            if forkserver.enabled() and "kernel_provisioner" not in spec.metadata:  # it forks what it can (can_fork)
                spec.metadata["kernel_provisioner"] = {"provisioner_name": PROVISIONER,
                                                       "config": {"preload": self.preload}}
            return spec

    return FlowKernelSpecs


def __getattr__(name):
    if name == "ForkProvisioner":  # built on first use: jupyter_client is imported only then
        return _fork_provisioner()
    raise AttributeError(name)


@functools.lru_cache(maxsize=1)
def _fork_provisioner():
    import asyncio

    from jupyter_client.provisioning import LocalProvisioner
    from traitlets import List, Unicode

    class ForkProvisioner(LocalProvisioner):
        """Launches python kernels by forking the run's zygote (see forkserver), which has imported
        the kernel stack and `preload` already; any other command is launched as LocalProvisioner does."""

        preload = List(Unicode(), config=True, help="modules the zygote imports before it forks")

        async def launch_kernel(self, cmd, **kwargs):
            plan = forkserver.fork_plan(cmd, kwargs.get("env"))
            if not isinstance(plan, str):
                try:
                    server = forkserver.server(plan[0])
                    self.process = server.spawn(cmd, plan[1], kwargs.get("cwd"), kwargs.get("env"), self.preload)
                except RuntimeError as e:  # its zygote cannot start (no ipykernel there...), or cannot fork now
                    plan = str(e)
            if isinstance(plan, str):
                _say_once(f"kernelspec {self.parent.kernel_name!r} starts cold, not forked: {plan}")
                return await super().launch_kernel(cmd, **kwargs)
            # Signals go through the zygote (ForkedProcess), never to a pid or group id from here: the
            # zygote reaps its kernels, and a reaped kernel's pid can be a new kernel's. No pgid, then.
            self.pid, self.pgid = self.process.pid, None
            self.cwd = kwargs.get("cwd")
            return self.connection_info

        async def wait(self):
            # LocalProvisioner polls every 0.1 s; a killed kernel is reaped within milliseconds
            while isinstance(self.process, forkserver.ForkedProcess) and self.process.poll() is None:
                await asyncio.sleep(0.005)
            return await super().wait()

    ForkProvisioner.__module__ = __name__
    return ForkProvisioner


_said: set[str] = set()


def _say_once(message: str) -> None:
    """A debug line (`jupyter flow --debug` shows it), once per process."""
    if message not in _said:
        _said.add(message)
        logging.getLogger(__name__).debug(message)


async def _ready(kc, timeout: float, warmup: str | None) -> None:
    """Wait until the kernel answers on shell and publishes on IOPub (as jupyter_client's
    wait_for_ready does, without its 0.2 s of IOPub flushing: nbclient ignores others' messages)."""
    from queue import Empty

    deadline = time.monotonic() + timeout
    while True:
        kc.kernel_info()
        try:
            reply = await kc.shell_channel.get_msg(timeout=1)
        except Empty:
            reply = None
        if reply is not None and reply["msg_type"] == "kernel_info_reply":
            try:
                await kc.iopub_channel.get_msg(timeout=0.2)  # its welcome, or the status of our request
                break
            except Empty:
                pass
        if not await kc.is_alive():
            raise RuntimeError("Kernel died before replying to kernel_info")
        if time.monotonic() > deadline:
            raise RuntimeError(f"Kernel didn't respond in {timeout:g} seconds")
    if warmup:
        await kc.execute_interactive(warmup, silent=True, store_history=False, timeout=timeout,
                                     output_hook=lambda msg: None)


def blocking_client(km):
    """A separate synchronous client, for running a line of code in the kernel outside nbclient."""
    kc = km.client()
    kc.start_channels()
    return kc


_SOCKETS: list[str] = []


def _socket_dir() -> str:
    """This process's folder of kernel IPC sockets, removed when it exits."""
    if not _SOCKETS:
        import atexit
        import shutil

        _SOCKETS.append(tempfile.mkdtemp(prefix="jupyter-flow-kernels-"))
        atexit.register(shutil.rmtree, _SOCKETS[0], ignore_errors=True)
    return _SOCKETS[0]


def kill_kernel(km) -> None:
    client = getattr(km, "ready_client", None)
    try:
        if client is not None:
            client.stop_channels()
    except Exception:  # noqa: BLE001 - closing sockets of a dead kernel may fail
        pass
    try:
        km.shutdown_kernel(now=True)
    except Exception:  # noqa: BLE001 - it is gone either way
        pass
    try:
        km.cleanup_resources()
    except Exception:  # noqa: BLE001
        pass


def _signal(km, signum: int) -> None:
    try:
        km.provisioner.process.send_signal(signum)
    except Exception:  # noqa: BLE001 - it is gone already
        pass


def kernel_pid(km) -> int | None:
    process = getattr(km.provisioner, "process", None)
    return getattr(process, "pid", None)


def kernel_exit(km) -> int | None:
    process = getattr(km.provisioner, "process", None)
    return process.poll() if process is not None else None


class KernelPool:
    def __init__(self, warmup: str | None = None):
        self.warmup = warmup  # code each kernel runs once ready (see warmup_code)
        self.preload: list[str] = []  # modules imported once for all kernels (see forkserver)
        self._lock = threading.Condition()
        self._ready: dict[tuple, list] = defaultdict(list)
        self._booting: dict[tuple, int] = defaultdict(int)
        self._demand: dict[tuple, int] = defaultdict(int)
        self._errors: dict[tuple, Exception] = {}
        self._closed = False
        # boots at once: cores (a cold kernel is CPU-bound), four per core if forked (one costs ~0.1 s of
        # CPU, and a chain of short steps needs its next kernels right after the first)
        self._boot_slots = threading.BoundedSemaphore((4 if forkserver.enabled() else 1) * (os.cpu_count() or 2))

    def set_demand(self, kernel_name: str, cwd: str, count: int) -> None:
        """Keep up to `count` kernels of this kind started or starting."""
        key = (kernel_name, cwd)
        with self._lock:
            self._demand[key] = count
            missing = count - len(self._ready[key]) - self._booting[key]
            self._booting[key] += max(missing, 0)
        for _ in range(max(missing, 0)):
            threading.Thread(target=self._boot, args=(key,), daemon=True, name="jupyter-flow-kernel").start()

    def _boot(self, key) -> None:
        with self._boot_slots:
            self._boot_one(key)

    def _boot_one(self, key) -> None:
        try:
            try:
                km = start_kernel(*key, warmup=self.warmup, preload=self.preload)
            except RuntimeError:  # a kernel that died while booting (rare, under load): one more try
                km = start_kernel(*key, warmup=self.warmup, preload=self.preload)
        except Exception as e:  # noqa: BLE001 - reported to whoever acquires
            with self._lock:
                self._booting[key] -= 1
                self._errors[key] = e
                self._lock.notify_all()
            return
        with self._lock:
            self._booting[key] -= 1
            if self._closed:
                kill_kernel(km)
                return
            self._ready[key].append(km)
            self._lock.notify_all()

    def acquire(self, kernel_name: str, cwd: str):
        """A ready kernel: a warm one, else the next one to finish booting (booting one if none is)."""
        key = (kernel_name, cwd)
        with self._lock:
            while True:
                if self._ready[key]:
                    return self._ready[key].pop(0)
                if key in self._errors:
                    raise self._errors.pop(key)
                if not self._booting[key]:  # none coming (another task took the last one): boot one
                    self._booting[key] += 1
                    threading.Thread(target=self._boot, args=(key,), daemon=True,
                                     name="jupyter-flow-kernel").start()
                self._lock.wait(0.5)

    def release(self, km) -> None:
        """Kill a used kernel now; its clean-up (client sockets, connection file) in the background:
        the task's result does not wait for it."""
        _signal(km, 9)
        threading.Thread(target=kill_kernel, args=(km,), daemon=True, name="jupyter-flow-kill").start()

    def close(self) -> None:
        """Kill the idle kernels, all at once; their clean-up goes on in the background (a run's end does
        not wait for it, and a process that exits leaves only files in its own socket folder)."""
        with self._lock:
            self._closed = True
            idle = [km for kms in self._ready.values() for km in kms]
            self._ready.clear()
        for km in idle:
            self.release(km)
