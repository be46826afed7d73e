"""Running pipelines for real: kernels, papermill, the store; the CLI and the Python API."""
import json
import re
from pathlib import Path

import pytest
from conftest import EXAMPLES, SCENARIOS, cli, one_line_error, run_dirs

import jupyter_flow

pytestmark = pytest.mark.slow


def test_quickstart_from_the_cli(store):
    proc = cli("run", EXAMPLES / "quickstart.ipynb", check=0)
    run_id = proc.stdout.strip().splitlines()[-1]
    assert "succeeded" in proc.stderr and run_id in proc.stderr
    assert "output.ipynb" in proc.stderr  # where the executed step notebooks are
    folder = Path(store) / "flows" / "quickstart" / "runs" / run_id
    for step in ("load", "scale_features", "select_features", "train", "evaluate"):
        [notebook] = (folder / step / "0").glob("attempts/*/output.ipynb")  # the one attempt's folder
        executed = json.loads(notebook.read_text())
        assert executed["metadata"]["papermill"]["exception"] is None
    run = json.loads(cli("show", run_id, "--format", "json", check=0).stdout)
    assert run["status"] == "succeeded" and 0.8 < run["metrics"]["accuracy"] <= 1.0
    listed = json.loads(cli("runs", "--format", "json", check=0).stdout)
    assert [r["id"] for r in listed] == [run_id]
    assert set(listed[0]) >= {"id", "flow", "status", "user", "created", "duration"}


def test_show_lists_tasks_with_previews_and_notebooks(run_flow):
    run = run_flow("linear.ipynb")
    shown = json.loads(cli("show", run.id, "--format", "json", check=0).stdout)
    tasks = {t["step"]: t for t in shown["tasks"]}
    assert [t["status"] for t in tasks.values()] == ["succeeded"] * 5
    assert tasks["e"]["outputs"]["e"]["preview"] == "69"
    assert re.search(r"/e/0/attempts/1-\w+/output\.ipynb$", tasks["e"]["notebook"])
    assert all(t["duration"] > 0 and t["attempt"] == 1 for t in tasks.values())
    text = cli("show", run.id, check=0).stdout
    assert "succeeded" in text and "e: int 69" in text


def test_python_api_returns_values(run_flow, store):
    run = run_flow("linear.ipynb", parameters={"start": 5})
    assert run["e"].data.e == 149
    assert run["a"].artifacts["a"].value == 6
    assert run.parameters == {"start": 5}
    again = jupyter_flow.Run(run.id, store=store)
    assert again.status == "succeeded" and again["d"].data.d == 150


@pytest.mark.parametrize("notebook, names, params", [
    ("linear.ipynb", ["a", "b", "c", "d", "e"], {"start": 3}),
    ("diamond.ipynb", ["x", "left", "right", "total"], None),
    ("explicit_prev.ipynb", ["values", "squares", "total", "summary"], None),
    ("mutation.ipynb", ["xs", "total", "n"], None),
    ("no_steps.ipynb", ["y", "z"], {"x": 10}),
    ("undefined_name.ipynb", ["x", "y"], None),
    ("kale_block_continues.ipynb", ["values", "total", "root"], None),
    ("kale_limits.ipynb", ["x", "y", "z", "w"], None),
    ("kale_untagged_first.ipynb", ["x", "y"], None),
    ("kale_prev_on_shared.ipynb", ["values", "squares"], None),
    ("kale_metrics_parameter.ipynb", ["values", "total"], None),
    ("alias_loop.ipynb", ["df", "keys"], None),
    ("mutate_function.ipynb", ["deck", "n"], None),
    ("module_function.ipynb", ["deck", "top"], None),
    ("shell_vars.ipynb", ["line"], None),
    ("redefined_builtin.ipynb", ["r"], None),
    ("shared_rebound.ipynb", ["r"], None),
    ("before_parameters.ipynb", ["path"], None),
    ("del_name.ipynb", ["z", "r", "keep"], None),
    ("ipython_syntax.ipynb", ["t", "hi", "u"], None),
    ("function_globals.ipynb", ["r"], None),
])
def test_pipeline_equals_top_to_bottom(run_flow, top_to_bottom, notebook, names, params):
    run = run_flow(notebook, parameters=params)
    expected = top_to_bottom(SCENARIOS / notebook, names, params)
    got = {}
    for task in run.tasks:
        for name in names:
            if name in task.artifacts:
                got[name] = task.artifacts[name].value  # the last writer in step order wins, as top to bottom
    assert got == expected


