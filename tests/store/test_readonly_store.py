"""A colleague with read-only access to the team's S3 store: reads everything, writes nothing.

moto_server on loopback, with a bucket policy that denies s3:PutObject and s3:DeleteObject (moto
enforces a bucket's Deny for every caller; its IAM signature check rejects listings whose prefix
has a '/', as every store listing has, so per-user keys limited to reads cannot be used with it).
The runs are made first, by a writer, before the policy is set.
"""
from __future__ import annotations

import json
import uuid

import pytest
from conftest import SCENARIOS as NOTEBOOKS
from conftest import cli, one_line_error
from support.services import s3_bucket

import jupyter_flow
from jupyter_flow.errors import FlowError
from jupyter_flow.readers import client

pytestmark = pytest.mark.slow
BUCKET = "team"
DENY_WRITES = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Deny", "Principal": "*", "Action": ["s3:PutObject", "s3:DeleteObject"],
    "Resource": f"arn:aws:s3:::{BUCKET}/*"}]}


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    """(env, store URL, the writer's failed run id, succeeded run id); writes denied once made."""
    import boto3

    with s3_bucket(tmp_path_factory.mktemp("moto"), BUCKET) as (env, endpoint):
        s3 = boto3.client("s3", endpoint_url=endpoint)
        store = f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}"
        assert cli("run", NOTEBOOKS / "error_notebook.ipynb", "--store", store, "--quiet", env=env).returncode == 1
        cli("run", NOTEBOOKS / "linear.ipynb", "--store", store, "--quiet", env=env, check=0)
        runs = {r["status"]: r["id"] for r in client.list_runs(store, user=None)}
        s3.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(DENY_WRITES))
        yield env, store, runs["failed"], runs["succeeded"], s3


def objects(s3) -> dict:
    """Every object of the bucket: key -> ETag."""
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
    return {o["Key"]: o["ETag"] for page in pages for o in page.get("Contents", [])}


def test_reading_listing_comparing_and_loading_work(team, tmp_path):
    env, store, failed, succeeded, s3 = team
    before = objects(s3)
    listed = json.loads(cli("runs", "--all-users", "--store", store, "--format", "json", env=env, check=0).stdout)
    assert {r["id"]: r["status"] for r in listed} == {failed: "failed", succeeded: "succeeded"}
    shown = cli("show", failed, "--store", store, env=env, check=0).stdout
    assert failed in shown and "failed" in shown
    assert "e" in cli("artifacts", succeeded, "e", "--store", store, env=env, check=0).stdout
    cli("logs", succeeded, "e", "--store", store, env=env, check=0)
    table = client.runs_table(store=store, user=None)  # comparing runs: one row each, parameters and metrics
    assert set(table["id"]) == {failed, succeeded}
    namespace: dict = {}
    jupyter_flow.load(failed, "second", store=store, into=namespace, quiet=True)  # a colleague's failure
    assert namespace["a"] == 2 and namespace["b"] == 0
    assert jupyter_flow.Run(succeeded, store=store)["e"].data.e == 69
    assert not cli("gc", "--keep", "0", "--all-users", "--dry-run", "--store", store, env=env, check=0).stderr
    assert cli("fsck", "--dry-run", "--store", store, env=env).returncode == 0
    cli("export", NOTEBOOKS / "linear.ipynb", "--to", "kfp", "-o", tmp_path / "p.yaml", "--store", store,
        env=env, check=0)
    assert (tmp_path / "p.yaml").stat().st_size > 0
    assert objects(s3) == before  # the listings could not write the run index: they read run.json instead


@pytest.mark.parametrize("command", [
    ["run", str(NOTEBOOKS / "linear.ipynb")],
    ["resume", "{failed}"],
    ["batch", str(NOTEBOOKS / "linear.ipynb"), "-f", "{grid}"],
    ["gc", "--keep", "0", "--all-users"],
    ["pin", "{failed}", "--note", "figure 3"],
    ["unpin", "{failed}"],
    ["cancel", "{failed}"],
    ["fsck"],
], ids=lambda c: c[0])
def test_writing_commands_refuse_before_they_start(team, tmp_path, command):
    env, store, failed, _, s3 = team
    grid = tmp_path / "grid.yaml"
    grid.write_text("[{}]\n")
    before = objects(s3)
    args = [a.format(failed=failed, grid=grid) for a in command]
    result = cli(*args, "--store", store, env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert one_line_error(result) == (f"error: the store {store} is read-only for these credentials (PutObject "
                                      "denied); ask for write access or use another --store")
    assert objects(s3) == before


def test_the_library_refuses_in_one_line_too(team):
    _, store, failed, _, s3 = team
    before = objects(s3)
    for write in (lambda: client.pin(store, failed), lambda: jupyter_flow.run(NOTEBOOKS / "linear.ipynb", store=store)):
        with pytest.raises(FlowError, match=r"read-only for these credentials \(PutObject denied\)"):
            write()
    assert objects(s3) == before


def test_the_sidebar_says_the_store_is_read_only(team, tmp_path):
    """What the server extension tells the sidebar (GET version), and Pin from it (403 over HTTP)."""
    from jupyter_flow.server.config import JupyterFlow
    from jupyter_flow.server.service import FlowService
    from jupyter_flow.store import ReadOnly

    _, store, failed, _, _ = team
    service = FlowService(JupyterFlow(store=store), str(tmp_path))
    assert "read-only for these credentials (PutObject denied)" in service.info()["read_only"]
    with pytest.raises(ReadOnly):
        service.pin(failed)
    assert service.get_run(failed)["pinned"] is None


def read_only_mount(folder) -> list[str]:
    """A command prefix that runs the rest with `folder` mounted read-only (a mount namespace of its
    own; root is not stopped by file permissions, a read-only mount stops everyone)."""
    return ["unshare", "--map-root-user", "--mount", "sh", "-c",
            f'mount --bind "{folder}" "{folder}" && mount -o remount,ro,bind "{folder}" "{folder}" && exec "$@"', "sh"]


def tree(folder) -> dict:
    return {str(p): p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}


def test_a_read_only_local_folder(tmp_path):
    import subprocess

    from support.services import can_hide_folders

    if not can_hide_folders():
        pytest.skip("no unprivileged user and mount namespaces here (unshare)")
    store = tmp_path / "store"
    assert cli("run", NOTEBOOKS / "error_notebook.ipynb", "--store", store, "--quiet").returncode == 1
    [failed] = [r["id"] for r in client.list_runs(str(store), user=None)]
    before = tree(store)

    def jupyter_flow_cli(*args):
        return subprocess.run([*read_only_mount(store), "jupyter", "flow", *map(str, args), "--store", str(store)],
                              check=False, capture_output=True, text=True, timeout=300)

    listed = jupyter_flow_cli("runs", "--all-users", "--format", "json")
    assert listed.returncode == 0 and [r["id"] for r in json.loads(listed.stdout)] == [failed], listed.stderr
    for command in (["run", NOTEBOOKS / "linear.ipynb"], ["resume", failed], ["pin", failed], ["gc", "--keep", "0"]):
        result = jupyter_flow_cli(*command)
        assert result.returncode == 2, result.stdout + result.stderr
        assert one_line_error(result) == (f"error: the store {store} is read-only for these credentials (write access "
                                          f"to {store} denied); ask for write access or use another --store")
    assert tree(store) == before
