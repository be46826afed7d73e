"""Kernels started ahead of need, so a step does not wait for a cold kernel.

Every task gets a fresh kernel (steps never share state through a kernel). The pool keeps up to
`demand` kernels per (kernelspec, working directory) booting in the background while upstream steps
run; `acquire` hands one over ready, and the caller kills it after the task.

Kernels are launched through jupyter_client's supported hook: `ForkProvisioner`, a kernel
provisioner (entry point `jupyter-flow-fork`) that forks python kernels from the zygote (see
forkserver) and launches any other command as jupyter_client's LocalProvisioner does. Our
KernelSpecManager names it for every kernelspec that names no provisioner of its own. Each kernel
comes with a connected client that has seen it ready (`km.ready_client`); the papermill engine
(execution/papermill_engine.py) hands it to nbclient.
"""
from __future__ import annotations

import atexit
import contextlib
import functools
import os
import shutil
import signal
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from queue import Empty

from jupyter_flow.flow import kernelspecs
from jupyter_flow.flow.languages import PYTHON_LANGUAGES
from jupyter_flow.speed import forkserver


def warmup_code(store_url: str) -> str:
    """Code a booting kernel runs so a task does not wait for these imports (about 0.4 s, more for S3)."""
    return f"import jupyter_flow.execution.in_kernel as _jf; _jf.warm({store_url!r})"


