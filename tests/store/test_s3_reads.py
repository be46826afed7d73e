"""Reading an S3 store without s3fs (backends.S3Backend): the same keys, folders and errors as s3fs gives,
against moto_server on loopback; a colleague's load imports no s3fs at all."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest
from conftest import SCENARIOS as NOTEBOOKS
from conftest import cli, one_line_error
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.services import free_port, s3_bucket

from jupyter_flow.errors import NotFound, StoreError
from jupyter_flow.store import backends, layout, open_store

pytestmark = pytest.mark.slow
BUCKET = "reads"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with s3_bucket(tmp_path_factory.mktemp("moto"), BUCKET) as (env, endpoint):
        yield env, endpoint


SEGMENTS = ["flows", "fit", "runs", "r1", "r2", "run.json", "task.json", "run.json.tmp", "a.b"]
keys = st.lists(st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=4).map("/".join), min_size=1, max_size=10,
                unique=True)
pattern_part = st.one_of(st.sampled_from(SEGMENTS), st.sampled_from(["*", "r*", "r?", "[rf]*", "*.json", "run*"]))
patterns = st.one_of(st.sampled_from(["flows/*/runs/*/run.json", "flows/*/runs/r*/run.json", "flows/*/index/*.json",
                                      "blobs/??/*", "*/*/task.json"]),
                     st.lists(pattern_part, min_size=1, max_size=4).map("/".join))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(keys=keys, pattern=patterns)
def test_glob_children_and_exists_are_what_s3fs_gives(s3, keys, pattern):
    """Whatever keys a store holds, S3Backend's glob, children, exists and info agree with s3fs's (a key
    may also be a folder of other keys, as on S3)."""
    url = f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}"
    ours, theirs = backends.backend_for(url), backends.FsspecBackend(url)
    assert isinstance(ours, backends.S3Backend)
    for key in keys:
        theirs.write(key, key.encode())
    assert ours.glob(pattern) == theirs.glob(pattern), pattern
    folders = {k.rsplit("/", 1)[0] for k in keys if "/" in k} | {"", "flows", "nothing"}
    for folder in sorted(folders):
        assert sorted(ours.children(folder)) == sorted(theirs.children(folder)), folder
    for key in keys:
        assert ours.exists(key) and ours.read(key) == key.encode()
        assert ours.info(key)[0] == len(key)
    assert not ours.exists("nothing/here")


def test_missing_and_unreadable_keys_say_so(s3):
    """A missing key is NotFound; a store on an endpoint that cannot be reached is one StoreError line."""
    env, _ = s3
    store = open_store(f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}")
    with pytest.raises(NotFound, match="is not in store s3://"):
        store.read_bytes("flows/x/runs/y/run.json")
    with pytest.raises(NotFound, match="missing from store s3://"):
        store.load_value("0" * 32)
    assert store.glob("flows/*/runs/*/run.json") == [] and store.children("flows") == []
    dead = {**env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}", "AWS_MAX_ATTEMPTS": "1"}
    result = cli("runs", "--store", f"s3://{BUCKET}/nowhere", env=dead)
    assert result.returncode == 2 and f"s3://{BUCKET}/nowhere" in one_line_error(result)


def test_a_colleagues_failure_loads_without_s3fs(s3, tmp_path):
    """bob loads ann's failed run from S3 in a fresh Python: the values arrive, and s3fs (1.2 s to import)
    was never imported; a write from the same process still goes through s3fs."""
    env, _ = s3
    store = f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}"
    assert cli("run", NOTEBOOKS / "error_notebook.ipynb", "--store", store, "--quiet",
               env={**env, "USER": "ann"}).returncode == 1
    [run] = json.loads(cli("runs", "--all-users", "--store", store, "--format", "json", env={**env, "USER": "bob"},
                          check=0).stdout)
    code = (f"import sys, json, jupyter_flow\n"
            f"v = jupyter_flow.load({run['id']!r}, 'second', store={store!r}, quiet=True)\n"
            f"print(json.dumps({{'a': v['a'], 'b': v['b'], 's3fs': 's3fs' in sys.modules}}))\n")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env, "USER": "bob"},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1]) == {"a": 2, "b": 0, "s3fs": False}
    written = open_store(store)
    written.write_bytes(layout.probe("x"), b"ok")
    assert written.backend.fs is not None and written.read_bytes(layout.probe("x")) == b"ok"


def test_a_denied_read_names_the_store(s3):
    """Credentials that may not read the store (a bucket policy denying GetObject): one StoreError naming
    the key and the store, not a botocore traceback."""
    import boto3

    env, endpoint = s3
    bucket = f"closed-{uuid.uuid4().hex[:6]}"
    client = boto3.client("s3", endpoint_url=endpoint)
    client.create_bucket(Bucket=bucket)
    store = open_store(f"s3://{bucket}/store")
    digest, _ = store.save_value([1, 2, 3])
    client.put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Deny", "Principal": "*", "Action": ["s3:GetObject"], "Resource": f"arn:aws:s3:::{bucket}/*"}]}))
    with pytest.raises(StoreError, match=f"cannot read blob {digest} from store s3://{bucket}/store"):
        store.load_value(digest)


def test_a_value_that_is_also_a_frames_local_loads_once(s3, tmp_path):
    """A step fails inside a function called with its array: the snapshot's variable and the failing
    frame's local are one blob, downloaded once, and in the debugger they are one object again, as they
    were in the step."""
    import nbformat
    import numpy as np

    import jupyter_flow

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import numpy as np\nbig = np.arange(1_000_000.0)\ndef fit(X):\n    raise ValueError('did not converge')\n"
        "fit(big)", metadata={"tags": ["step:fit"]})])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(tmp_path / "fit.ipynb"))
    store = f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}"
    run = jupyter_flow.run(tmp_path / "fit.ipynb", store=store)
    assert run.status == "failed"
    ns: dict = {}
    jupyter_flow.load(run.id, "fit", store=store, into=ns, quiet=True)
    tb, local = sys.last_traceback, None
    while tb is not None:
        local = tb.tb_frame.f_locals.get("X", local) if tb.tb_frame.f_code.co_name == "fit" else local
        tb = tb.tb_next
    assert np.array_equal(ns["big"], np.arange(1_000_000.0)) and local is ns["big"]
