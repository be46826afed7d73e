"""Files at run time: what a step reads and writes is recorded in its kernel, written files are stored
and travel to later steps, read files are fingerprinted, and a read that raced a write is never
silently stale (it runs again after the writer, or the run stops naming the file, steps and fix)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from importlib import metadata

import pytest
from conftest import tagged_notebook

from jupyter_flow.errors import CorruptBlob
from jupyter_flow.execution import files
from jupyter_flow.store import open_store, records
from jupyter_flow.store.layout import blob

# A path the code builds at run time: no static reading of the code can tell which file it is.
HIDDEN = "import time\ndef name():\n    return ''.join(reversed('txt.tuo'))"
# Steps that must overlap wait for states, never for durations: a marker folder another step made
# (mkdir and stat are not file reads or writes to the recorder), or a step's task record saying it ended.
SYNC = """
import glob, json, os
def signal(m):
    os.makedirs(os.path.join(os.getcwd(), '.sync', m), exist_ok=True)
def after(m):
    while not os.path.isdir(os.path.join(os.getcwd(), '.sync', m)):
        time.sleep(0.02)
def ended(step):  # the step's task record says it ended
    def done(path):
        try:
            return json.load(open(path)).get('ended')
        except ValueError:
            return None
    pattern = os.path.join(os.environ['JUPYTER_FLOW_STORE'], 'flows', '*', 'runs', '*', step, '0', 'task.json')
    while not any(done(p) for p in glob.glob(pattern)):
        time.sleep(0.05)
"""


def by_step(run) -> dict:
    return {t.step: t for t in run.tasks}


def value(run, step: str, name: str):
    return by_step(run)[step].artifacts[name].value


def content_hash(data: bytes) -> str:
    from jupyter_flow.store.blobs import digest_of

    return digest_of(data)


# -- the example: a file written by one step and read by a later one ------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("how", ["literal path (a file edge)", "prev: tag"])
def test_the_reader_sees_what_the_earlier_step_wrote(run_flow, tmp_path, how):
    (tmp_path / "out.txt").write_text("stale")
    if how == "prev: tag":
        cells = [(["imports"], HIDDEN), (["step:write"], "time.sleep(2); open(name(), 'w').write('fresh')"),
                 (["step:read", "prev:write"], "got = open(name()).read()")]
    else:
        cells = [(["imports"], "import time"), (["step:write"], "time.sleep(2); open('out.txt', 'w').write('fresh')"),
                 (["step:read"], "got = open('out.txt').read()")]
    run = run_flow(tagged_notebook(tmp_path, cells))
    assert value(run, "read", "got") == "fresh"


@pytest.mark.slow
def test_a_reader_that_raced_the_writer_and_was_used_stops_the_run_then_the_next_run_orders_them(run_flow, tmp_path):
    """No edge (the path is built at run time): the reader reads 'stale' at once and its value is used
    downstream before the writer ends. The run stops, naming the file, both steps and the fix; the
    next run knows from this run's records that the reader follows the writer."""
    (tmp_path / "out.txt").write_text("stale")
    nb = tagged_notebook(tmp_path, [
        (["imports"], HIDDEN + SYNC),
        (["step:write"], "after('used'); open(name(), 'w').write('fresh')"),
        (["step:read"], "got = open(name()).read()"),
        (["step:use"], "shout = got.upper(); signal('used')"),
    ])
    run = run_flow(nb, expect="failed")
    tasks = by_step(run)
    assert tasks["read"].status == "failed" and tasks["read"].error["type"] == "FileRace"
    message = run.error["message"]
    assert "out.txt" in message and "'read'" in message and "'write'" in message and "prev:write" in message
    assert "\n" not in message
    assert tasks["read"].record["attempts"][0]["status"] == "succeeded"  # the attempt it overruled is kept

    again = run_flow(nb)  # ordered by the last run's records: write, then read
    assert value(again, "read", "got") == "fresh" and value(again, "use", "shout") == "FRESH"