def test_foreach_over_arrays_and_expression_parameters(run_flow):
    run = run_flow("foreach_array.ipynb")
    assert run["combine"].data.total == 12 + 15
    run = run_flow("foreach_expression.ipynb")
    assert len(run["square"].tasks) == 5 and run["combine"].data.total == 30
    assert run["combine"].data.halves == 1.25
    run = run_flow("foreach_expression.ipynb", parameters={"items": [1, 2]})
    assert run["combine"].data.total == 5


def test_sys_exit_in_a_step_fails_the_run_naming_it(run_flow):
    run = run_flow("sys_exit.ipynb", expect="failed")
    error = run["b"].error
    assert error["type"] == "SystemExit" and "sys.exit(0)" in error["message"] and "'b'" in error["message"]
    assert "c" not in {t.step for t in run.tasks}  # papermill top to bottom never runs it either


def test_an_unseen_change_in_place_stops_the_run_naming_step_and_variable(run_flow):
    run = run_flow("changed_in_place.ipynb", expect="failed")
    message = run["b"].error["message"]
    assert "'b' changed 'xs' in place" in message and "'c'" in message and "xs = xs" in message


def test_quickstart_equals_top_to_bottom(run_flow, top_to_bottom):
    run = run_flow(EXAMPLES / "quickstart.ipynb")
    expected = top_to_bottom(EXAMPLES / "quickstart.ipynb", ["accuracy"])
    assert run["evaluate"].data.accuracy == expected["accuracy"]
    assert run.metrics["accuracy"] == expected["accuracy"]


def test_independent_steps_run_at_the_same_time(run_flow, tmp_path):
    # b and c each wait until the other has started: run one after the other, the first would fail
    run = run_flow("rendezvous.ipynb", parameters={"folder": str(tmp_path)}, max_workers=2)
    assert run["d"].data.total == 31


def test_only_the_names_read_cross_an_edge(run_flow):
    run = run_flow("explicit_prev.ipynb")
    assert set(run["report"].inputs) == {"total", "values"}
    assert not any("scratch" in t.artifacts for t in run.tasks)  # the skipped cell never ran
    assert run.metrics == {"total": 5, "root": pytest.approx(5 ** 0.5)}


def test_foreach_fans_out_and_downstream_gets_lists(run_flow):
    run = run_flow("foreach.ipynb")
    assert len(run["double"].tasks) == 3 and len(run["measure"].tasks) == 4
    assert run["double"].data.doubled == [2, 4, 6]
    assert run["combine"].data.result == 22
    assert run["combine"].data.lengths == [1, 2, 3, 4]


def test_sweep_picks_the_best(run_flow):
    run = run_flow(EXAMPLES / "sweep.ipynb", parameters={"learning_rates": [0.01, 0.1], "alphas": [0.0001]})
    scores = run["train"].data.score
    assert len(scores) == 2
    assert run["pick_best"].data.best_score == max(scores)


