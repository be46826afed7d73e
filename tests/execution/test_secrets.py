"""No secret is stored: values holding an environment secret or credential objects never become blobs,
printed secrets leave logs and step notebooks as `[secret removed]`, and a step cannot receive a secret
from another step. Proven by scanning every byte of the store (blobs raw and unpickled) after real runs."""
from __future__ import annotations

import io
import itertools
import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import tagged_notebook
from hypothesis import given, settings
from hypothesis import strategies as st
from store.test_s3 import s3  # noqa: F401 - the S3 server fixture

import jupyter_flow
from jupyter_flow.errors import FlowError
from jupyter_flow.execution import secrets
from jupyter_flow.flow.kernelspecs import installed_kernels
from jupyter_flow.flow.notebook import read
from jupyter_flow.store import open_store

TOKEN = "tok-3b9f1c7e5a2d4f60"  # $MY_SERVICE_TOKEN: secret by its name
DB_URL = "postgres://app:pw-7741aa@db.internal/prod"  # $DB_URL: secret because the notebook's metadata says so
PLAIN = "plainvalue-99xz-q"  # $PLAIN_NAME: secret because a cell is tagged secret:PLAIN_NAME
AWS_SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"  # only inside a botocore Credentials object
ALL = (TOKEN, DB_URL, PLAIN, AWS_SECRET)


@pytest.fixture
def env(monkeypatch, store):
    monkeypatch.setenv("MY_SERVICE_TOKEN", TOKEN)
    monkeypatch.setenv("DB_URL", DB_URL)
    monkeypatch.setenv("PLAIN_NAME", PLAIN)
    monkeypatch.setenv("SHORT_TOKEN", "abc")  # too short to be a secret: "abc" stays in every text
    return store


def encodings(value: str) -> list[bytes]:
    return [value.encode(e) for e in ("utf-8", "utf-16-le", "utf-32-le")] + [json.dumps(value)[1:-1].encode()]


def assert_no_secret_in_store(store: str, values=ALL) -> None:
    """Every byte of every file of the store, and every blob unpickled, holds none of `values`."""
    root = Path(store)
    files = [p for p in root.rglob("*") if p.is_file()]
    assert files
    for path in files:
        data = path.read_bytes()
        for value in values:
            for encoded in encodings(value):
                assert encoded not in data, f"{value!r} is in {path.relative_to(root)}"
    s = open_store(store)
    for path in root.glob("blobs/??/*"):
        try:
            value = s.load_value(path.name)
        except Exception:  # noqa: BLE001, S112 - a stored file, not a pickled value
            continue
        text = repr(value) + repr(getattr(value, "__dict__", ""))
        assert not any(v in text for v in values), f"blob {path.name} unpickled holds a secret: {text[:200]}"


def notebook(tmp_path: Path, cells, secrets_metadata=("DB_URL",)) -> Path:
    path = tagged_notebook(tmp_path, cells)
    nb = json.loads(path.read_text())
    nb["metadata"]["jupyter_flow"] = {"secrets": list(secrets_metadata)}
    path.write_text(json.dumps(nb))
    return path


USES = f'''
import os
import botocore.credentials
token = os.environ["MY_SERVICE_TOKEN"]
config = {{"headers": {{"Authorization": f"Bearer {{token}}"}}, "retries": [1, 2, [token]]}}
url = f"https://api.example.com/?key={{token}}"
db = os.environ["DB_URL"]
plain = os.environ["PLAIN_NAME"]
creds = botocore.credentials.Credentials("AKIAIOSFODNN7EXAMPLE", "{AWS_SECRET[:10]}" + "{AWS_SECRET[10:]}")
short = os.environ["SHORT_TOKEN"]
print("token is", token)
print(os.environ)
n = 41
os.makedirs("out", exist_ok=True)
open("out/config.ini", "w").write(f"[api]\\nkey = {{token}}\\n")  # a file holding a secret
open("out/creds.pkl", "wb").write(__import__("pickle").dumps({{"creds": creds}}))  # and one holding credentials
open("out/plain.txt", "w").write("nothing secret")
'''