@pytest.mark.slow
def test_a_reader_that_raced_the_writer_runs_again_after_it(run_flow, tmp_path):
    """The reader started before the writer ended but ended after it: its value is not used yet, so
    it runs again, and gives what top to bottom gives."""
    (tmp_path / "out.txt").write_text("stale")
    nb = tagged_notebook(tmp_path, [
        (["imports"], HIDDEN + SYNC),
        (["step:write"], "after('read'); open(name(), 'w').write('fresh')"),
        (["step:read"], "got = open(name()).read(); signal('read'); ended('write')"),  # ends after the writer
    ])
    run = run_flow(nb)
    assert value(run, "read", "got") == "fresh"
    read = by_step(run)["read"]
    assert read.attempt == 2
    first = read.record["attempts"][0]
    assert first["error"]["type"] == "FileRace" and "runs again now that 'write' has ended" in first["error"]["message"]


@pytest.mark.slow
def test_a_reader_that_saw_the_writers_final_version_is_no_race(run_flow, tmp_path):
    """The writer ended after the reader started, but the reader read the file as the writer left it
    (its fingerprint says so): nothing to redo."""
    (tmp_path / "out.txt").write_text("stale")
    nb = tagged_notebook(tmp_path, [
        (["imports"], HIDDEN + SYNC),
        (["step:write"], "open(name(), 'w').write('fresh'); signal('written'); after('read')"),
        (["step:read"], "after('written'); got = open(name()).read(); signal('read')"),
    ])
    run = run_flow(nb)
    assert value(run, "read", "got") == "fresh" and by_step(run)["read"].attempt == 1


@pytest.mark.slow
def test_an_earlier_step_that_read_a_later_steps_write_stops_the_run(run_flow, tmp_path):
    """Top to bottom 'first' reads data.txt before 'second' overwrites it; unordered, 'first' read the new
    version. Its own is gone, so it cannot run again: the run stops, naming the fix."""
    (tmp_path / "data.txt").write_text("original")
    nb = tagged_notebook(tmp_path, [
        (["imports"], "import time\ndef name():\n    return ''.join(reversed('txt.atad'))" + SYNC),
        (["step:first"], "after('written'); got = open(name()).read(); signal('read')"),
        (["step:second"], "open(name(), 'w').write('overwritten'); signal('written'); after('read')"),
    ])
    run = run_flow(nb, expect="failed")
    first = by_step(run)["first"]
    assert first.error["type"] == "FileRace"
    assert "which comes later in the notebook" in first.error["message"]
    assert "add the tag prev:first to step 'second'" in first.error["message"]


@pytest.mark.slow
def test_two_unordered_steps_writing_one_file_is_a_race(run_flow, tmp_path):
    nb = tagged_notebook(tmp_path, [
        (["imports"], HIDDEN + SYNC),
        (["step:first"], "after('second wrote'); open(name(), 'w').write('first')"),
        (["step:second"], "open(name(), 'w').write('second'); signal('second wrote')"),
        (["step:after", "prev:second"], "x = 1"),
    ])
    run = run_flow(nb, expect="failed")
    second = by_step(run)["second"]
    assert second.error["type"] == "FileRace" and "step 'second' wrote it" in second.error["message"]


@pytest.mark.slow
def test_a_reader_that_ran_before_an_unfinished_writer_stops_the_run(run_flow, tmp_path):
    """The code says 'write' writes out.txt, but not that 'read' reads it (a path built at run time):
    no edge. 'read' ends while 'write' still runs: the run stops at once."""
    (tmp_path / "out.txt").write_text("stale")
    nb = tagged_notebook(tmp_path, [
        (["imports"], HIDDEN + SYNC),
        (["step:write"], "ended('read'); open('out.txt', 'w').write('fresh')"),
        (["step:read"], "got = open(name()).read()"),
    ])
    run = run_flow(nb, expect="failed")
    read = by_step(run)["read"]
    assert read.error["type"] == "FileRace"
    assert "step 'read' read it before step 'write'" in read.error["message"] and "prev:write" in read.error["message"]


