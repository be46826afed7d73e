"""Per-step Python environments: a step tagged `pip:SPEC` runs in a virtualenv holding those packages.

Environments are built with uv (`uv venv`, `uv pip install`), one per requirement set and Python
version, in a cache folder ($JUPYTER_FLOW_ENVS, else ~/.cache/jupyter-flow/envs) and reused by every
later run. Each holds the step's packages plus what a step's kernel needs: ipykernel, and
jupyter_flow's in-kernel dependencies pinned to the runner's versions (cloudpickle, xxhash, fsspec),
so values pickled in one environment load in another. jupyter_flow itself is not installed: the
kernel finds the runner's copy through PYTHONPATH, on a folder that holds only a link to it.

A build happens in a temporary folder renamed into place when complete, under a file lock: two tasks
never build the same environment at once, and a build that crashed halfway is never used.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata

from jupyter_flow.errors import FlowError

CACHE_ENV = "JUPYTER_FLOW_ENVS"
META = "jupyter-flow-env.json"
USED = ".last-used"
KERNEL_PACKAGES = ("ipykernel", "cloudpickle", "xxhash", "fsspec")  # what in_kernel imports, pinned to ours


def cache_dir() -> str:
    default = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "jupyter-flow", "envs")
    return os.environ.get(CACHE_ENV) or default


def requirement(spec: str) -> str:
    """The normalized form of one `pip:` requirement; ValueError (its reason) if it is not one."""
    from packaging.requirements import InvalidRequirement, Requirement  # lazy: 60 ms; only pip: tags need it

    try:
        return str(Requirement(spec))
    except InvalidRequirement as e:
        raise ValueError(str(e).splitlines()[0]) from None


def python_version() -> str:
    """The Python every environment is built on: the one running jupyter_flow (values pickle across)."""
    return f"{platform.python_implementation()} {platform.python_version()}"


def kernel_requirements() -> list[str]:
    return [f"{name}=={metadata.version(name)}" for name in KERNEL_PACKAGES]


def env_key(requirements: list[str]) -> str:
    """The cache key of an environment: its requirement set, what kernels need, the Python version."""
    payload = [sorted(requirements), kernel_requirements(), python_version(), platform.machine()]
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:16]


@dataclass
class Env:
    key: str
    path: str
    requirements: list[str]
    python_version: str
    packages: dict  # name -> version, as `uv pip freeze` resolved them

    @property
    def python(self) -> str:
        return os.path.join(self.path, "bin", "python")

    def kernel_environ(self) -> dict:
        """Environment variables for a kernel in this environment: it is the active virtualenv (IPython
        would add another one's packages), `!pip` and `python` are its own, and it finds this
        jupyter_flow, and nothing else of the runner's environment, on PYTHONPATH."""
        package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # jupyter_flow/
        shim = os.path.join(cache_dir(), ".path", hashlib.sha256(package.encode()).hexdigest()[:16])
        if not os.path.islink(os.path.join(shim, "jupyter_flow")):
            os.makedirs(shim, exist_ok=True)
            tmp = os.path.join(shim, f".link-{uuid.uuid4().hex[:8]}")
            os.symlink(package, tmp)
            os.replace(tmp, os.path.join(shim, "jupyter_flow"))
        bin_dir = os.path.dirname(self.python)
        return {"PYTHONPATH": shim, "VIRTUAL_ENV": self.path, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}

    def describe(self) -> dict:
        """What a task records (task.json `env`)."""
        return {"key": self.key, "requirements": self.requirements, "python": self.python_version,
                "packages": self.packages}


def ensure(requirements: list[str]) -> Env:
    """The environment for `requirements`: from the cache, else built now (FlowError if uv fails)."""
    key = env_key(requirements)
    path = os.path.join(cache_dir(), key)
    env = _load(path)
    if env is None:
        os.makedirs(cache_dir(), exist_ok=True)
        with _locked(os.path.join(cache_dir(), f".{key}.lock")):
            env = _load(path) or _build(key, path, requirements)
    _touch(path)
    return env


def _load(path: str) -> Env | None:
    try:
        with open(os.path.join(path, META)) as f:
            return Env(path=path, **json.load(f))
    except (OSError, ValueError, TypeError):
        return None


def _touch(path: str) -> None:
    try:
        with open(os.path.join(path, USED), "w"):
            pass
    except OSError:  # removed meanwhile (`jupyter flow envs rm`): the next task builds it again
        pass


@contextmanager
def _locked(lock_path: str):
    with open(lock_path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes, or when a crashed builder dies
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _build(key: str, path: str, requirements: list[str]) -> Env:
    for stale in os.listdir(cache_dir()):  # what builds that crashed left (we hold the lock)
        if stale.startswith(f".build-{key}-"):
            shutil.rmtree(os.path.join(cache_dir(), stale), ignore_errors=True)
    if os.path.exists(path):  # not an environment we built (no record of it): never trusted
        _delete(path)
    tmp = os.path.join(cache_dir(), f".build-{key}-{uuid.uuid4().hex[:8]}")
    uv_bin = _uv_bin()
    what = " ".join(f"pip:{r}" for r in requirements)
    try:
        _uv(uv_bin, ["venv", "--quiet", "--relocatable", "--python", sys.executable, tmp], what)
        env_python = os.path.join(tmp, "bin", "python")
        _uv(uv_bin, ["pip", "install", "--quiet", "--python", env_python, *kernel_requirements(), *requirements], what)
        frozen = _uv(uv_bin, ["pip", "freeze", "--python", env_python], what)
        packages = dict(line.split("==", 1) for line in frozen.splitlines() if "==" in line)
        env = Env(key=key, path=path, requirements=sorted(requirements), python_version=python_version(),
                  packages=packages)
        with open(os.path.join(tmp, META), "w") as f:
            json.dump({k: v for k, v in vars(env).items() if k != "path"}, f, indent=1)
        os.rename(tmp, path)  # complete, or not there at all
        return env
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


_uv_lock = threading.Lock()


def _uv_bin() -> str:
    """uv's executable, looked up one thread at a time: uv finds it through sysconfig, whose first
    call fills a shared dict that a concurrent build could read half-filled (before Python 3.13;
    seen as `TypeError: can only concatenate str (not "NoneType") to str` on a Dask worker)."""
    import uv  # lazy: only a step with pip: tags builds an environment

    with _uv_lock:
        return uv.find_uv_bin()


def _uv(uv_bin: str, args: list[str], what: str) -> str:
    done = subprocess.run([uv_bin, *args], capture_output=True, text=True, env=dict(os.environ, UV_NO_PROGRESS="1"))
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        reason = " ".join(lines[:3])[:400] or f"exit code {done.returncode}"
        raise FlowError(f"cannot build the environment for {what}: uv {args[0]} {args[1]} failed: {reason}")
    return done.stdout


@dataclass
class Resolution:
    packages: dict  # name -> version


def resolve(requirements: list[str]) -> Resolution:
    """The versions `requirements` (with what kernels need) resolve to now, without building anything
    (`uv pip compile`): the cache key of a step whose environment a worker builds."""
    with tempfile.NamedTemporaryFile("w", suffix=".in", prefix="jupyter-flow-") as f:
        f.write("\n".join([*kernel_requirements(), *requirements]) + "\n")
        f.flush()
        pinned = _uv(_uv_bin(), ["pip", "compile", "--quiet", "--no-header", "--no-annotate", "--python-version",
                                        platform.python_version(), f.name], " ".join(f"pip:{r}" for r in requirements))
    return Resolution(dict(line.strip().split("==", 1) for line in pinned.splitlines() if "==" in line))


# -- built ahead: the runner starts every environment a run needs when the run starts -----------------
class Builder:
    """Builds environments in background threads (or, for `resolve_sets`, whose environments workers
    build, only resolves their versions); `ready` asks without waiting."""

    def __init__(self, requirement_sets, on_ready=lambda: None, resolve_sets=()):
        sets = {tuple(r) for r in requirement_sets}
        remote = {tuple(r) for r in resolve_sets} - sets
        self._threads = ThreadPoolExecutor(max(len(sets | remote), 1), thread_name_prefix="jupyter-flow-env")
        self._builds: dict[tuple, Future] = {r: self._threads.submit(ensure, list(r)) for r in sets}
        self._builds.update({r: self._threads.submit(resolve, list(r)) for r in remote})
        for build in self._builds.values():
            build.add_done_callback(lambda f: on_ready())
        self._threads.shutdown(wait=False)

    def ready(self, requirements: list[str]) -> bool:
        build = self._builds.get(tuple(requirements))
        return build is None or build.done()

    def packages(self, requirements: list[str]) -> dict | None:
        """Resolved versions of the environment; None if it failed (the task says why)."""
        build = self._builds.get(tuple(requirements))
        return build.result().packages if build is not None and build.exception() is None else None


# -- `jupyter flow envs` ----------------------------------------------------------------------------
def list_envs() -> list[dict]:
    """Every cached environment, most recently used first."""
    root = cache_dir()
    found = []
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        env = _load(os.path.join(root, name))
        if env is None:
            continue
        used = os.path.join(env.path, USED)
        found.append({**env.describe(), "path": env.path, "size": _size(env.path),
                      "last_used": os.path.getmtime(used if os.path.exists(used) else env.path)})
    return sorted(found, key=lambda e: -e["last_used"])


def remove(keys: list[str], everything: bool = False) -> list[str]:
    """Delete cached environments by key (a unique prefix is enough), or all; returns the keys removed."""
    envs = list_envs()
    if everything:
        chosen = [e["key"] for e in envs]
    else:
        chosen = []
        for prefix in keys:
            matches = [e["key"] for e in envs if e["key"].startswith(prefix)]
            if len(matches) != 1:
                problem = "no cached environment" if not matches else f"{len(matches)} environments"
                raise FlowError(f"{problem} with key {prefix!r}; `jupyter flow envs` lists them")
            chosen += matches
    for key in chosen:
        _delete(os.path.join(cache_dir(), key))
    if everything:
        for name in os.listdir(cache_dir()) if os.path.isdir(cache_dir()) else []:
            if name.startswith(".build-"):
                shutil.rmtree(os.path.join(cache_dir(), name), ignore_errors=True)
    return chosen


def _delete(path: str) -> None:
    """Rename first: a task starting meanwhile builds a fresh one rather than using half a folder."""
    doomed = f"{os.path.dirname(path)}/.build-rm-{uuid.uuid4().hex[:8]}"
    os.rename(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def _size(path: str) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total


def age(seconds_since_epoch: float) -> str:
    ago = max(time.time() - seconds_since_epoch, 0)
    for unit, span in (("d", 86400), ("h", 3600), ("min", 60)):
        if ago >= span:
            return f"{ago / span:.0f} {unit} ago"
    return "just now"
