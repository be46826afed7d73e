"""The cross-run cache sees everything a step depends on (its code, inputs, parameters, the files it
read, the versions of the packages it imported, the network), restores the files a reused step
wrote, and every task says why it ran or was reused (`reason`, `jupyter flow show`)."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading

import nbformat
import pytest
from conftest import cli, tagged_notebook

import jupyter_flow

pytestmark = pytest.mark.slow


def statuses(run) -> dict:
    return {t.step: t.status for t in run.tasks}


def reasons(run) -> dict:
    return {t.step: t.record.get("reason") for t in run.tasks}


def edit_cell(path, index: int, source: str) -> None:
    nb = nbformat.read(path, as_version=4)
    nb.cells[index].source = source
    nbformat.write(nb, path)


@pytest.fixture
def reader(tmp_path):
    """The issue's case 2: a step reads data.txt, the next one uses what it read; a third does not."""
    (tmp_path / "data.txt").write_text("hello")
    return tagged_notebook(tmp_path, [
        (["parameters"], "lr = 0.1"),
        (["step:load"], "text = open('data.txt').read()"),
        (["step:count"], "n = len(text)\nm = n * 2"),
        (["step:other"], "z = lr * 2"),
    ])


def test_an_edited_file_reruns_its_reader_and_what_follows(run_flow, reader):
    first = run_flow(reader)
    assert set(reasons(first).values()) == {"no earlier run"}
    again = run_flow(reader)
    assert statuses(again) == {"load": "cached", "count": "cached", "other": "cached"}
    assert reasons(again)["load"] == f"reused from run {first.id} (nothing it depends on changed)"

    (reader.parent / "data.txt").write_text("hello world")
    edited = run_flow(reader)
    assert statuses(edited) == {"load": "succeeded", "count": "succeeded", "other": "cached"}
    assert reasons(edited)["load"] == "file data.txt changed (5 -> 11 bytes)"
    assert reasons(edited)["count"] == "input `text` changed (from step load)"
    assert edited["count"].data.n == 11  # not the stale 5

    shown = cli("show", edited.id, check=0).stdout
    assert "file data.txt changed (5 -> 11 bytes)" in shown and "input `text` changed (from step load)" in shown


def test_the_reason_names_the_changed_cell_and_line_or_parameter(run_flow, reader):
    run_flow(reader)
    edit_cell(reader, 2, "n = len(text)  # a comment changes nothing\nm = n * 3")
    edited = run_flow(reader)
    assert statuses(edited) == {"load": "cached", "count": "succeeded", "other": "cached"}
    assert reasons(edited)["count"] == "code changed: cell 3, line 2 `m = n * 3`"

    run_flow(reader, parameters={"lr": 0.2})
    changed = run_flow(reader, parameters={"lr": 0.3})
    assert statuses(changed) == {"load": "cached", "count": "cached", "other": "succeeded"}
    assert reasons(changed)["other"] == "parameter `lr` changed (0.2 -> 0.3)"