LOG = "\ndef log(line):\n    with open('run.log', 'a') as f:\n        f.write(line + '\\n')"


@pytest.mark.slow
def test_unordered_steps_appending_to_one_log_do_not_race(run_flow, tmp_path):
    nb = tagged_notebook(tmp_path, [
        (["imports"], HIDDEN + LOG),  # (both are predicted to write run.log: the runner may order them)
        (["step:one"], "log('one'); time.sleep(2); log('one again')"),
        (["step:two"], "log('two'); time.sleep(2); log('two again')"),
    ])
    run = run_flow(nb)
    assert sorted((tmp_path / "run.log").read_text().split("\n")[:-1]) == ["one", "one again", "two", "two again"]
    assert by_step(run)["one"].record["files"]["written"]["run.log"]["append"] is True
    assert all(t.attempt == 1 for t in run.tasks)


@pytest.mark.slow
def test_shared_cells_reads_are_each_steps_and_their_writes_no_ones(run_flow, tmp_path):
    """The imports and parameters cells run in every step's kernel: a file they read is a dependency of
    each step; a file they write is written by every kernel, which is no race between the steps."""
    (tmp_path / "config.json").write_text('{"n": 2}')
    nb = tagged_notebook(tmp_path, [
        (["imports"], ("import json, time\nopen('setup.log', 'w').write('started')\n"
                       "config = json.load(open('config.json'))")),
        (["step:one"], "time.sleep(2); a = config['n']"),
        (["step:two"], "time.sleep(2); b = config['n'] * 2"),
    ])
    run = run_flow(nb)
    for task in run.tasks:
        assert "config.json" in task.record["files"]["read"] and task.record["files"]["written"] == {}
        assert task.attempt == 1


def test_a_log_a_step_appended_to_is_never_rewound(store, tmp_path):
    log = tmp_path / "run.log"
    log.write_text("a\n")
    s = open_store(store)
    digest, size = s.save_file(str(log))
    log.write_text("a\nb\n")  # a later step added a line
    meta = {"hash": digest, "size": size, "append": True}
    assert files.restore(s, {"run.log": meta}, str(tmp_path)) == []
    assert log.read_text() == "a\nb\n"
    log.write_text("x\n")  # not what the step left: put back
    assert files.restore(s, {"run.log": meta}, str(tmp_path)) == ["run.log"] and log.read_text() == "a\n"


# -- written files: recorded, stored, restored -------------------------------------------------------------
@pytest.mark.slow
def test_written_files_are_stored_with_the_task_and_restored_in_a_fresh_folder(run_flow, store, tmp_path):
    (tmp_path / "old.txt").write_text("to delete")
    nb = tagged_notebook(tmp_path, [
        (["step:make"], ("import os, pathlib\n"
                         "os.makedirs('out', exist_ok=True)\n"
                         "open('out/model.bin', 'wb').write(bytes(range(256)) * 4)\n"
                         "open('tmp.part', 'w').write('x'); os.replace('tmp.part', 'out/final.txt')\n"
                         "open('scratch', 'w').write('y'); os.remove('scratch')\n"
                         "pathlib.Path('old.txt').unlink()")),
    ])
    run = run_flow(nb)
    used = by_step(run)["make"].record["files"]
    model = bytes(range(256)) * 4
    assert used["written"]["out/model.bin"]["hash"] == content_hash(model)
    assert used["written"]["out/model.bin"]["size"] == len(model)
    assert set(used["written"]) == {"out/model.bin", "out/final.txt"}  # tmp.part moved, scratch came and went
    assert used["removed"] == ["old.txt"]
    assert os.path.exists(os.path.join(store, blob(content_hash(model))))

    fresh = tmp_path / "fresh"
    assert sorted(files.restore(open_store(store), used["written"], str(fresh))) == ["out/final.txt", "out/model.bin"]
    assert (fresh / "out" / "model.bin").read_bytes() == model and (fresh / "out" / "final.txt").read_text() == "x"
    assert files.restore(open_store(store), used["written"], str(fresh)) == []  # already there: nothing to do


