"""A store a team shares: several users (their own USER / JUPYTERHUB_USER) on one local folder and on
one S3 store (`moto_server` on loopback, reached through s3fs), through the CLI as they would use it.

Nobody's gc deletes another's runs; pins and the runs someone resumed from survive even `gc
--all-users`, with everything they need; and a task record written by a stale attempt (its process
paused with SIGSTOP while the task was retried, then continued) never replaces the newer attempt's.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid

import pytest
from conftest import cli, one_line_error, tagged_notebook, wait_for
from support.services import s3_bucket

import jupyter_flow
from jupyter_flow import runtime
from jupyter_flow.readers import client
from jupyter_flow.store import layout, open_store, records
from jupyter_flow.store.status import Status

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """The environment of an S3 server with an empty bucket; also set in this process."""
    with s3_bucket(tmp_path_factory.mktemp("moto"), "team") as (env, _):
        yield env


@pytest.fixture(params=["local", "s3"])
def shared(request, tmp_path, monkeypatch):
    """(store URL, environment every user's commands get): one local folder, or one S3 prefix."""
    monkeypatch.delenv("JUPYTERHUB_USER", raising=False)
    env = {"JUPYTER_FLOW_AGENT": "0"}
    if request.param == "local":
        return str(tmp_path / "store"), env
    return f"s3://team/{uuid.uuid4().hex[:8]}", {**env, **request.getfixturevalue("s3")}


def as_user(name: str, env: dict) -> dict:
    """ann and carl are login names; bob is a JupyterHub user (JUPYTERHUB_USER wins over the login name)."""
    if name == "bob":
        return {**env, "JUPYTERHUB_USER": name, "USER": "jovyan", "LOGNAME": "jovyan"}
    return {**env, "USER": name, "LOGNAME": name}


def flow_cli(user: str, shared, *args, check: int | None = 0):
    store, env = shared
    return cli(*args, "--store", store, env=as_user(user, env), check=check)


def start(user: str, shared, notebook, *args, expect: int = 0) -> str:
    """Run (or resume) as `user`; the new run's id."""
    store, _ = shared
    before = {r.id for r in records.list_runs(open_store(store))}
    flow_cli(user, shared, *(args or ("run", notebook)), "--quiet", check=expect)
    [new] = [r for r in records.list_runs(open_store(store)) if r.id not in before]
    assert new.user == user
    return new.id


def run_ids(shared) -> set[str]:
    return {r.id for r in records.list_runs(open_store(shared[0]))}


def test_nobodys_gc_deletes_anothers_work(shared, tmp_path):
    store, _ = shared
    nb = tagged_notebook(tmp_path, [
        (["parameters"], "fail = False"),
        (["step:a"], "v = list(range(1000))"),
        (["step:b"], "w = len(v)\nif fail:\n    raise ValueError('boom')"),
    ])
    a1 = start("ann", shared, nb, "run", nb, "--no-cache")  # each run its own (no run's steps are another's)
    a2 = start("ann", shared, nb, "run", nb, "--no-cache", "-p", "fail", "True", expect=1)
    b1 = start("bob", shared, nb, "run", nb, "--no-cache", "-p", "fail", "True", expect=1)
    assert "pinned run " + b1 in flow_cli("bob", shared, "pin", b1[:20], "--note", "bob is debugging it").stdout
    b2 = start("bob", shared, nb, "resume", a2, "--no-cache", "-p", "fail", "False")  # bob resumes ann's failure
    b3 = start("bob", shared, nb, "run", nb, "--no-cache")
    a3 = start("ann", shared, nb, "run", nb, "--no-cache")

    # ann's gc: only her runs, and not the one bob resumed from
    out = flow_cli("ann", shared, "gc", "--keep", "0", "--dry-run").stdout
    assert "ann:" in out and "bob:" not in out and a1 in out and a3 in out and a2 not in out
    assert run_ids(shared) == {a1, a2, a3, b1, b2, b3}
    flow_cli("ann", shared, "gc", "--keep", "0")
    assert run_ids(shared) == {a2, b1, b2, b3}

    # everyone's gc: never a pinned run, nor the origin of a kept resume, nor their values
    flow_cli("bob", shared, "pin", b2)
    out = flow_cli("carl", shared, "gc", "--keep", "0", "--all-users", "--dry-run").stdout
    assert "bob:" in out and b3 in out and "ann:" not in out and b1 not in out and b2 not in out
    flow_cli("carl", shared, "gc", "--keep", "0", "--all-users")
    assert run_ids(shared) == {a2, b1, b2}

    listing = json.loads(flow_cli("carl", shared, "runs", "--all-users", "--format", "json").stdout)
    assert {r["id"]: (r["pinned"] or {}).get("by") for r in listing} == {a2: None, b1: "bob", b2: "bob"}
    table = flow_cli("carl", shared, "runs", "--all-users").stdout
    assert [line for line in table.splitlines() if "pinned" in line and (b1 in line or b2 in line)]
    shown = flow_cli("ann", shared, "show", b1).stdout
    assert "pinned by bob" in shown and "bob is debugging it" in shown
    namespace: dict = {}  # bob's pinned failure loads into ann's kernel: its snapshot and values are all there
    jupyter_flow.load(b1, "b", store=store, into=namespace, quiet=True)
    assert namespace["w"] == 1000 and namespace["v"] == list(range(1000))
    assert jupyter_flow.Run(b2, store=store)["a"].data.v == list(range(1000))  # reused from ann's a2

    # bad input: one line, exit 2, nothing written
    for args in (("pin", "20990101T000000.000-nosuch"), ("unpin", a2), ("pin", "../x")):
        proc = flow_cli("ann", shared, *args, check=2)
        assert one_line_error(proc)
    flow_cli("bob", shared, "unpin", b2)
    flow_cli("carl", shared, "gc", "--keep", "0", "--all-users")
    assert run_ids(shared) == {b1}
    flow_cli("ann", shared, "show", b1)


# -- stale writers ------------------------------------------------------------------------------------
def paused_step(started, gate) -> str:
    """A step whose first execution marks `started`, waits for `gate`, then fails (so it writes a log, a
    notebook and a failure snapshot of its own); any later execution prints its pid and succeeds."""
    return (f"import os, pathlib, time\nwho = os.getpid()\nprint('attempt of pid', who)\n"
            f"if not pathlib.Path({str(started)!r}).exists():\n"
            f"    pathlib.Path({str(started)!r}).touch()\n"
            f"    while not os.path.exists({str(gate)!r}):\n        time.sleep(0.02)\n"
            f"    stale = list(range(10))\n    raise RuntimeError('the stale attempt woke up')")


def assert_newer_attempt_shown(store: str, run_id: str, newer: dict, stale_pid: int | None) -> None:
    """Everything readers show of the task is the newer attempt's: record, values, log, notebook,
    no failure snapshot; the stale attempt's files are kept in its own folder, never in the newer one's."""
    assert client.read_task(store, run_id, "a") == newer
    task = jupyter_flow.Run(run_id, store=store)["a"].task
    assert task.data.who == newer["kernel_pid"] != stale_pid
    assert f"attempt of pid {newer['kernel_pid']}" in task.log and "stale attempt woke up" not in task.log
    outputs = json.dumps([c.get("outputs") for c in task.notebook.cells])
    assert f"attempt of pid {newer['kernel_pid']}" in outputs and "RuntimeError" not in outputs
    assert client.task_artifacts(store, run_id, "a")["failure"] is None
    s = open_store(store)
    folders = {k.rsplit("/", 2)[-2] for k in s.glob(f"{layout.task_key(newer['flow'], run_id, 'a', 0)}/attempts/*/*")}
    assert newer["files_at"].rsplit("/", 1)[-1] in folders and len(folders) == 2, folders
    stale_folder = next(f for f in folders if not newer["files_at"].endswith(f))
    stale_log = s.read_bytes(f"{layout.task_key(newer['flow'], run_id, 'a', 0)}/attempts/{stale_folder}/log.txt")
    assert b"stale attempt woke up" in stale_log  # the stale attempt did write: beside, not over


def test_a_paused_attempt_that_wakes_up_never_replaces_the_newer_record(shared, tmp_path):
    """Attempt 1 runs as its own process (`python -m jupyter_flow.execution.task`, the door every executor uses)
    and is stopped with SIGSTOP mid-step; attempt 2 of the same task runs to the end meanwhile, as a
    retry on another worker would; then attempt 1 is continued: it finishes and writes its record,
    which the store refuses. Readers see attempt 2."""
    store, env = shared
    gate, started = tmp_path / "gate", tmp_path / "started"
    nb = tagged_notebook(tmp_path, [(["step:a"], paused_step(started, gate))])
    os.environ.update(env)  # the runner below is this process
    runner = runtime.prepare(nb, store=store)
    runner.begin()
    runner.executor.close()

    def spawn(attempt: int) -> subprocess.Popen:
        spec = runner.task_spec(runtime.Task("a", 0, attempt=attempt), {}, {}, None)
        path = tmp_path / f"spec{attempt}.json"
        path.write_text(json.dumps(spec))
        return subprocess.Popen([sys.executable, "-m", "jupyter_flow.execution.task", str(path)],
                                stdout=subprocess.PIPE, text=True, env={**os.environ, **env})

    def record() -> dict:
        return client.read_task(store, runner.run_id, "a")

    first = spawn(1)
    try:
        wait_for(started.exists, what="attempt 1's step to start")
        first.send_signal(signal.SIGSTOP)
        gate.touch()
        second = spawn(2)
        out, _ = second.communicate(timeout=300)
        assert json.loads(out)["status"] == "succeeded"
        newer = record()
        assert newer["attempt"] == 2 and newer["status"] == "succeeded"
        first.send_signal(signal.SIGCONT)
        out, _ = first.communicate(timeout=300)
    finally:
        first.send_signal(signal.SIGCONT)
        if first.poll() is None:
            first.kill()
            first.wait()
    stale = json.loads(out)  # attempt 1 did finish (failing) and tried to write its record and files ...
    assert stale["attempt"] == 1 and stale["status"] == "failed" and stale["failure"]
    assert_newer_attempt_shown(store, runner.run_id, newer, stale["kernel_pid"])  # ... and the newer ones stand


def test_conditional_writes_under_contention(shared):
    """Processes racing to write attempts 1..8 of one task record (each attempt written running,
    then ended, as a task does): whatever the interleaving, the record left is the highest attempt's end."""
    store, env = shared
    key = layout.task_json("f", "20250101T000000.000-race", "a", 0)
    code = ("import sys\nfrom jupyter_flow.store import open_store, records\n"
            "store = open_store(sys.argv[1])\n"
            "for attempt in map(int, sys.argv[2:]):\n"
            "    for status in ('running', 'failed'):\n"
            "        t = records.TaskRecord(run_id='20250101T000000.000-race', flow='f', step='a', attempt=attempt,"
            " status=status, error={'by': attempt})\n"
            "        records.write_task(store, t)\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, store, *map(str, attempts)], env={**os.environ, **env})
             for attempts in ([1, 3, 5, 7], [8, 6, 4, 2], [2, 4, 6, 8], [7, 5, 3, 1])]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    final = open_store(store).read_json(key)
    assert final["attempt"] == 8 and final["status"] == "failed"


def test_a_paused_dask_worker_that_wakes_up_after_its_task_was_retried_elsewhere(tmp_path, monkeypatch):
    """A real Dask cluster: the task starts on worker 1, which is stopped with SIGSTOP; the scheduler
    gives up on it (worker-ttl), the task fails there as WorkerLost and its retry (retry:1) runs and
    succeeds on worker 2. Then worker 1 is continued: it finishes its old attempt and writes its
    record before it shuts down. The record of attempt 2 stands, and the run is as it finished."""
    from support.services import _start, _stop, free_port, wait_for_port

    monkeypatch.setenv("DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL", "3s")  # the scheduler's, started below
    monkeypatch.setenv("JUPYTER_FLOW_AGENT", "0")
    store = str(tmp_path / "store")
    started, gate = tmp_path / "started", tmp_path / "gate"
    nb = tagged_notebook(tmp_path, [(["step:a", "retry:1"], paused_step(started, gate))])
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    scheduler = _start([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port",
                        str(port), "--no-dashboard", "--no-show"], tmp_path / "scheduler.log")
    procs = [scheduler]

    def worker(name: str) -> subprocess.Popen:
        folder = tmp_path / name
        folder.mkdir()
        proc = _start([sys.executable, "-m", "distributed.cli.dask_worker", address, "--host", "127.0.0.1",
                       "--no-nanny", "--nthreads", "1", "--no-dashboard", "--name", name,
                       "--local-directory", str(folder)], tmp_path / f"{name}.log", cwd=folder)
        procs.insert(0, proc)
        return proc

    try:
        wait_for_port(port, scheduler)
        first = worker("w1")
        runner = subprocess.Popen(["jupyter", "flow", "run", str(nb), "--store", store, "--executor", "dask",
                                   "--scheduler", address, "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        procs.insert(0, runner)
        wait_for(started.exists, timeout=400, what="the step to start on worker 1")
        first.send_signal(signal.SIGSTOP)
        gate.touch()
        worker("w2")
        _, err = runner.communicate(timeout=300)
        assert runner.returncode == 0, err
        [run] = records.list_runs(open_store(store))
        newer = client.read_task(store, run.id, "a")
        assert newer["attempt"] == 2 and newer["status"] == "succeeded"
        assert newer["attempts"][0]["error"]["type"] == "WorkerLost"
        first.send_signal(signal.SIGCONT)
        first.wait(timeout=120)  # it finishes its task (writing its record) before it leaves the cluster
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGCONT)  # a stopped process would not stop
        _stop(procs)
    assert_newer_attempt_shown(store, run.id, newer, None)


def test_a_record_whose_etag_is_not_its_md5_is_still_written_conditionally(s3):
    """S3 gives an object uploaded in parts (or encrypted with KMS) an ETag that is not the MD5 of its
    bytes: the first conditional PUT then fails, and the write asks for the ETag and goes through."""
    store = open_store(f"s3://team/{uuid.uuid4().hex[:8]}")
    key = layout.task_json("f", "20250101T000000.000-etag", "a", 0)
    old = records.TaskRecord(run_id="20250101T000000.000-etag", flow="f", step="a", attempt=1,
                             status=Status.RUNNING, extra={"padding": "x" * (11 << 20)})
    store.backend.fs.pipe_file(store.backend.path(key), json.dumps(old.to_dict()).encode(), chunksize=5 << 20)
    assert "-" in store.backend.fs.info(store.backend.path(key))["ETag"]  # multipart: not an MD5
    assert records.write_task(store, records.TaskRecord(run_id=old.run_id, flow="f", step="a", attempt=2,
                                                        status=Status.SUCCEEDED))
    assert store.read_json(key)["attempt"] == 2
    assert not records.write_task(store, old)
