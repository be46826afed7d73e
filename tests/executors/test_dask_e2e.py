"""Dask end to end on a cluster shaped like a real one: a scheduler and two worker processes, each in
its own working folder, one of them with a GPU (`--resources GPU=1`), neither able to see the folder
the notebook lives in (an empty tmpfs over it in their mount namespace, as on another machine)."""
from __future__ import annotations

import os
import signal
import socket
import threading
from pathlib import Path

import nbformat
import pytest
from conftest import live_log, wait_for
from support.services import can_hide_folders, dask_cluster, moto_s3, s3_env

import jupyter_flow
from jupyter_flow import runtime

pytestmark = pytest.mark.slow


class Cluster:
    def __init__(self, address: str, folder: Path, private: Path | None, s3: str):
        self.address, self.folder, self.private, self.s3 = address, folder, private, s3
        from distributed import Client

        self.client = Client(address, timeout=30, set_as_default=False)

    def workers(self) -> dict:
        """address -> declared resources, once both workers are up (one may be restarting)."""
        self.client.wait_for_workers(2, timeout=120)
        return {a: w.get("resources") or {} for a, w in self.client.scheduler_info(n_workers=-1)["workers"].items()}

    def gpu_worker(self) -> str:
        return next(a for a, res in self.workers().items() if res.get("GPU"))

    def kill(self, address: str) -> None:
        """kill -9 the worker process at `address` (its nanny starts a new one, at a new address)."""
        pid = self.client.run(os.getpid, workers=[address])[address]
        os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    base = tmp_path_factory.mktemp("e2e")
    private = base / "runner-only"  # what only the runner's machine has
    private.mkdir()
    hide = (private,) if can_hide_folders() else ()
    with moto_s3(base / "moto") as s3, dask_cluster(base / "cluster", workers=2, nthreads=2, resources=["GPU=1", None],
                                                    hide=hide, env=s3_env(s3)) as address:
        c = Cluster(address, base / "cluster", private if hide else None, s3)
        yield c
        c.client.close()