@pytest.mark.slow
def test_secrets_used_every_way_never_reach_the_store(env, run_flow, tmp_path):
    path = notebook(tmp_path, [(["step:use", "secret:PLAIN_NAME"], USES),
                               (["step:later"], "total = n + 1\nprint(short)")])
    run = run_flow(path)
    use = run["use"]
    assert set(use.task.record["outputs"]) == {"n", "short"}  # each secret-bearing value withheld
    warnings = "\n".join(use.task.record["warnings"])
    for name, why in [("token", "$MY_SERVICE_TOKEN"), ("config", "$MY_SERVICE_TOKEN"), ("url", "$MY_SERVICE_TOKEN"),
                      ("db", "$DB_URL"), ("plain", "$PLAIN_NAME"), ("creds", "credentials")]:
        assert f"{name!r}" in warnings and why in warnings, (name, warnings)
    assert run["later"].data.total == 42
    log = use.log
    assert "token is [secret removed]" in log and "[secret removed]" in json.dumps(use.notebook.cells[-2].outputs)
    assert "abc" in run["later"].log  # a short value is not a secret
    written = use.task.record["files"]["written"]
    assert written["out/config.ini"]["withheld"] == "contains the value of $MY_SERVICE_TOKEN"
    assert written["out/creds.pkl"]["withheld"] == "holds a Credentials object (credentials)"
    assert "withheld" not in written["out/plain.txt"]
    assert "file out/config.ini contains the value of $MY_SERVICE_TOKEN: not stored (secrets never are)" in warnings
    with pytest.raises(FlowError, match=r"^parameter api_url: the value contains the value of \$MY_SERVICE_TOKEN;.*"
                       r"read it in the step that needs it \(os.environ\['MY_SERVICE_TOKEN'\]\)$"):
        jupyter_flow.run(path, parameters={"api_url": f"https://x/?k={TOKEN}"}, store=env)
    assert len(list(Path(env).glob("flows/*/runs/*"))) == 1  # the refused run wrote nothing
    assert_no_secret_in_store(env)


@pytest.mark.slow
def test_a_failed_step_withholds_its_secrets_and_loads_without_them(env, run_flow, tmp_path, capsys):
    code = '''
import os
key = os.environ["MY_SERVICE_TOKEN"]
pairs = [("db", os.environ["DB_URL"])]
safe = 7
def connect(k):
    attempt = "with " + k
    raise ValueError(f"cannot connect {attempt}")
connect(key)
'''
    run = run_flow(notebook(tmp_path, [(["step:fails"], code)]), expect="failed")
    task = run["fails"]
    failure = task.task.record["failure"]
    assert failure["withheld"] == {"key": "contains the value of $MY_SERVICE_TOKEN",
                                   "pairs": "contains the value of $DB_URL"}
    assert "safe" in failure["variables"]
    [snapshot] = Path(env).glob("flows/*/runs/*/fails/0/**/failure.json")
    [frame] = [f for f in json.loads(snapshot.read_text())["frames"] if f["function"] == "connect"]
    assert set(frame["withheld"]) == {"k", "attempt"} and not frame["locals"]  # the failing frame's locals too
    assert "[secret removed]" in task.error["message"] and TOKEN not in json.dumps(task.error)
    namespace = {}
    jupyter_flow.load(run.id, "fails", into=namespace)
    out = capsys.readouterr().out
    assert namespace["safe"] == 7 and "key" not in namespace
    assert "key  (not loaded: it contains the value of $MY_SERVICE_TOKEN; secrets are never stored" in out
    assert_no_secret_in_store(env)


@pytest.mark.slow
def test_a_file_that_held_a_secret_is_not_restored_elsewhere_and_the_reader_is_told_why(env, run_flow, tmp_path):
    """As on another machine: the file is gone from the reader's folder (removed by a program the kernel
    cannot see), and the store never had it."""
    cells = [(["step:write"], "import os\nopen('token.txt', 'w').write(os.environ['MY_SERVICE_TOKEN'])"),
             (["step:elsewhere", "prev:write"], "import subprocess\nsubprocess.run(['rm', 'token.txt'], check=True)"),
             (["step:read", "prev:elsewhere"], "got = len(open('token.txt').read())")]
    run = run_flow(notebook(tmp_path, cells), expect="failed")
    error = run["read"].error
    assert error["type"] == "SecretFile" and "\n" not in error["message"]
    assert error["message"] == ("file token.txt was not stored: it contains the value of $MY_SERVICE_TOKEN (secrets "
                                "never are), and it is not here; write it in the step that reads it, from that step's "
                                "environment (os.environ['MY_SERVICE_TOKEN']), instead of passing it as a file")
    assert_no_secret_in_store(env)


