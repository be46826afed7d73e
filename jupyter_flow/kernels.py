"""Kernels started ahead of need, so a step does not wait for a cold kernel.

Every task gets a fresh kernel (steps never share state through a kernel). The pool keeps up to
`demand` kernels per (kernelspec, working directory) booting in the background while upstream steps
run; `acquire` hands one over ready, and the caller kills it after the task.
"""
from __future__ import annotations

import functools
import os
import tempfile
import threading
import uuid
from collections import defaultdict

from .errors import FlowError
from .notebook import PYTHON_LANGUAGES


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
        raise FlowError(f"the notebook's kernel {name!r} (its metadata{language}) is not installed; {have}. "
                        "Install that kernel, or pick an installed one in Jupyter (Kernel > Change Kernel) and save")


def installed_kernels() -> dict[str, str]:
    """{name: folder} of the installed kernelspecs, found as jupyter_client's KernelSpecManager finds
    them (a folder with a kernel.json in the kernels dirs of jupyter_path, the first one of a name
    wins) without importing jupyter_client (0.15 s, a third of a run served from the cache)."""
    from jupyter_core.paths import jupyter_path

    found: dict[str, str] = {}
    for kernels_dir in jupyter_path("kernels"):
        try:
            names = sorted(os.listdir(kernels_dir))
        except OSError:
            continue
        for name in names:
            folder = os.path.join(kernels_dir, name)
            if name.lower() not in found and os.path.isfile(os.path.join(folder, "kernel.json")):
                found[name.lower()] = folder
    return found


def warmup_code(store_url: str) -> str:
    """Code a booting kernel runs so a task does not wait for these imports (about 0.4 s, more for S3)."""
    return f"import jupyter_flow.inkernel as _jf; _jf.warm({store_url!r})"


def start_kernel(kernel_name: str, cwd: str, startup_timeout: float = 60, warmup: str | None = None,
                 preload=()):
    """A started, ready KernelManager. What the step prints reaches the task log through papermill;
    the kernel process's own stdout/stderr (startup chatter) is discarded."""
    from jupyter_client import KernelManager
    from jupyter_client.asynchronous import AsyncKernelClient

    # IPC sockets, not TCP ports: kernels started at the same moment cannot race for a port.
    manager = _ForkingKernelManager() if FORK else KernelManager
    km = manager(kernel_name=kernel_name, transport="ipc", ip=os.path.join(_socket_dir(), uuid.uuid4().hex[:12]))
    km.preload = list(preload)  # modules a forked kernel gets imported already (see forkserver)
    env = dict(os.environ, PYDEVD_DISABLE_FILE_VALIDATION="1")
    python = km.kernel_spec.language.lower() in PYTHON_LANGUAGES  # ours: set-up code and options are Python's
    with open(os.devnull, "w") as devnull:
        # No history database: a step's kernel lives for one task (saves its sqlite set-up).
        km.start_kernel(cwd=cwd, env=env, stdout=devnull, stderr=devnull,
                        extra_arguments=["--HistoryManager.enabled=False"] if python else [])
    kc = AsyncKernelClient(**km.get_connection_info(session=True), connection_file=km.connection_file, parent=km)
    kc.start_channels()
    try:
        import asyncio  # here, not at the top: a run served from the cache never starts a kernel

        asyncio.run(_ready(kc, startup_timeout, warmup if python else None))
    except RuntimeError:
        kc.stop_channels()
        kill_kernel(km)
        raise
    warm = WarmClient(kc)
    km.client = lambda **kwargs: warm  # nbclient asks for a client: it gets this ready one
    return km


FORK = os.environ.get("JUPYTER_FLOW_FORK", "1") != "0"  # JUPYTER_FLOW_FORK=0: start kernels the usual way


@functools.lru_cache(maxsize=1)
def _ForkingKernelManager():
    """A KernelManager class whose python kernels are forked from a zygote (see forkserver)."""
    from jupyter_client import KernelManager

    from . import forkserver

    class ForkingKernelManager(KernelManager):
        async def _async_launch_kernel(self, kernel_cmd, **kw):
            if not forkserver.can_fork(kernel_cmd):
                return await super()._async_launch_kernel(kernel_cmd, **kw)
            provisioner = self.provisioner
            provisioner.process = forkserver.server().spawn(kernel_cmd, kw.get("cwd"), kw.get("env"), self.preload)
            provisioner.pid = provisioner.pgid = provisioner.process.pid
            provisioner.cwd = kw.get("cwd")
            self._reconcile_connection_info(provisioner.connection_info)

    return ForkingKernelManager


async def _ready(kc, timeout: float, warmup: str | None) -> None:
    await kc.wait_for_ready(timeout=timeout)
    if warmup:
        await kc.execute_interactive(warmup, silent=True, store_history=False, timeout=timeout,
                                     output_hook=lambda msg: None)


def blocking_client(km):
    """A separate synchronous client, for running a line of code in the kernel outside nbclient."""
    from jupyter_client import KernelManager

    kc = KernelManager.client(km)
    kc.start_channels()
    return kc


class WarmClient:
    """An asynchronous kernel client that is already connected and has seen the kernel ready.

    nbclient would start channels and wait for the kernel again, which costs 0.2 s of IOPub
    flushing per task; handing it this client skips that. (It must be asynchronous: with a
    blocking client nbclient cannot notice a kernel killed in the middle of a cell.)
    """

    def __init__(self, kc):
        object.__setattr__(self, "_kc", kc)

    def start_channels(self, *args, **kwargs):
        return None

    async def wait_for_ready(self, *args, **kwargs):
        return None

    def __getattr__(self, name):
        return getattr(self._kc, name)

    def __setattr__(self, name, value):
        setattr(self._kc, name, value)


_SOCKETS: list[str] = []


def _socket_dir() -> str:
    if not _SOCKETS:
        _SOCKETS.append(tempfile.mkdtemp(prefix="jupyter-flow-kernels-"))
    return _SOCKETS[0]


def kill_kernel(km) -> None:
    try:
        km.client().stop_channels()
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
        self._boot_slots = threading.BoundedSemaphore(os.cpu_count() or 2)
        self._dying: list[threading.Thread] = []

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
        with self._boot_slots:  # boots at once <= cores: the first kernel is ready sooner
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
        """Kill a used kernel in the background: the task's result does not wait for it."""
        thread = threading.Thread(target=kill_kernel, args=(km,), daemon=True, name="jupyter-flow-kill")
        thread.start()
        with self._lock:
            self._dying = [t for t in self._dying if t.is_alive()] + [thread]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle = [km for kms in self._ready.values() for km in kms]
            self._ready.clear()
            dying = list(self._dying)
        for km in idle:
            kill_kernel(km)
        for thread in dying:
            thread.join(10)
