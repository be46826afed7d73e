"""The store never loses or forges data: the issue's items, each through the doors users use."""
import json
import pickle
from pathlib import Path

import nbformat
import pytest
from conftest import SCENARIOS, cli, one_line_error, run_dirs

import jupyter_flow
from jupyter_flow.errors import CorruptBlob


def blob(store, digest) -> Path:  # the layout as the README documents it
    return Path(store, "blobs", digest[:2], digest)


def run_dir(store, run) -> Path:
    return Path(store, "flows", run.flow, "runs", run.id)


class Boom:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def notebook(path: Path, cells: list[tuple[list[str], str]], metadata: dict | None = None) -> Path:
    nb = nbformat.v4.new_notebook(metadata=metadata or {})
    nb.cells = [nbformat.v4.new_code_cell(src, metadata={"tags": tags}) for tags, src in cells]
    nbformat.write(nb, str(path))
    return path


def output_hash(run, step, name):
    return run[step].artifacts[name].hash


def test_tampered_blob_is_never_unpickled_and_a_rerun_heals_it(run_flow, store, tmp_path):
    """Items 2 and 3: a pickle that runs code replaces a blob; no door runs it; the next run rewrites it."""
    run = run_flow("linear.ipynb")
    digest = output_hash(run, "a", "a")
    marker = tmp_path / "pwned"
    blob(store, digest).write_bytes(pickle.dumps(Boom(str(marker))))

    with pytest.raises(CorruptBlob, match=digest):
        _ = run.refresh()["a"].data.a
    with pytest.raises(CorruptBlob, match=f"{digest}.*'a'"):
        jupyter_flow.load(run.id, "b", store=store, into={}, state="inputs", quiet=True)
    assert not marker.exists()

    again = run_flow("linear.ipynb")  # a plain rerun: the cache must not vouch for a corrupt value
    assert again["a"].status == "succeeded" and again["b"].status == "cached"
    assert again["a"].data.a == 2 and run.refresh()["a"].data.a == 2
    assert not marker.exists()


def test_resume_from_the_producer_heals_a_flipped_blob(run_flow, store):
    run = run_flow("linear.ipynb")
    digest = output_hash(run, "c", "c")
    data = bytearray(blob(store, digest).read_bytes())
    data[-3] ^= 0x10
    blob(store, digest).write_bytes(bytes(data))
    cli("resume", run.id, "--from", "c", "--quiet", check=0)
    assert run.refresh()["c"].data.c == 7


def test_a_truncated_run_record_shows_as_damaged_and_keeps_its_blobs(run_flow, store):
    """Item 4."""
    run = run_flow("linear.ipynb")
    key = run_dir(store, run) / "run.json"
    key.write_bytes(key.read_bytes()[:40])
    blobs = sorted(Path(store, "blobs").glob("??/*"))

    listing = cli("runs", check=0).stdout
    assert run.id[:10] in listing and "damaged" in listing
    shown = cli("show", run.id, check=0).stdout
    assert "damaged" in shown and "JSONDecodeError" not in shown
    assert "damaged" in one_line_error(cli("resume", run.id, check=2))
    cli("gc", "--keep", "0", check=0)
    assert sorted(Path(store, "blobs").glob("??/*")) == blobs


def test_a_truncated_task_record_shows_as_damaged_not_as_not_run(run_flow, store):
    """Item 12, second half."""
    run = run_flow("linear.ipynb")
    key = run_dir(store, run) / "b" / "0" / "task.json"
    key.write_bytes(key.read_bytes()[:30])
    shown = cli("show", run.id, check=0).stdout
    line = next(line for line in shown.splitlines() if line.split()[:1] == ["b"])
    assert "damaged" in line and "not run" not in line


@pytest.mark.parametrize("args", [
    ["gc", "--keep", "-1"], ["runs", "--limit", "-5"], ["runs", "--status", "nonsense"], ["show", "*{suffix}"],
    ["logs", "*{suffix}", "a"], ["artifacts", "[0-9]*{suffix}", "a"],
])
def test_bad_options_are_one_line_errors_and_change_nothing(run_flow, store, args):
    """Item 7: a glob that would match the run by its suffix is not a run id."""
    run = run_flow("linear.ipynb")
    args = [a.format(suffix=run.id[-6:]) for a in args]
    before = sorted(p for p in Path(store).rglob("*"))
    one_line_error(cli(*args, check=2))
    assert sorted(p for p in Path(store).rglob("*")) == before
    assert run.refresh().status == "succeeded"


@pytest.mark.parametrize("name", ["..", "."])
def test_a_flow_named_dot_or_dotdot_is_refused(tmp_path, store, name):
    """Item 7: the flow name comes from the notebook's metadata."""
    nb = notebook(tmp_path / "n.ipynb", [(["step:a"], "x = 1")], {"jupyter_flow": {"flow": name}})
    assert "flow name" in one_line_error(cli("run", nb, check=2))
    assert not Path(store).exists() or not list(Path(store).rglob("*.json"))


def _malformed(raw: dict, case: str) -> dict:
    if case == "nbformat":
        raw["nbformat"] = "4"
    elif case == "metadata":
        raw["metadata"] = []
    elif case == "cell_metadata":
        raw["cells"][0]["metadata"] = "tags"
    elif case == "jupyter_flow":
        raw["metadata"]["jupyter_flow"] = "flow"
    elif case == "kernelspec":
        raw["metadata"]["kernelspec"] = "python3"
    elif case == "deep":
        raw["cells"][0]["source"] = "x = " + "+".join(["1"] * 100_000)
    return raw


@pytest.mark.parametrize("case", ["nbformat", "metadata", "cell_metadata", "jupyter_flow", "kernelspec", "deep"])
def test_malformed_notebooks_are_one_line_errors(tmp_path, store, case):
    """Item 9."""
    path = notebook(tmp_path / "n.ipynb", [(["step:a"], "x = 1")])
    path.write_text(json.dumps(_malformed(json.loads(path.read_text()), case)))
    one_line_error(cli("run", path, check=2))
    assert not run_dirs(store)


def test_negative_max_workers_is_refused(store):
    """Item 9."""
    one_line_error(cli("run", SCENARIOS / "linear.ipynb", "--max-workers", "-1", check=2))
    assert not run_dirs(store)


def test_resume_takes_str_parameters_and_files_like_run(tmp_path, run_flow, store):
    """Item 10."""
    nb = notebook(tmp_path / "greet.ipynb", [(["parameters"], 'name = "x"'),
                                             (["step:a"], 'assert name != "x", "set name"\nout = name')])
    failed = run_flow(nb, expect="failed")
    cli("resume", failed.id, "-p", "name", "123", "--quiet", check=0)
    resumed = jupyter_flow.Flow("greet", store).latest_run
    assert resumed.origin_run == failed.id and resumed["a"].data.out == 123  # as run and papermill read -p
    (tmp_path / "p.yaml").write_text("name: hello\n")
    cli("resume", failed.id, "-f", tmp_path / "p.yaml", "--quiet", check=0)
    assert jupyter_flow.Flow("greet", store).latest_run["a"].data.out == "hello"
