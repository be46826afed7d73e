"""An S3 store, against a real S3 API: `moto_server` on a loopback port, reached through s3fs.

Every process (the CLI, the kernels it starts) finds the server through AWS_ENDPOINT_URL alone.
"""
from __future__ import annotations

import json
import os
import uuid

import pytest
from support.services import NOTEBOOKS, free_port, moto_s3, run_cli, s3_env

import jupyter_flow
from jupyter_flow import client
from jupyter_flow.store import open_store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """The environment of an S3 server with an empty bucket; also set in this process."""
    import boto3
    import s3fs

    with moto_s3(tmp_path_factory.mktemp("moto")) as endpoint:
        env = s3_env(endpoint)
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        s3fs.S3FileSystem.clear_instance_cache()  # clients made for another endpoint must not be reused
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="flows")
        try:
            yield env
        finally:
            for k, v in saved.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
            s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture
def store(s3):
    return f"s3://flows/{uuid.uuid4().hex[:8]}"


def cli(*args, env):
    return run_cli(*args, env=env)


def runs(store, env) -> list[dict]:
    result = cli("runs", "--store", store, "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def blobs(store) -> list[str]:
    return open_store(store).glob("blobs/*/*")


def test_cli_run_and_read_back(s3, store):
    result = cli("run", NOTEBOOKS / "linear.ipynb", "--store", store, "--quiet", env=s3)
    assert result.returncode == 0, result.stdout + result.stderr
    [run] = runs(store, s3)  # a fresh process lists it
    assert run["status"] == "succeeded" and run["flow"] == "linear"
    shown = cli("show", run["id"], "--store", store, env=s3)
    assert shown.returncode == 0, shown.stderr
    assert run["id"] in shown.stdout and "succeeded" in shown.stdout
    assert cli("logs", run["id"], "e", "--store", store, env=s3).returncode == 0
    r = jupyter_flow.Run(run["id"], store=store)
    assert r["e"].data.e == 69 and r["a"].data.a == 2
    assert r["e"].notebook.cells  # the executed step notebook was uploaded

    # values are content-addressed: an identical rerun adds no blob
    before = blobs(store)
    assert before
    again = jupyter_flow.run(NOTEBOOKS / "linear.ipynb", store=store, no_cache=True)
    assert again.status == "succeeded" and again["e"].data.e == 69
    assert blobs(store) == before
    assert {t.status for t in again.tasks} == {"succeeded"}  # really ran, not served from cache


def test_same_process_sees_runs_made_elsewhere(s3, store):
    assert client.list_runs(store) == []  # lists (and, with a listings cache, would cache) the empty store
    first = jupyter_flow.run(NOTEBOOKS / "linear.ipynb", store=store, parameters={"start": 5})
    assert first["e"].data.e == 149
    assert [r["id"] for r in client.list_runs(store)] == [first.id]
    result = cli("run", NOTEBOOKS / "linear.ipynb", "--store", store, "--quiet", env=s3)
    assert result.returncode == 0, result.stderr
    listed = client.list_runs(store)  # the run another process just wrote is seen here
    assert len(listed) == 2 and first.id in [r["id"] for r in listed]
    assert {r["id"] for r in runs(store, s3)} == {r["id"] for r in listed}


def test_failure_snapshot_loads_from_s3(s3, store):
    result = cli("run", NOTEBOOKS / "error_notebook.ipynb", "--store", store, "--quiet", env=s3)
    assert result.returncode == 1
    [run] = runs(store, s3)
    assert run["status"] == "failed" and run["error"]["step"] == "second"
    namespace: dict = {}
    jupyter_flow.load(run["id"], "second", store=store, into=namespace, quiet=True)
    assert namespace["a"] == 2 and namespace["b"] == 0 and namespace["x"] == 1
    task = jupyter_flow.Run(run["id"], store=store)["second"]
    assert "ZeroDivisionError" in json.dumps(task.notebook.cells[-1].outputs) or task.error["type"] == "ZeroDivisionError"


def test_same_value_is_stored_once(s3, store):
    s = open_store(store)
    value = {"numbers": list(range(1000)), "name": "x"}
    first, size = s.save_value(value)
    second, _ = s.save_value(dict(value))
    assert first == second and size > 0
    assert s.glob("blobs/*/*") == [s.blob_key(first)]
    assert s.load_value(first) == value


def test_unreachable_endpoint_is_one_line(s3, tmp_path):
    dead = {**s3, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
            "AWS_MAX_ATTEMPTS": "1"}  # the SDK's default retries take ~30 s to give up
    result = cli("run", NOTEBOOKS / "linear.ipynb", "--store", "s3://flows/nowhere", env=dead)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "s3://flows/nowhere" in lines[0] and "Traceback" not in result.stderr