def test_a_restored_file_is_checked_against_its_hash(store, tmp_path):
    source = tmp_path / "data.bin"
    source.write_bytes(b"payload" * 100)
    s = open_store(store)
    digest, size = s.save_file(str(source))
    assert digest == content_hash(source.read_bytes()) and size == 700
    with open(os.path.join(store, blob(digest)), "r+b") as f:
        f.write(b"X")
    with pytest.raises(CorruptBlob):
        files.restore(s, {"data.bin": {"hash": digest, "size": size}}, str(tmp_path / "elsewhere"))
    assert not (tmp_path / "elsewhere" / "data.bin").exists()


@pytest.mark.slow
def test_files_travel_to_a_later_step_whose_folder_lacks_them(run_flow, tmp_path):
    """A file gone from the folder (as on another machine, or removed by a program the kernel cannot
    see) is put back from the store before the step that needs it runs."""
    nb = tagged_notebook(tmp_path, [
        (["step:write"], "open('model.txt', 'w').write('weights')"),
        (["step:elsewhere", "prev:write"], "import subprocess\nsubprocess.run(['rm', 'model.txt'], check=True)"),
        (["step:read", "prev:elsewhere"], "got = open('model.txt').read()"),
    ])
    run = run_flow(nb)
    assert value(run, "read", "got") == "weights"


@pytest.mark.slow
def test_an_ancestors_copy_never_replaces_a_later_steps_write(run_flow, tmp_path):
    """`last` follows `first` only (it reads x); `middle` rewrote first's file in between. Top to bottom
    the file ends as middle wrote it: last's task must not put first's copy back (found by the
    property test)."""
    nb = tagged_notebook(tmp_path, [
        (["step:first"], "x = [0, 1]\nopen('f0.txt', 'w').write('first')"),
        (["step:middle"], "open('f0.txt', 'w').write(str(sum(x)))"),
        (["step:last"], "x = x + [2]"),
    ])
    run_flow(nb, max_workers=1)
    assert (tmp_path / "f0.txt").read_text() == "1"


# -- read files: fingerprinted at their first read ---------------------------------------------------------
@pytest.mark.slow
def test_read_files_are_fingerprinted_as_they_were_when_first_opened(run_flow, tmp_path):
    (tmp_path / "data.txt").write_text("hello")
    (tmp_path / "log.txt").write_text("v1")
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "a.csv").write_text("1")
    outside = tmp_path.parent / f"{tmp_path.name}-outside.txt"
    outside.write_text("far")
    before = {name: files.fingerprint(str(tmp_path / name)) for name in ("data.txt", "log.txt", "inputs")}
    nb = tagged_notebook(tmp_path, [
        (["step:read"], ("import glob\n"
                         "text = open('data.txt').read()\n"
                         "old = open('log.txt').read(); open('log.txt', 'w').write('v2')\n"  # read, then changed
                         "open('mine.txt', 'w').write('m'); mine = open('mine.txt').read()\n"  # written first: no read
                         f"far = open({str(outside)!r}).read()\n"
                         "found = glob.glob('inputs/*.csv')\n"
                         "try:\n    open('missing.txt')\nexcept FileNotFoundError:\n    pass")),
    ])
    run = run_flow(nb)
    read = by_step(run)["read"].record["files"]["read"]
    assert read["data.txt"] == before["data.txt"]
    assert read["log.txt"]["hash"] == before["log.txt"]["hash"] == content_hash(b"v1")
    assert read["inputs"]["hash"] == before["inputs"]["hash"] and read["inputs"]["dir"]
    assert read[str(outside)]["hash"] == content_hash(b"far")
    assert read["missing.txt"] == {"size": None, "mtime": None, "hash": None}
    assert "mine.txt" not in read

    cwd = str(tmp_path)
    assert files.changes({"data.txt": read["data.txt"]}, cwd) == []
    (tmp_path / "data.txt").write_text("hello world")
    (tmp_path / "inputs" / "b.csv").write_text("2")
    (tmp_path / "missing.txt").write_text("now")
    outside.unlink()
    assert sorted(files.changes(read, cwd)) == sorted([
        "data.txt changed (5 -> 11 bytes)", "inputs changed (1 -> 2 entries)", "log.txt changed (2 -> 2 bytes)",
        "missing.txt appeared (3 bytes)", f"{outside} is gone"])