def start_kernel(kernel_name: str, cwd: str, startup_timeout: float = 60, warmup: str | None = None,
                 preload=(), python: str | None = None, env: dict | None = None):
    """A started, ready KernelManager; `km.ready_client` is its connected asynchronous client, which
    the papermill engine (execution/papermill_engine.py) hands to nbclient. What the step prints reaches the
    task log through papermill; the kernel process's own stdout and stderr (start-up chatter, a crash's last
    words) go to a file, read by `kernel_output` when the kernel dies. With
    `python`, the kernel is that interpreter running ipykernel (a step's own environment, see envs),
    started the usual way, with `env` added."""
    import zmq  # lazy: jupyter_client and zmq cost 0.2 s; a cache hit starts no kernel
    from jupyter_client import KernelManager
    from jupyter_client.asynchronous import AsyncKernelClient

    # IPC sockets, not TCP ports: kernels started at the same moment cannot race for a port.
    km = KernelManager(kernel_name=kernel_name, transport="ipc", ip=os.path.join(_socket_dir(), uuid.uuid4().hex[:12]),
                       kernel_spec_manager=_kernel_specs(tuple(preload), python))
    env = dict(os.environ, PYDEVD_DISABLE_FILE_VALIDATION="1", **(env or {}))
    speaks_python = km.kernel_spec.language.lower() in PYTHON_LANGUAGES  # ours: set-up code and options are Python's
    with open(os.path.join(_socket_dir(), uuid.uuid4().hex[:12] + ".out"), "w") as output:
        # No history database: a step's kernel lives for one task (saves its sqlite set-up).
        km.start_kernel(cwd=cwd, env=env, stdout=output, stderr=output,
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
    """A KernelSpecManager whose kernelspecs name our fork provisioner (registered by its entry point),
    with the modules to preload as its config: the supported way to pick a kernel's provisioner
    without editing its kernelspec."""
    return _spec_manager_class()(preload=list(preload), python=python or "")


@functools.lru_cache(maxsize=1)
def _spec_manager_class():
    from jupyter_client.kernelspec import KernelSpec  # lazy: 0.15 s; a cache hit starts no kernel
    from traitlets import List, Unicode

    class FlowKernelSpecs(kernelspecs.spec_manager_class()):
        preload = List(Unicode())
        python = Unicode("")  # a step's own environment (envs): its interpreter runs ipykernel

        def get_kernel_spec(self, kernel_name):
            if self.python:
                spec = KernelSpec(argv=[self.python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                                  display_name=f"Python ({self.python})", language="python")
            else:
                spec = super().get_kernel_spec(kernel_name)
            if "kernel_provisioner" not in spec.metadata:  # it forks what it can (fork_plan)
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
    import asyncio  # lazy: asyncio and jupyter_client's provisioning cost 0.2 s; a cache hit starts no kernel

    from jupyter_client.provisioning import LocalProvisioner
    from traitlets import List, Unicode

    class ForkProvisioner(LocalProvisioner):
        """Launches python kernels by forking the run's zygote (see forkserver), which has imported
        the kernel stack and `preload` already; any other command is launched as LocalProvisioner does.

        A forked kernel is the zygote's child: its status and signals go through the zygote
        (ForkedProcess), which alone knows whether the pid is still that kernel's. A kernel launched
        here is signalled only while it is unreaped, checked and sent under the one lock its reaping
        takes, so a signal never reaches a process that got a reaped kernel's pid."""

        preload = List(Unicode(), config=True, help="modules the zygote imports before it forks")
        forked = None  # the ForkedProcess of a forked kernel (None: launched as LocalProvisioner does)
        output = None  # the file of the kernel process's own stdout and stderr

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.reaping = threading.Lock()

        async def launch_kernel(self, cmd, **kwargs):
            self.output = getattr(kwargs.get("stderr"), "name", None)
            if not forkserver.enabled():  # JUPYTER_FLOW_FORK=0
                return await super().launch_kernel(cmd, **kwargs)
            plan = forkserver.fork_plan(cmd, kwargs.get("env"))
            if not isinstance(plan, str):
                try:
                    server = forkserver.server(plan[0])
                    self.forked = server.spawn(cmd, plan[1], kwargs.get("cwd"), kwargs.get("env"), self.preload,
                                               output=self.output)
                    return self.connection_info
                except RuntimeError as e:  # its zygote cannot start (no ipykernel there...), or cannot fork now
                    plan = str(e)
            forkserver.say_once(f"kernelspec {self.parent.kernel_name!r} starts cold, not forked: {plan}")
            return await super().launch_kernel(cmd, **kwargs)

        @property
        def has_process(self) -> bool:
            return self.forked is not None or super().has_process

        def exit_status(self) -> int | None:
            """The kernel's exit status as Popen gives it (-N: killed by signal N); None while it runs."""
            if self.forked is not None:
                return self.forked.poll()
            with self.reaping:
                return self.process.poll() if self.process is not None else None

        def kernel_pid(self) -> int | None:
            return self.forked.pid if self.forked is not None else self.pid

        async def poll(self):
            if self.forked is None:
                with self.reaping:
                    return await super().poll()
            return self.forked.poll()

        async def wait(self):
            if self.forked is None:
                return await super().wait()
            # LocalProvisioner polls every 0.1 s; a killed kernel is reaped within milliseconds
            while self.forked.poll() is None:
                await asyncio.sleep(0.005)
            return self.forked.returncode

        async def send_signal(self, signum: int) -> None:
            if self.forked is not None:
                return self.forked.send_signal(signum)
            with self.reaping:
                if self.process is not None and self.process.poll() is None:
                    await super().send_signal(signum)

        async def kill(self, restart: bool = False) -> None:
            await self.send_signal(signal.SIGKILL) if self.forked is not None else await super().kill(restart)

        async def terminate(self, restart: bool = False) -> None:
            await self.send_signal(signal.SIGTERM) if self.forked is not None else await super().terminate(restart)

    ForkProvisioner.__module__ = __name__
    return ForkProvisioner


async def _ready(kc, timeout: float, warmup: str | None) -> None:
    """Wait until the kernel answers on shell and publishes on IOPub (as jupyter_client's
    wait_for_ready does, without its 0.2 s of IOPub flushing: nbclient ignores others' messages)."""
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


async def _reply(kc, msg_id: str, timeout: float) -> dict:
    """The reply to request `msg_id`. Only the shell channel is read, as nbclient waits for a reply: the
    request's IOPub messages (busy, idle) are left for the next reader, which ignores others' messages."""
    deadline = time.monotonic() + timeout
    while True:
        reply = await kc.shell_channel.get_msg(timeout=max(deadline - time.monotonic(), 0.01))
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply


def blocking_client(km):
    """A separate synchronous client, for running a line of code in the kernel outside nbclient."""
    kc = km.client()
    kc.start_channels()
    return kc


_SOCKETS: list[str] = []


def _socket_dir() -> str:
    """This process's folder of kernel IPC sockets, removed when it exits."""
    if not _SOCKETS:
        _SOCKETS.append(tempfile.mkdtemp(prefix="jupyter-flow-kernels-"))
        atexit.register(shutil.rmtree, _SOCKETS[0], ignore_errors=True)
    return _SOCKETS[0]


def kill_kernel(km) -> None:
    client = getattr(km, "ready_client", None)
    output = getattr(km.provisioner, "output", None)
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
    with contextlib.suppress(OSError, TypeError):
        os.remove(output)


def _signal(km, signum: int) -> None:
    """Signal the kernel through its provisioner (never to a pid from here: see ForkProvisioner)."""
    try:
        km.signal_kernel(signum)
    except Exception:  # noqa: BLE001 - it is gone already
        pass


def kernel_pid(km) -> int | None:
    provisioner = km.provisioner
    if isinstance(provisioner, _fork_provisioner()):
        return provisioner.kernel_pid()
    return getattr(provisioner, "pid", None)


def kernel_output(km, limit: int = 4000) -> str:
    """The end of what the kernel process wrote on its own stdout and stderr (not what its cells
    printed: that reaches the task log through papermill), e.g. why it crashed."""
    path = getattr(km.provisioner, "output", None)  # None: a provisioner named by the kernelspec itself
    try:
        with open(path, "rb") as f:
            f.seek(max(os.fstat(f.fileno()).st_size - limit, 0))
            return f.read().decode(errors="replace")
    except (OSError, TypeError):
        return ""


def kernel_exit(km) -> int | None:
    """The kernel's exit status (-N: killed by signal N), None while it runs or if its provisioner
    is another's (a kernelspec that names its own)."""
    provisioner = km.provisioner
    return provisioner.exit_status() if isinstance(provisioner, _fork_provisioner()) else None


KEPT = 4  # kernels kept for other steps than the one that just kept one (see KernelPool.recycle)


class KernelPool:
    def __init__(self, warmup: str | None = None):
        self.warmup = warmup  # code each kernel runs once ready (see warmup_code)
        self.preload: list[str] = []  # modules imported once for all kernels (see forkserver)
        self._lock = threading.Condition()
        self._ready: dict[tuple, list] = defaultdict(list)
        self._booting: dict[tuple, int] = defaultdict(int)
        self._demand: dict[tuple, int] = defaultdict(int)
        self._errors: dict[tuple, Exception] = {}
        self._kept: dict[tuple, list] = defaultdict(list)  # reuse key -> [(kernel, its reset's msg id)]
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

    def acquire(self, kernel_name: str, cwd: str, preload=(), reuse: tuple | None = None):
        """A ready kernel: one kept for `reuse` (a kernel that ran a contained task of the same step and was
        reset, see recycle), else a warm one, else the next one to finish booting (booting one if none is).
        `preload`: the task's modules to import ahead (its spec's), for a first task that asks before the
        executor's hint (want_kernels) set them: a kernel booted without them imports them itself."""
        key = (kernel_name, cwd)
        if preload and not self.preload:
            self.preload = list(preload)
        kept = self._kept_one(reuse) if reuse is not None else None
        if kept is not None:
            return kept
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

    def recycle(self, km, reuse: tuple, store_url: str) -> bool:
        """Keep a kernel whose task ran contained code and succeeded for the next task of `reuse` (its step)
        that this thread runs, once reset (in_kernel.fresh): the reset is sent now and runs in the kernel while
        this thread stores the task's record; `acquire` waits for its reply. False (not kept) if the pool is
        closed or the request cannot be sent. Kernels kept for other steps beyond KEPT are killed (a run's
        steps end one after another).

        A kept kernel serves this thread only: its client's asynchronous sockets then always wait in this
        thread's event loop, the one nbclient runs here (jupyter_core's run_sync). A zmq socket's file
        descriptor signals once per batch of messages, and another thread's idle loop that still watched it
        would take that signal: the reply would then wait out its timeout."""
        code = f"import jupyter_flow.execution.in_kernel as _jf; _jf.fresh({store_url!r})"
        try:
            resetting = km.ready_client.execute(code, silent=True, store_history=False)
        except Exception:  # noqa: BLE001 - the kernel or its client is gone: it is not kept
            return False
        reuse = (reuse, threading.get_ident())
        with self._lock:
            if self._closed:
                return False
            self._kept[reuse].append((km, resetting))
            others = [(k, kms) for k, kms in self._kept.items() if k != reuse]
            extra, evicted = sum(len(kms) for _, kms in others) - KEPT, []
            for _, kms in others:
                while extra > 0 and kms:
                    evicted.append(kms.pop(0)[0])
                    extra -= 1
        for old in evicted:
            self.release(old)
        return True

    def _kept_one(self, reuse: tuple, timeout: float = 30):
        """A kernel this thread kept for `reuse`, its reset done (`ok`, within `timeout`); None if there is
        none, or if its reset failed (that kernel is then killed)."""
        from jupyter_core.utils import run_sync  # lazy: comes with jupyter_client; a cache hit starts no kernel

        with self._lock:
            kept = self._kept.get((reuse, threading.get_ident()))
            km, resetting = kept.pop() if kept else (None, "")
        if km is None:
            return None
        try:
            reply = run_sync(_reply)(km.ready_client, resetting, timeout)
            if reply["content"]["status"] == "ok" and kernel_exit(km) is None:
                return km
        except Exception:  # noqa: BLE001 - timed out, or the kernel is gone: a fresh one instead
            pass
        self.release(km)
        return None

    def close(self) -> None:
        """Kill the idle kernels, all at once; their clean-up goes on in the background (a run's end does
        not wait for it, and a process that exits leaves only files in its own socket folder)."""
        with self._lock:
            self._closed = True
            idle = [km for kms in self._ready.values() for km in kms]
            idle += [km for kept in self._kept.values() for km, _ in kept]
            self._ready.clear()
            self._kept.clear()
        for km in idle:
            self.release(km)