@pytest.mark.slow
def test_a_secret_parameter_is_refused_before_the_run(env, tmp_path):
    """-p, -y, -f and -r values: one line, exit 2, no run written."""
    from conftest import cli, one_line_error

    path = notebook(tmp_path, [(["parameters"], "api_key = ''\nurl = ''\nmax_tokens = 10"), (["step:a"], "x = 1")])
    (tmp_path / "params.yaml").write_text(f"url: {DB_URL}\n")
    for args, expected in [
            (["-p", "url", TOKEN], "-p url: the value contains the value of $MY_SERVICE_TOKEN;"),
            (["-r", "api_key", "not-from-the-environment"], "-r api_key: the parameter's name has KEY in it"),
            (["-y", f"url: [{TOKEN}]"], "-y url: the value contains the value of $MY_SERVICE_TOKEN;"),
            (["-f", tmp_path / "params.yaml"], "-f params.yaml url: the value contains the value of $DB_URL;")]:
        proc = cli("run", path, *args, "--store", env)
        assert proc.returncode == 2, proc.stderr
        line = one_line_error(proc)
        assert expected in line and "secrets never are" in line and "os.environ[" in line, line
    assert not [p for p in Path(env).rglob("*") if p.is_file()]  # nothing written
    cli("run", path, "-p", "max_tokens", "2048", "-p", "api_key", "short", "--store", env, check=0)  # not secrets


@pytest.mark.slow
def test_a_step_cannot_pass_a_secret_to_a_later_step(env, run_flow, tmp_path):
    cells = [(["step:login"], "import os\ntoken = os.environ['MY_SERVICE_TOKEN']"),
             (["step:call"], "print(len(token))")]
    run = run_flow(notebook(tmp_path, cells), expect="failed")
    error = run["login"].error
    assert error["type"] == "SecretValue"
    assert ("'token' contains the value of $MY_SERVICE_TOKEN, and step 'call' reads it" in error["message"]
            and "os.environ['MY_SERVICE_TOKEN']" in error["message"] and "step 'call' itself" in error["message"])
    assert_no_secret_in_store(env)


# -- units -----------------------------------------------------------------------------------------------------
def test_what_counts_as_a_secret():
    found = secrets.Secrets({"API_KEY": "k" * 12, "GITHUB_TOKEN": "ghp_" + "x" * 20, "DB_PASSWORD": "hunter2",
                             "AWS_SECRET_ACCESS_KEY": "testing", "PATH": "/usr/bin:/bin/long/enough",
                             "MY_DSN": "dsn-value-long"}, extra=("MY_DSN",))
    assert set(found.names.values()) == {"API_KEY", "GITHUB_TOKEN", "MY_DSN"}  # 7 characters are too few
    assert found.scrub(f"a {'k' * 12} b dsn-value-long c hunter2") == "a [secret removed] b [secret removed] c hunter2"
    assert not secrets.Secrets({"HOME": "/root/someplace"})


def test_credential_objects_are_known_by_their_class_name():
    import botocore.credentials
    import requests.auth

    class TeamAuth(requests.auth.AuthBase):
        pass

    assert secrets.withheld(botocore.credentials.Credentials("a", "b")) == \
        "is a botocore.credentials.Credentials object (credentials)"
    assert "requests.auth.HTTPBasicAuth" in secrets.withheld(requests.auth.HTTPBasicAuth("u", "p"))
    assert secrets.withheld(TeamAuth()) and secrets.withheld({"auth": [TeamAuth()]})
    assert secrets.withheld({"a": [1, 2.0, "text"]}) is None