def test_changes_compares_size_and_time_before_reading(tmp_path):
    path = tmp_path / "big.txt"
    path.write_text("abc")
    old = files.fingerprint(str(path))
    os.utime(path, (old["mtime"] + 10, old["mtime"] + 10))  # touched, same bytes: hashed, unchanged
    assert files.changes({"big.txt": old}, str(tmp_path)) == []
    path.write_text("abd")
    os.utime(path, (old["mtime"], old["mtime"]))  # same size and time: taken as unchanged, without reading
    assert files.changes({"big.txt": old}, str(tmp_path)) == []


# -- network and packages ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_network_connections_are_recorded(run_flow, tmp_path):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    try:
        nb = tagged_notebook(tmp_path, [
            (["parameters"], "port = 0"),
            (["step:fetch"], "import socket\ns = socket.create_connection(('127.0.0.1', port)); s.close()\nok = True"),
            (["step:offline"], "y = 1"),
        ])
        run = run_flow(nb, parameters={"port": port})
    finally:
        server.close()
    tasks = by_step(run)
    assert tasks["fetch"].record["files"]["network"] == [f"127.0.0.1:{port}"]
    assert tasks["offline"].record["files"]["network"] == []


@pytest.mark.slow
def test_packages_the_step_uses_are_recorded_with_their_versions(run_flow, tmp_path):
    nb = tagged_notebook(tmp_path, [
        (["imports"], "import json\nimport numpy as np"),
        (["step:arrays"], "import xxhash\na = np.arange(3)\nh = xxhash.xxh64(b'x').hexdigest()"),
    ])
    run = run_flow(nb)
    packages = by_step(run)["arrays"].record["packages"]
    assert packages["numpy"] == metadata.version("numpy")
    assert packages["xxhash"] == metadata.version("xxhash")
    assert "json" not in packages  # the standard library is not a package


# -- failure and cost ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_failed_task_records_the_files_it_wrote(run_flow, tmp_path):
    nb = tagged_notebook(tmp_path, [(["step:half"], "open('part.txt', 'w').write('half')\nraise ValueError('boom')")])
    run = run_flow(nb, expect="failed")
    task = by_step(run)["half"]
    assert task.record["files"]["written"]["part.txt"]["hash"] == content_hash(b"half")
    stored = records.read_task(open_store(run.store), records.find_run(run.store, run.id), "half")
    assert stored.files["written"]["part.txt"]["size"] == 4