@pytest.fixture
def listener():
    """A TCP server on localhost that accepts and closes connections: the step's "network"."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1]
    server.close()


@pytest.mark.parametrize("tags", [[], ["cache:trust"]])
def test_a_step_that_touched_the_network_reruns_unless_trusted(run_flow, tmp_path, listener, tags):
    nb = tagged_notebook(tmp_path, [
        (["step:fetch", *tags], f"import socket\nsocket.create_connection(('127.0.0.1', {listener})).close()\ngot = 1"),
        (["step:after"], "twice = got * 2"),
    ])
    first = run_flow(nb)
    assert first["fetch"].tasks[0].record["files"]["network"] == [f"127.0.0.1:{listener}"]
    again = run_flow(nb)
    if tags:
        assert statuses(again) == {"fetch": "cached", "after": "cached"}
    else:
        assert statuses(again) == {"fetch": "succeeded", "after": "cached"}  # same value: what follows is reused
        assert reasons(again)["fetch"] == "touched the network (tag cache:trust to reuse)"


def test_a_cached_step_restores_the_file_it_wrote_into_a_fresh_folder(run_flow, tmp_path):
    here = tmp_path / "here"
    here.mkdir()
    nb = tagged_notebook(here, [
        (["step:write"], "open('out.txt', 'w').write('fresh')"),
        (["step:read"], "got = open('out.txt').read()"),
    ])
    run_flow(nb)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    shutil.copy(nb, fresh / nb.name)
    edit_cell(fresh / nb.name, 1, "got = open('out.txt').read() + '!'")  # the reader runs, in a folder without the file
    run = run_flow(fresh / nb.name)
    assert statuses(run) == {"write": "cached", "read": "succeeded"}
    assert (fresh / "out.txt").read_text() == "fresh"
    assert run["read"].data.got == "fresh!"


def test_a_changed_package_version_reruns_the_step_that_imported_it(run_flow, tmp_path, store):
    nb = tagged_notebook(tmp_path, [(["step:use"], "import six\nversion = six.__version__")])
    first = run_flow(nb)
    record = first["use"].tasks[0].record
    assert record["packages"].get("six")
    # as if six had been upgraded since: the cache entry's task says it used another version
    record = dict(record, packages={**record["packages"], "six": "0.0.1"})
    path = os.path.join(store, "flows", "flow", "runs", first.id, "use", "0", "task.json")
    with open(path, "w") as f:
        json.dump(record, f)
    again = run_flow(nb)
    assert statuses(again) == {"use": "succeeded"}
    assert reasons(again)["use"] == f"package six 0.0.1 -> {record_version('six')}"


def record_version(dist: str) -> str:
    from importlib import metadata

    return metadata.version(dist)


def test_a_rerun_served_from_the_cache_starts_no_kernel_and_imports_no_papermill(run_flow, reader, store):
    run_flow(reader)
    # a kernel is started through jupyter_client (forked by the fork server, a child that is no kernel)
    script = (
        "import os, sys, psutil, jupyter_flow\n"
        f"run = jupyter_flow.run({str(reader)!r}, store={store!r})\n"
        "kids = psutil.Process().children(recursive=True)\n"
        "kernels = [k for k in kids if k.ppid() != os.getpid() or 'forkserver' not in ' '.join(k.cmdline())]\n"
        "print(run.status, sorted({t.status for t in run.tasks}), 'papermill' in sys.modules,\n"
        "      'jupyter_client' in sys.modules, len(kernels))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["succeeded", "['cached']", "False", "False", "0"], out.stderr


def test_told_to_run_says_so(run_flow, reader, store):
    first = run_flow(reader)
    assert set(reasons(run_flow(reader, no_cache=True)).values()) == {"--no-cache"}
    resumed = jupyter_flow.resume(first.id, from_step="count", store=store)
    assert statuses(resumed) == {"load": "reused", "count": "succeeded", "other": "reused"}
    assert reasons(resumed) == {"load": f"reused from run {first.id} (nothing it depends on changed)",
                                "count": "rerun from step count (resume)",
                                "other": f"reused from run {first.id} (nothing it depends on changed)"}
    disabled = reader.parent / "disabled.ipynb"
    nb = nbformat.read(reader, as_version=4)
    nb.cells[3].metadata["tags"].append("cache:disabled")
    nbformat.write(nb, disabled)
    assert reasons(run_flow(disabled))["other"] == "cache:disabled"


def test_editing_a_local_module_the_step_imports_reruns_it(run_flow, tmp_path):
    (tmp_path / "helpers.py").write_text("K = 2\n")
    nb = tagged_notebook(tmp_path, [(["step:a"], "import helpers\nk = helpers.K"), (["step:b"], "j = 1")])
    run_flow(nb)
    (tmp_path / "helpers.py").write_text("K = 30\n")
    again = run_flow(nb)
    assert statuses(again) == {"a": "succeeded", "b": "cached"}
    assert reasons(again)["a"] == "file helpers.py changed (6 -> 7 bytes)" and again["a"].data.k == 30