def test_parameters_from_cli_and_yaml(store, tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text("start: 10\n")
    run_id = cli("run", SCENARIOS / "linear.ipynb", "-f", params, "--quiet", check=0).stdout.strip()
    assert jupyter_flow.Run(run_id)["e"].data.e == 249
    run_id = cli("run", SCENARIOS / "linear.ipynb", "-f", params, "-p", "start", "5", "--quiet",
                 check=0).stdout.strip()
    assert jupyter_flow.Run(run_id).parameters == {"start": 5}


def test_a_failed_run_exits_1(store):
    proc = cli("run", SCENARIOS / "error_notebook.ipynb", check=1)
    assert "division by zero" in proc.stderr and "jupyter flow resume" in proc.stderr


def test_unpicklable_value_needed_downstream_fails_the_run_by_name(run_flow):
    run = run_flow("unpicklable.ipynb", expect="failed")
    message = run["make"].error["message"]
    assert "'numbers'" in message and "make" in message and "cannot be pickled" in message


def test_unpicklable_value_nobody_reads_is_a_warning(run_flow):
    run = run_flow("unpicklable_unused.ipynb")
    warnings = " ".join(run["make"].task.record["warnings"])
    assert "numbers" in warnings and "lock" in warnings
    assert run["use"].data.m == 5


@pytest.mark.parametrize("args, words", [
    (["run", SCENARIOS / "broken.ipynb"], ["not valid notebook JSON"]),
    (["run", SCENARIOS / "cycle.ipynb"], ["cycle", "a -> b -> a"]),
    (["run", SCENARIOS / "unknown_prev.ipynb"], ["nonexistent"]),
    (["run", SCENARIOS / "bad_tag.ipynb"], ["step:Bad Name"]),
    (["run", SCENARIOS / "bash_with_steps.ipynb"], ["tag 'step:a' needs a Python kernel"]),
    (["run", SCENARIOS / "r_without_irkernel.ipynb"], ["the notebook's kernel 'ir-not-installed'", "not installed"]),
    (["run", SCENARIOS / "two_parameters.ipynb"], ["second parameters cell"]),
    (["run", SCENARIOS / "linear.ipynb", "-p", "nope", "1"], ["no parameter 'nope'", "start"]),
    (["run", SCENARIOS / "linear.ipynb", "-p", "start", "abc"], ["expected an int", "'abc'"]),
    (["run", SCENARIOS / "missing_kernel.ipynb"], ["no_such_kernel", "step 'b'"]),
    (["run", SCENARIOS / "nothing_here.ipynb"], ["no such notebook"]),
])
def test_bad_input_is_one_line_exit_2_and_nothing_run(store, args, words):
    proc = cli(*args)
    assert proc.returncode == 2, proc.stderr
    line = one_line_error(proc)
    for word in words:
        assert word in line
    assert run_dirs(store) == []


def test_bad_input_shows_traceback_only_with_debug(store):
    proc = cli("run", SCENARIOS / "cycle.ipynb", "--debug")
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_unwritable_store_is_refused_before_running(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    proc = cli("run", SCENARIOS / "linear.ipynb", "--store", blocker / "store")
    assert proc.returncode == 2
    assert "not writable" in one_line_error(proc)


def test_undefined_name_warns_before_running(store):
    proc = cli("run", SCENARIOS / "undefined_name.ipynb", check=0)
    assert "step 'b' reads 'offset'" in proc.stderr


def test_help_teaches():
    out = cli("--help", check=0).stdout
    for command in ("run", "dag", "runs", "show", "resume", "cancel", "logs", "artifacts", "gc"):
        assert command in out
    assert "step:NAME" in out
    assert "-p NAME VALUE" in cli("run", "--help", check=0).stdout


def test_one_task_runs_from_a_spec_file(store, tmp_path):
    """`python -m jupyter_flow.execution.task SPEC.json`: the door any other executor can use."""
    import subprocess
    import sys

    from jupyter_flow import runtime

    runner = runtime.prepare(SCENARIOS / "linear.ipynb", store=store)
    runner.begin()
    runner.executor.close()
    task = runtime.Task("a", 0, attempt=1)
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(runner.task_spec(task, {}, {}, None)))
    proc = subprocess.run([sys.executable, "-m", "jupyter_flow.execution.task", spec_file], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["status"] == "succeeded" and record["outputs"]["a"]["preview"] == "2"
    assert jupyter_flow.Run(runner.run_id)["a"].data.a == 2