@pytest.mark.slow
def test_a_step_opening_ten_thousand_files_still_finishes(run_flow, tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(10_000):
        (folder / f"{i}.txt").write_text(str(i))
    nb = tagged_notebook(tmp_path, [
        (["step:scan"], ("total = 0\nfor i in range(10_000):\n    with open(f'many/{i}.txt') as f:\n"
                         "        total += int(f.read())")),
    ])
    run = run_flow(nb)
    assert value(run, "scan", "total") == sum(range(10_000))
    assert len(by_step(run)["scan"].record["files"]["read"]) == 10_000


def test_the_hook_records_renames_removals_and_appends_and_never_breaks_the_program(tmp_path):
    """The hook itself, in a plain interpreter (as in a kernel, it stays installed for good)."""
    script = f"""
import json, os, shutil, sys
from jupyter_flow.execution import in_kernel as inkernel
os.chdir({str(tmp_path)!r})
open('kept.txt', 'w').write('k')
open('log.txt', 'w').write('1')
inkernel._record_files({str(tmp_path / 'store')!r})
open('log.txt', 'a').write('2')               # appended: written
shutil.copyfile('kept.txt', 'copy.txt')       # read kept.txt, wrote copy.txt
shutil.move('copy.txt', 'moved.txt')          # copy.txt made and moved: only moved.txt remains
os.remove('kept.txt')
import email.mime.text, importlib.metadata      # the import system lists folders: not the step's reads
importlib.metadata.entry_points(group='none')
try:
    open(object())                            # a bad argument: the program's own TypeError, not the hook's
except TypeError:
    pass
f = inkernel._files
print(json.dumps({{"read": sorted(f.read), "written": sorted(f.written), "removed": sorted(f.removed)}}))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    used = json.loads(out)
    here = str(tmp_path)
    assert used["read"] == [f"{here}/kept.txt"]
    assert used["written"] == [f"{here}/log.txt", f"{here}/moved.txt"]
    assert used["removed"] == [f"{here}/kept.txt"]


def test_a_step_gets_the_files_its_ancestors_wrote_the_later_writer_winning(tmp_path):
    """Which files a task restores before it runs: its ancestors' (not its siblings'), where two wrote one
    file the later in the notebook wins even through another branch, and a removed file is left out."""
    from jupyter_flow.flow.dag import build_flow
    from jupyter_flow.runtime.readiness import Task
    from jupyter_flow.runtime.spec import Specs

    flow = build_flow(tagged_notebook(tmp_path, [
        (["step:a"], "x = 1"), (["step:b", "prev:a"], "y = 1"), (["step:c", "prev:a"], "z = 1"),
        (["step:side"], "w = 1"), (["step:d", "prev:b", "prev:c"], "v = 1"),
    ]))

    def wrote(step, *paths, removed=()):
        files = {"written": {p: {"hash": f"{p}@{step}", "size": 1} for p in paths}, "removed": list(removed)}
        return [Task(step, 0, status="succeeded", record={"files": files})]

    tasks = {"a": wrote("a", "model.pkl", "shared.csv", "gone.txt"), "b": wrote("b", "shared.csv", "b.txt"),
             "c": wrote("c", "c.txt", removed=["gone.txt"]), "side": wrote("side", "side.txt"), "d": None}
    specs = Specs(flow, str(tmp_path / "store"), "run", {}, str(tmp_path), [], tasks)
    got = {path: meta["hash"] for path, meta in specs.files_in("d").items()}
    assert got == {"model.pkl": "model.pkl@a", "shared.csv": "shared.csv@b", "b.txt": "b.txt@b", "c.txt": "c.txt@c"}
    assert specs.files_in("a") == {}


@pytest.mark.slow
def test_files_travel_between_dask_workers_that_cannot_see_the_notebooks_folder(tmp_path):
    """Two Dask workers, each in its own folder, neither seeing the notebook's folder (as on other
    machines): a file one step writes on one worker is there for the next step on the other."""
    from support.services import can_hide_folders, dask_cluster

    import jupyter_flow

    if not can_hide_folders():
        pytest.skip("no unprivileged mount namespaces here: workers would see the runner's folder")
    private = tmp_path / "runner-only"
    (private / "project").mkdir(parents=True)
    nb = tagged_notebook(private / "project", [
        (["imports"], "import os"),
        (["step:write", "limit:gpu:1"], ("os.makedirs('models', exist_ok=True)\n"
                                         "open('models/model.txt', 'w').write('weights')\nwrote_in = os.getcwd()")),
        (["step:read", "limit:memory:1Gi"], "got = open('models/model.txt').read()\nread_in = os.getcwd()"),
    ])
    with dask_cluster(tmp_path / "cluster", workers=2, nthreads=1, resources=["GPU=1", "memory=1e12"],
                      hide=(private,)) as address:
        run = jupyter_flow.run(nb, store=tmp_path / "store", executor="dask", scheduler=address)
    assert run.status == "succeeded", run.error
    tasks = by_step(run)
    assert tasks["write"].record["worker"] != tasks["read"].record["worker"]
    assert value(run, "read", "got") == "weights"
    assert value(run, "write", "wrote_in") != value(run, "read", "read_in")  # two folders, on two "machines"
    assert not (private / "project" / "models").exists()  # nothing came back to the runner's folder