def notebook(path: Path, cells: list[tuple[list[str], str]]) -> Path:
    code = nbformat.v4.new_code_cell
    nb = nbformat.v4.new_notebook(cells=[code(src, metadata={"tags": tags}) for tags, src in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def squares(folder: Path, n: int) -> Path:
    """An n-task foreach of trivial steps between a `start` and a `join` step."""
    return notebook(folder / "squares.ipynb", [
        (["parameters"], f"n = {n}"),
        (["step:start"], "items = list(range(n))"),
        (["step:work", "foreach:items"], "y = item * item"),
        (["step:join"], "total = sum(y)"),
    ])


def test_hybrid_run_reads_a_runner_only_file_locally(cluster, tmp_path):
    if cluster.private is None:
        pytest.skip("no unprivileged mount namespaces here: workers would see the runner's folder")
    folder = cluster.private / "project"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "secret.txt").write_text("only on the runner")
    path = notebook(folder / "hybrid.ipynb", [
        (["imports"], "import os"),
        (["step:make"], f"n = 2\nmake_sees = os.path.exists({str(folder)!r})\nmake_cwd = os.getcwd()"),
        (["step:read", "executor:local"], "text = open('data/secret.txt').read()\nread_cwd = os.getcwd()"),
        (["step:use"], f"result = text.upper() * n\nuse_sees = os.path.exists({str(folder)!r})\nuse_cwd = os.getcwd()"),
    ])
    run = jupyter_flow.run(path, store=tmp_path / "store", executor="dask", scheduler=cluster.address)
    assert run.status == "succeeded", run.error
    assert run["use"].data.result == "ONLY ON THE RUNNER" * 2
    read = run["read"].task.record
    assert read["executor"] == "local" and "worker" not in read and read["host"] == socket.gethostname()
    assert run["read"].data.read_cwd == str(folder)
    workers = cluster.workers()
    for step in ("make", "use"):
        record, data = run[step].task.record, run[step].data
        assert record["executor"] == "dask" and record["worker"] in workers and record["host"], record
        assert getattr(data, f"{step}_sees") is False  # the notebook's folder is not there on the worker
        assert Path(getattr(data, f"{step}_cwd")).is_relative_to(cluster.folder)  # its own folder instead
    assert not list(cluster.folder.rglob("*.ipynb"))  # no copy of the notebook on the workers


def test_gpu_step_runs_only_on_the_gpu_worker(cluster, tmp_path):
    path = notebook(tmp_path / "gpu.ipynb", [
        (["step:prep"], "xs = list(range(6))"),
        (["step:train", "foreach:x=xs", "limit:gpu:1"], "y = x * 2"),
        (["step:cpu", "foreach:x=xs"], "z = x + 1"),
        (["step:total"], "total = sum(y) + sum(z)"),
    ])
    run = jupyter_flow.run(path, store=tmp_path / "store", executor="dask", scheduler=cluster.address)
    assert run.status == "succeeded", run.error
    assert run["total"].data.total == 30 + 21
    gpu = cluster.gpu_worker()
    assert {t.record["worker"] for t in run["train"].tasks} == {gpu}
    assert all(t.record["worker"] in cluster.workers() for t in run["cpu"].tasks)


def test_foreach_on_an_s3_store(cluster, tmp_path, monkeypatch):
    """MinIO-style settings: AWS_ENDPOINT_URL and keys in the runner's and the workers' environment."""
    import boto3
    import s3fs

    for name, value in s3_env(cluster.s3).items():
        monkeypatch.setenv(name, value)
    s3fs.S3FileSystem.clear_instance_cache()
    boto3.client("s3", endpoint_url=cluster.s3).create_bucket(Bucket="flows")
    run = jupyter_flow.run(squares(tmp_path, 6), store="s3://flows/team", executor="dask", scheduler=cluster.address)
    assert run.status == "succeeded", run.error
    assert run["join"].data.total == 55
    assert {t.record["worker"] for t in run.tasks} <= set(cluster.workers())
    assert not list(tmp_path.rglob("task.json"))  # everything went to the bucket
    s3fs.S3FileSystem.clear_instance_cache()


def sleeps_once(path: Path, retry: bool) -> Path:
    """A step that sleeps (for the test to kill its worker) the first time only."""
    marker = path.parent / "slept"
    return notebook(path, [
        (["imports"], "import os, time"),
        (["step:start"], "x = 1"),
        (["step:sleepy"] + (["retry:1"] if retry else []),
         f"if not os.path.exists({str(marker)!r}):\n    open({str(marker)!r}, 'w').close()\n"
         "    print('sleepy: started', flush=True)\n    time.sleep(600)\ny = x + 1"),
        (["step:after"], "z = y + 1"),
    ])


def run_and_kill_its_worker(cluster: Cluster, tmp_path: Path, retry: bool, expect: str):
    """Start the run; once the step prints its first line on a worker, kill -9 that worker. Returns
    the ended run and the dead worker's address."""
    store = tmp_path / "store"
    handle = runtime.start_run(sleeps_once(tmp_path / "nb" / "kill.ipynb", retry=retry), store=store,
                               executor="dask", scheduler=cluster.address)
    run_dir = store / "flows" / "kill" / "runs" / handle.run_id
    wait_for(lambda: "sleepy: started" in live_log(run_dir, "sleepy"), what="the step to run on a worker")
    killed = jupyter_flow.Run(handle.run_id, store=store)["sleepy"].task.record["worker"]
    cluster.kill(killed)
    assert handle.wait(240) == expect
    return jupyter_flow.Run(handle.run_id, store=store), killed


def test_killed_worker_is_retried_on_another(cluster, tmp_path):
    run, killed = run_and_kill_its_worker(cluster, tmp_path, retry=True, expect="succeeded")
    assert run["after"].data.z == 3
    sleepy = run["sleepy"].task.record
    assert sleepy["attempt"] == 2 and sleepy["worker"] != killed
    assert sleepy["attempts"][0]["error"]["type"] == "WorkerLost"


def test_killed_worker_fails_the_run_and_resume_completes_it(cluster, tmp_path):
    run, killed = run_and_kill_its_worker(cluster, tmp_path, retry=False, expect="failed")
    sleepy = run["sleepy"].task.record
    assert sleepy["status"] == "failed" and sleepy["worker"] == killed
    assert sleepy["error"]["type"] == "WorkerLost" and killed in sleepy["error"]["message"]
    assert run.error["step"] == "sleepy"
    resumed = jupyter_flow.resume(run.id, store=tmp_path / "store",
                                  executor="dask", scheduler=cluster.address)
    assert resumed.status == "succeeded", resumed.error
    assert resumed["start"].task.record["status"] == "reused"
    assert resumed["after"].data.z == 3


def test_200_task_foreach_keeps_no_thread_per_task(cluster, tmp_path):
    path = squares(tmp_path, 200)
    before = threading.active_count()
    counts = []  # the runner's threads each time a task changes state (its loop calls on_event)
    run = jupyter_flow.run(path, store=tmp_path / "store", executor="dask", scheduler=cluster.address,
                           on_event=lambda event: counts.append(threading.active_count()))
    assert run.status == "succeeded", run.error
    assert run["join"].data.total == sum(i * i for i in range(200))
    work = run["work"].tasks
    assert len(work) == 200 and {t.record["worker"] for t in work} == set(cluster.workers())
    assert len(counts) > 400 and max(counts) - before < 20  # callbacks, not a thread (or a poll) per task