def test_a_credential_deep_inside_a_value_is_found_in_its_pickle(tmp_path):
    import botocore.credentials

    class Holder:
        def __init__(self):
            self.inner = {"c": botocore.credentials.Credentials("AKIA", "s3cr3t-value")}

    with pytest.raises(secrets.Withheld, match="Credentials"):
        secrets.save_value(open_store(str(tmp_path)), [Holder()])
    assert not list(tmp_path.glob("blobs/??/*")) and not list(tmp_path.glob("blobs/tmp/*"))


def test_a_checked_value_is_stored_with_the_hash_store_gives_it(tmp_path, monkeypatch):
    import numpy as np

    monkeypatch.setenv("MY_API_KEY", TOKEN)
    s = open_store(str(tmp_path))
    value = {"a": np.arange(200_000), "b": ["x"] * 1000}
    assert secrets.save_value(s, value) == s.save_value(value)
    with pytest.raises(secrets.Withheld, match=r"\$MY_API_KEY"):
        secrets.save_value(s, {"a": np.arange(200_000), "b": "x" * 100_000 + TOKEN})


class _Sink:
    def __init__(self):
        self.data, self.size = bytearray(), 0

    def write(self, data):
        self.data += bytes(data)
        self.size += len(bytes(data))


@settings(max_examples=200, deadline=None)
@given(before=st.binary(max_size=300), after=st.binary(max_size=300), cuts=st.lists(st.integers(0, 700), max_size=8),
       with_secret=st.booleans())
def test_the_checking_writer_never_passes_a_secret_however_the_stream_is_cut(before, after, cuts, with_secret):
    found = secrets.Secrets({"X_TOKEN": TOKEN})
    stream = before + (TOKEN.encode() if with_secret else b"") + after
    sink = _Sink()
    writer = secrets._CheckingWriter(sink, found)
    edges = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    try:
        for start, end in itertools.pairwise(edges):
            writer.write(stream[start:end])
            assert writer.size == end
        writer.close()
    except secrets.Withheld:
        assert TOKEN.encode() in stream and TOKEN.encode() not in sink.data
        return
    assert TOKEN.encode() not in stream and bytes(sink.data) == stream


@settings(max_examples=100, deadline=None)
@given(parts=st.lists(st.sampled_from(["a", "\n", TOKEN[:5], TOKEN[5:], TOKEN, " "]), max_size=30))
def test_the_log_never_holds_a_printed_secret_however_it_is_written(parts):
    found = secrets.Secrets({"X_TOKEN": TOKEN})
    out = io.StringIO()
    log = secrets.ScrubbingWriter(out, found)
    out.close = lambda: None
    for part in parts:
        log.write(part)
    log.close()
    assert TOKEN not in out.getvalue()
    # nothing else changed
    assert out.getvalue().replace("[secret removed]", TOKEN) == "".join(parts).replace("\n", "\n")


def test_secret_tags_and_metadata_name_more_variables(tmp_path):
    path = notebook(tmp_path, [(["step:a", "secret:PLAIN_NAME"], "x = 1"), (["secret:OTHER"], "y = 2")])
    nb = read(path)
    assert nb.secrets == ["DB_URL", "OTHER", "PLAIN_NAME"]
    assert [c.source for c in nb.steps["a"].cells] == ["x = 1", "y = 2"]
    bad = notebook(tmp_path, [(["step:a"], "x = 1")], secrets_metadata=("not a name",))
    with pytest.raises(FlowError, match=r"metadata.jupyter_flow.secrets must be a list of environment variable names"):
        read(bad)
    with pytest.raises(FlowError, match="secret:NAME naming an environment variable"):
        read(notebook(tmp_path, [(["step:a", "secret:"], "x = 1")]))


def test_the_module_imports_nothing_heavy():
    import subprocess
    import sys

    code = "import sys; import jupyter_flow.execution.secrets; print(sorted(m for m in sys.modules " \
           "if m.split('.')[0] in ('botocore', 'boto3', 'requests', 'numpy', 'cloudpickle')))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"


