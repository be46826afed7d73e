"""Batch runs over parameter grids: CLI and Python, failures that do not stop the others, resume."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import SCENARIOS, cli, one_line_error, run_dirs
from hypothesis import given
from hypothesis import strategies as st

GRID = SCENARIOS / "grid.ipynb"


@pytest.mark.slow
def test_grid_with_one_failing_combination_then_resume(store, tmp_path):
    (tmp_path / "grid.yaml").write_text("lr: [0.1, 0.01]\ndepth: [3, 5]\n")
    blocked = tmp_path / "blocked.txt"
    blocked.write_text("0.01 5")  # evaluate raises for this combination while the file says so
    proc = cli("batch", GRID, "-f", tmp_path / "grid.yaml", "-p", "blocked_path", blocked, "--max-parallel-runs", 2,
               check=1)
    batch_id = next(w for w in proc.stderr.split() if w.startswith("batch-"))
    assert "4 parameter sets, 3 succeeded, 1 failed" in proc.stderr
    assert "combination lr=0.01 depth=5 is blocked" in proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()[1:]]
    assert [r[2] for r in rows] == ["succeeded", "succeeded", "succeeded", "failed"]  # in grid order
    assert [r[7:9] for r in rows] == [["lr=0.1,", "depth=3,"], ["lr=0.1,", "depth=5,"], ["lr=0.01,", "depth=3,"],
                                      ["lr=0.01,", "depth=5,"]]
    assert [r[10] for r in rows[:3]] == ["quality=3", "quality=5", "quality=0.3"]  # metrics column

    listed = json.loads(cli("runs", "--batch", batch_id, "--format", "json", check=0).stdout)
    assert len(listed) == 4 and {r["batch"]["id"] for r in listed} == {batch_id}
    failed = next(r for r in listed if r["status"] == "failed")
    assert failed["parameters"]["lr"] == 0.01 and failed["parameters"]["depth"] == 5

    blocked.write_text("")  # the fix
    proc = cli("batch", "--resume", batch_id, check=0)
    assert "4 parameter sets, 4 succeeded" in proc.stderr
    listed = json.loads(cli("runs", "--batch", batch_id, "--format", "json", check=0).stdout)
    assert len(listed) == 5  # the four, and the one resumed run
    resumed = next(r for r in listed if r.get("origin_run") == failed["id"])
    assert resumed["status"] == "succeeded" and resumed["batch"] == failed["batch"]
    assert resumed["metrics"] == {"quality": 0.5}
    show = json.loads(cli("show", resumed["id"], "--format", "json", check=0).stdout)
    assert {t["step"]: t["status"] for t in show["tasks"]} == {"train": "reused", "evaluate": "succeeded"}
    assert cli("batch", "--resume", batch_id).returncode == 2  # nothing left to resume


@pytest.mark.slow
def test_batch_from_python_returns_runs_and_a_table(store):
    import jupyter_flow

    batch = jupyter_flow.batch(GRID, grid=[{"lr": 0.5, "depth": 2}, {"lr": 0.25, "depth": 4}], store=store,
                               max_parallel_runs=2)
    runs, table = batch
    assert [r.status for r in runs] == ["succeeded", "succeeded"]
    assert list(table["lr"]) == [0.5, 0.25] and list(table["quality"]) == [10.0, 10.0]
    assert set(table["batch"]) == {batch.id} and batch.succeeded
    assert list(jupyter_flow.Batch(batch.id, store).table["id"]) == [r.id for r in runs]


@given(st.dictionaries(st.sampled_from(["a", "b", "c"]), st.lists(st.integers(), min_size=1, max_size=3), min_size=1),
       st.dictionaries(st.sampled_from(["c", "d"]), st.integers(), max_size=2))
def test_a_grid_is_the_product_of_its_lists_with_fixed_values_everywhere(grid, fixed):
    from math import prod

    from jupyter_flow.runtime.batches import expand

    sets = expand(grid, fixed)
    assert len(sets) == prod(len(v) for v in grid.values())
    assert all(s[k] == v for s in sets for k, v in fixed.items())
    assert all(s[k] in grid[k] for s in sets for k in grid if k not in fixed)


@pytest.mark.parametrize("content, message", [
    ("lr: []\n", "lr has an empty list of values"),
    ("- 3\n", "item 1 is 3"),
    ("just text\n", "expected a grid"),
    ("lr: [0.1, oops]\n", "parameter set 2: parameter lr: expected a float"),  # wrong type, found before anything runs
    ("{", "not valid YAML"),
])
def test_bad_grids_are_refused_before_anything_runs(store, tmp_path, content, message):
    (tmp_path / "grid.yaml").write_text(content)
    proc = cli("batch", GRID, "-f", tmp_path / "grid.yaml")
    assert proc.returncode == 2
    assert message in one_line_error(proc)
    assert not run_dirs(store) and not (Path(store) / "batches").exists()


def test_batch_usage_errors(store, tmp_path):
    assert "give a notebook and its parameter sets" in one_line_error(cli("batch", GRID))
    assert "no batch 'batch-nope'" in one_line_error(cli("batch", "--resume", "batch-nope"))
    (tmp_path / "g.yaml").write_text("lr: [0.1]\n")
    assert "--max-parallel-runs 0" in one_line_error(cli("batch", GRID, "-f", tmp_path / "g.yaml",
                                                         "--max-parallel-runs", 0))
    assert not run_dirs(store)
