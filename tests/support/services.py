"""Real background services for tests, started as subprocesses on free loopback ports.

    with dask_cluster(tmp, workers=2) as address: ...   # `dask scheduler` + `dask worker` processes
    with moto_s3(tmp) as endpoint: ...                  # `moto_server`, an S3 API on 127.0.0.1
"""
from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode} before listening on {port}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{proc.args[0]} did not listen on port {port} within {timeout} s")


def _start(args: list[str], log: Path, cwd: Path | None = None, env: dict | None = None) -> subprocess.Popen:
    out = open(log, "wb")
    return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True,
                            env={**os.environ, **env} if env else None)


def _stop(procs: list[subprocess.Popen], timeout: float = 20) -> None:
    """SIGTERM each process (workers first, so they close their kernels), then kill what is left."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextlib.contextmanager
def dask_cluster(tmp: Path, workers: int = 2, nthreads: int = 2, resources: str | list | None = None,
                 hide: tuple = (), env: dict | None = None):
    """A real Dask cluster on 127.0.0.1: one scheduler and `workers` worker processes. Yields its address.

    Worker i runs in its own folder tmp/wI (its cwd and --local-directory). `resources` is one
    `--resources` value for all workers or a list with one per worker (None: none). `hide` lists
    folders the workers must not see, as on another machine: they run in a mount namespace of their
    own with an empty tmpfs over each (`unshare`, unprivileged user namespaces). `env` is added to
    the workers' environment (e.g. `s3_env(endpoint)`)."""
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    scheduler = _start([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                        "--port", str(port), "--no-dashboard", "--no-show"], tmp / "scheduler.log")
    procs = [scheduler]
    per_worker = resources if isinstance(resources, list) else [resources] * workers
    try:
        wait_for_port(port, scheduler)
        for i, res in enumerate(per_worker):
            folder = tmp / f"w{i}"
            folder.mkdir(exist_ok=True)
            args = [sys.executable, "-m", "distributed.cli.dask_worker", address, "--host", "127.0.0.1",
                    "--nworkers", "1", "--nthreads", str(nthreads), "--no-dashboard", "--name", f"w{i}",
                    "--local-directory", str(folder)] + (["--resources", res] if res else [])
            if hide:
                mounts = "".join(f"mount -t tmpfs none {shlex.quote(str(h))} && " for h in hide)
                args = ["unshare", "--map-root-user", "--mount", "sh", "-c", mounts + 'exec "$@"', "sh", *args]
            procs.insert(0, _start(args, tmp / f"worker{i}.log", cwd=folder, env=env))
        _wait_for_workers(address, len(per_worker))
        yield address
    finally:
        _stop(procs)


def can_hide_folders() -> bool:
    """Whether `dask_cluster(hide=...)` works here (unprivileged user and mount namespaces)."""
    try:
        return subprocess.run(["unshare", "--map-root-user", "--mount", "true"], capture_output=True).returncode == 0
    except OSError:
        return False


def _wait_for_workers(address: str, n: int, timeout: float = 90) -> None:
    from distributed import Client

    with Client(address, timeout=30, set_as_default=False) as client:
        client.wait_for_workers(n, timeout=timeout)


@contextlib.contextmanager
def moto_s3(tmp: Path):
    """`moto_server` on a free loopback port. Yields the endpoint URL."""
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    proc = _start(["moto_server", "-H", "127.0.0.1", "-p", str(port)], tmp / "moto.log")
    try:
        wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop([proc])


def s3_env(endpoint: str) -> dict:
    """Environment that points boto3/s3fs (and so every process and kernel started with it) at `endpoint`."""
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1"}



@contextlib.contextmanager
def s3_bucket(tmp: Path, bucket: str):
    """A moto S3 server with an empty `bucket`, its environment (s3_env) set in this process too, so
    that the lab, its kernels and workers started here reach it. Yields (environment, endpoint)."""
    import boto3
    import s3fs

    with moto_s3(tmp) as endpoint:
        env = s3_env(endpoint)
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        s3fs.S3FileSystem.clear_instance_cache()  # clients made for another endpoint must not be reused
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
        try:
            yield env, endpoint
        finally:
            for k, v in saved.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
            s3fs.S3FileSystem.clear_instance_cache()


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the runner and every process it started (kernels run in sessions of their own)."""
    try:
        family = [psutil.Process(proc.pid)] + psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    for p in family:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait(30)