@pytest.mark.slow
@pytest.mark.usefixtures("s3")
def test_on_an_object_store_no_secret_is_uploaded(env, tmp_path):
    """Logs, step notebooks and snapshots are scrubbed in the task's local folder before upload."""
    import s3fs

    url = f"s3://flows/{os.urandom(4).hex()}"
    failing = USES + "\nraise ValueError(f'token {token} refused')"
    run = jupyter_flow.run(notebook(tmp_path, [(["step:use", "secret:PLAIN_NAME"], failing)]), store=url)
    assert run.status == "failed" and "[secret removed]" in run["use"].log
    assert run["use"].task.record["failure"]["withheld"]["token"] == "contains the value of $MY_SERVICE_TOKEN"
    fs = s3fs.S3FileSystem()
    keys = fs.find(url)
    assert any(k.endswith("log.txt") for k in keys) and any(k.endswith("failure.json") for k in keys)
    for key in keys:
        data = fs.cat_file(key)
        assert not any(e in data for v in ALL for e in encodings(v)), key


def test_a_file_holding_a_secret_is_not_stored_and_others_are_as_the_store_stores_them(tmp_path):
    s = open_store(str(tmp_path / "store"))
    found = secrets.Secrets({"X_TOKEN": TOKEN})
    plain, secret = tmp_path / "plain.bin", tmp_path / "config.ini"
    plain.write_bytes(os.urandom(3 << 20))  # several chunks: large writes are searched value by value
    secret.write_bytes(b"x" * (1 << 20) + f"key = {TOKEN}\n".encode())  # a secret across a chunk edge too
    assert secrets.save_file(s, str(plain), found) == s.save_file(str(plain))
    with pytest.raises(secrets.Withheld, match=r"contains the value of \$X_TOKEN"):
        secrets.save_file(s, str(secret), found)
    stored = [p for p in (tmp_path / "store").rglob("*") if p.is_file()]
    assert stored and not any(TOKEN.encode() in p.read_bytes() for p in stored)


def test_a_withheld_file_is_restored_nowhere_and_the_step_that_needs_it_is_told_why(tmp_path):
    from jupyter_flow.execution import files

    s = open_store(str(tmp_path / "store"))
    here = tmp_path / "here"
    here.mkdir()
    (here / "token.txt").write_text(TOKEN)
    meta = dict(files.fingerprint(str(here / "token.txt")), withheld="contains the value of $X_TOKEN")
    assert files.restore(s, {"token.txt": meta}, str(here)) == []  # as it was written: nothing to do
    assert files.restore(s, {"token.txt": dict(meta, only_missing=True)}, str(tmp_path)) == []  # may not be read
    with pytest.raises(files.SecretFile, match=r"^file token.txt was not stored: it contains the value of \$X_TOKEN "
                       r"\(secrets never are\), and it is not here; write it in the step that reads it, from that "
                       r"step's environment \(os.environ\['X_TOKEN'\]\), instead of passing it as a file$"):
        files.restore(s, {"token.txt": meta}, str(tmp_path / "elsewhere"))


@pytest.mark.parametrize("given, error", [
    (("-p", "n", TOKEN),
     r"^-p n: the value contains the value of \$MY_SERVICE_TOKEN; .*\(os.environ\['MY_SERVICE_TOKEN'\]\)$"),
    (("-y", "cfg", {"urls": [f"https://x/?k={TOKEN}"]}),
     r"^-y cfg: the value contains the value of \$MY_SERVICE_TOKEN"),
    (("-f params.yaml", "db", DB_URL), r"^-f params.yaml db: the value contains the value of \$DB_URL"),
    (("-r", "api_key", "typed-on-the-command-line"), r"^-r api_key: the parameter's name has KEY in it, so its value "
     r"is a secret; .*export it \(API_KEY=...\) and read it in the step that needs it \(os.environ\['API_KEY'\]\); if "
     r"it is not a secret, rename the parameter$"),
    (("parameter", "creds", __import__("requests").auth.HTTPBasicAuth("u", "p")), r"requests.auth.HTTPBasicAuth"),
    (("-p", "max_tokens", 4096), None),  # a number: not a secret whatever the name
    (("-p", "sort_key", "id"), None),  # text too short to be a secret
    (("-p", "label", "an ordinary value"), None),
])
def test_secret_parameters_are_refused(env, given, error):
    if error is None:
        secrets.refuse_parameters([given], ("DB_URL",))
        return
    with pytest.raises(FlowError, match=error):
        secrets.refuse_parameters([given], ("DB_URL",))


