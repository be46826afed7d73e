"""Continue from the failing cell: a resumed failed step starts at the cell that failed, from its
snapshot, when that gives a full rerun's values; otherwise it reruns the whole step and says why."""
import os
import tempfile
from pathlib import Path

import pytest
from conftest import cli, tagged_notebook
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jupyter_flow

pytestmark = pytest.mark.slow


@pytest.fixture
def failed(notebook_copy, run_flow):
    """continue_counter.ipynb failed at its cell 6 (fail.flag is there); returns (notebook, run)."""
    nb = notebook_copy("continue_counter.ipynb")
    (nb.parent / "fail.flag").write_text("")
    run = run_flow(nb, expect="failed")
    assert (nb.parent / "count.txt").read_text() == "0 1 2 "
    os.remove(nb.parent / "fail.flag")  # the fix
    return nb, run


def test_resume_runs_only_the_failing_cell_and_after(failed, store):
    nb, run = failed
    os.remove(nb.parent / "half.txt")  # written by cell 5 before the failure: restored from the store
    resumed = jupyter_flow.resume(run.id, store=store)
    assert resumed.status == "succeeded"
    assert (nb.parent / "count.txt").read_text() == "0 1 2 3 4 "  # cells 4 and 5 did not run again
    work = resumed["work"].task.record
    assert work["continued"]["cell"] == 6 and work["continued"]["run"] == run.id
    assert work["reason"].startswith("continues from cell 6: cells 4-5 not run again")
    assert resumed["work"].data.result == 10 + 11 + 10  # as a full rerun: items [10, 11] and half.txt
    assert set(work["files"]["written"]) >= {"count.txt", "half.txt"}  # what the earlier cells wrote counts too


def test_from_start_reruns_the_whole_step_and_says_why(failed, store):
    nb, run = failed
    proc = cli("resume", run.id, "--from-start", check=0)
    assert "work: runs from its first cell: --from-start" in proc.stderr
    assert (nb.parent / "count.txt").read_text() == "0 1 2 1 2 3 4 "


def test_cli_resume_says_where_it_continues(failed, store):
    nb, run = failed
    proc = cli("resume", run.id, check=0)
    assert (f"work: continues from cell 6: cells 4-5 not run again (values from run {run.id}'s failure snapshot)"
            in proc.stderr)
    assert (nb.parent / "count.txt").read_text() == "0 1 2 3 4 "


def test_a_changed_earlier_cell_reruns_the_whole_step(failed, store):
    import nbformat

    nb, run = failed
    book = nbformat.read(nb, as_version=4)
    book.cells[4].source = book.cells[4].source.replace("total * 2", "total * 3")
    nbformat.write(book, nb)
    resumed = jupyter_flow.resume(run.id, store=store)
    work = resumed["work"].task.record
    assert work["continued"] is None
    assert work["reason"] == "runs from its first cell: cell 5, before the failing one, changed"
    assert resumed["work"].data.result == 15 + 16 + 15


def test_a_cell_that_changed_what_it_reads_before_failing_reruns_the_step(tmp_path, run_flow, store):
    nb = tagged_notebook(tmp_path, [(["step:s"], "import os\nx = 1"),
                                    ([], "x = x + 1\nif os.path.exists('fail.flag'):\n    raise RuntimeError('flag')")])
    (tmp_path / "fail.flag").write_text("")
    run = run_flow(nb, expect="failed")
    os.remove(tmp_path / "fail.flag")
    resumed = jupyter_flow.resume(run.id, store=store)
    assert "cell 2 changed 'x' before it failed" in resumed["s"].task.record["reason"]
    assert resumed["s"].data.x == 2  # not 3


def test_a_value_the_snapshot_could_not_keep_and_a_later_cell_reads_reruns_the_step(tmp_path, run_flow, store):
    nb = tagged_notebook(tmp_path, [(["step:s"], "import os, threading\nlock = threading.Lock()"),
                                    ([], "if os.path.exists('fail.flag'):\n    raise RuntimeError('flag')"),
                                    ([], "with lock:\n    done = True")])
    (tmp_path / "fail.flag").write_text("")
    run = run_flow(nb, expect="failed")
    os.remove(tmp_path / "fail.flag")
    resumed = jupyter_flow.resume(run.id, store=store)
    assert "read 'lock', which run" in resumed["s"].task.record["reason"]
    assert resumed["s"].data.done is True


# -- a property: continuing equals a full top-to-bottom run ----------------------------------------
OPS = ["v{i} = {a} + {b}", "v{i} = {a} * 2 - {b}", "acc.append({a})\nv{i} = len(acc) + {b}",
       "v{i} = [{a}, {b}][{i} % 2]", "acc = acc + [{b}]\nv{i} = sum(acc)"]


@st.composite
def steps(draw):
    n = draw(st.integers(2, 5))
    cells = []
    for i in range(1, n + 1):
        op = draw(st.sampled_from(OPS))
        a, b = (f"v{draw(st.integers(0, i - 1))}" for _ in range(2))
        cells.append(op.format(i=i, a=a, b=b))
    return cells, draw(st.integers(1, n))


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(steps())
def test_continued_step_equals_a_full_top_to_bottom_run(top_to_bottom, case):
    cells, k = case
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        store = str(folder / "store")  # each example its own: nothing cached from another
        sources = [(["imports"], "import os"), (["step:prep"], "v0 = 3\nacc = [1]")]
        for i, code in enumerate(cells, 1):
            tick = f"with open('count.txt', 'a') as _f:\n    _f.write('{i} ')"
            fail = f"if os.path.exists('fail{i}.flag'):\n    raise RuntimeError('flag {i}')\n"
            sources.append((["step:work"] if i == 1 else [], fail + tick + "\n" + code))
        nb = tagged_notebook(folder, sources)
        (folder / f"fail{k}.flag").write_text("")
        run = jupyter_flow.run(nb, store=store)
        assert run.status == "failed" and run["work"].error["source_cell"] == 1 + k
        os.remove(folder / f"fail{k}.flag")
        resumed = jupyter_flow.resume(run.id, store=store)
        assert resumed.status == "succeeded"
        continued = resumed["work"].task.record["continued"]
        assert (continued or {}).get("cell") == (2 + k if k > 1 else None)  # from its first cell: a plain run
        ran = (folder / "count.txt").read_text().split()
        assert ran == [str(i) for i in range(1, len(cells) + 1)]  # each cell ran once in all
        names = ["acc"] + [f"v{i}" for i in range(len(cells) + 1)]
        expected = top_to_bottom(nb, names)
        got = {n: getattr(resumed["work"].data, n) for n in names if n in resumed["work"].task.record["outputs"]}
        assert got == {n: expected[n] for n in got}
        assert got  # the step stored what it assigned


def test_a_changed_parameter_reruns_the_whole_step(tmp_path, run_flow, store):
    nb = tagged_notebook(tmp_path, [(["parameters"], "n = 1"), (["step:s"], "import os\ny = n * 2"),
                                    ([], "if os.path.exists('fail.flag'):\n    raise RuntimeError('flag')\nz = y + 1")])
    (tmp_path / "fail.flag").write_text("")
    run = run_flow(nb, expect="failed")
    os.remove(tmp_path / "fail.flag")
    resumed = jupyter_flow.resume(run.id, store=store, parameters={"n": 5})
    assert resumed["s"].task.record["reason"].startswith(f"runs from its first cell: since run {run.id}: parameter `n`")
    assert resumed["s"].data.z == 11