needs_r = pytest.mark.skipif(shutil.which("R") is None or "ir" not in installed_kernels(),
                             reason="the R kernel (ir) is not installed; .ci/run installs it")


@pytest.mark.slow
@needs_r
def test_an_r_step_keeps_its_secrets_out_of_the_store_too(env, run_flow, tmp_path):
    """An R step's outputs, failure snapshot, printed text and the files it writes, as a Python step's."""
    uses = ("token <- Sys.getenv('MY_SERVICE_TOKEN')\ncfg <- list(url = paste0('https://x/?k=', token), n = 2L)\n"
            "db <- Sys.getenv('DB_URL')\nn <- 41\nprint(token)\nprint(Sys.getenv())\n"
            "writeLines(paste('key =', token), 'r_config.ini')\nwriteLines('nothing secret', 'r_plain.txt')")
    path = notebook(tmp_path, [(["step:make"], "start = 1"), (["step:use", "kernel:ir", "secret:PLAIN_NAME"], uses),
                               (["step:later"], "total = n + start")])
    run = run_flow(path)
    use = run["use"].task.record
    assert set(use["outputs"]) == {"n"} and run["later"].data.total == 42
    assert "'token' contains the value of $MY_SERVICE_TOKEN: not stored" in "\n".join(use["warnings"])
    assert "'db' contains the value of $DB_URL: not stored" in "\n".join(use["warnings"])
    assert use["files"]["written"]["r_config.ini"]["withheld"] == "contains the value of $MY_SERVICE_TOKEN"
    assert "withheld" not in use["files"]["written"]["r_plain.txt"]
    assert "[secret removed]" in run["use"].log
    failing = uses + "\nstop('cannot connect with ', token)"
    failed = run_flow(notebook(tmp_path, [(["step:use", "kernel:ir", "secret:PLAIN_NAME"], failing)]), expect="failed")
    failure = failed["use"].task.record["failure"]
    assert failure["withheld"] == {"cfg": "contains the value of $MY_SERVICE_TOKEN",
                                   "db": "contains the value of $DB_URL",
                                   "token": "contains the value of $MY_SERVICE_TOKEN"}
    assert "n" in failure["variables"] and "[secret removed]" in failed["use"].error["message"]
    passing = notebook(tmp_path, [(["step:login", "kernel:ir"], "token <- Sys.getenv('MY_SERVICE_TOKEN')"),
                                  (["step:call"], "print(len(token))")])
    refused = run_flow(passing, expect="failed")
    error = refused["login"].error
    assert error["type"] == "SecretValue" and "'token' contains the value of $MY_SERVICE_TOKEN, and step 'call' " \
        "reads it" in error["message"] and "Sys.getenv('MY_SERVICE_TOKEN') in R" in error["message"]
    assert_no_secret_in_store(env)


def test_values_a_step_in_another_language_wrote_are_withheld_before_anything_stores_them(tmp_path):
    """execution/crossing.py, in the step's environment: a value file holding a secret (in its text, or
    in a string of the value once decoded: JSON escapes) is deleted and listed; the others stay."""
    from jupyter_flow.execution import crossing
    from jupyter_flow.store import neutral

    quoted = 'q"uo\\te/' + "d-secret-value"  # JSON escapes its quote and backslash: found once decoded
    found = secrets.Secrets({"MY_SERVICE_TOKEN": TOKEN, "ODD_TOKEN": quoted})
    folder = tmp_path / "crossing"
    for sub, name, value in [("out", "token", {"url": f"https://x/?k={TOKEN}"}), ("out", "n", 41),
                             ("out", "odd", [quoted]), ("failure", "table", {"a": [1, 2]})]:
        (folder / sub).mkdir(parents=True, exist_ok=True)
        (folder / sub / f"{name}.json").write_bytes(neutral.dumps(value))
    assert quoted.encode() not in (folder / "out" / "odd.json").read_bytes()
    withheld = crossing.withhold_secrets(str(folder), found)
    assert withheld == {"token": "contains the value of $MY_SERVICE_TOKEN", "odd": "contains the value of $ODD_TOKEN"}
    assert sorted(p.name for p in folder.rglob("*.json") if p.parent != folder) == ["n.json", "table.json"]
    assert crossing.read_withheld(str(folder)) == withheld
