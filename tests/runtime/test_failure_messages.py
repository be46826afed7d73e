"""A failed run says what happened: the exception type, the step and the user's cell; a kernel that
is not installed is named as such; a notebook in another language runs as one papermill step."""
import json
import sys

import pytest
from conftest import SCENARIOS, cli, one_line_error, run_dirs

pytestmark = pytest.mark.slow


@pytest.fixture
def bash_kernel(tmp_path, monkeypatch):
    """A real non-Python kernel for this test only: the kernelspec `jf-test-bash` (bash_kernel)."""
    pytest.importorskip("bash_kernel")
    spec = tmp_path / "jupyter" / "kernels" / "jf-test-bash"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "bash_kernel", "-f", "{connection_file}"],
        "display_name": "Bash (jupyter_flow tests)", "language": "bash"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))


def test_sys_exit_names_the_exception_the_step_and_the_cell(store):
    proc = cli("run", SCENARIOS / "sysexit.ipynb", check=1)
    assert "step b failed: SystemExit: 1, in cell 4 ('y = x + 1')" in proc.stderr.replace("\n", " ")
    run = json.loads(next(iter(run_dirs(store))).joinpath("run.json").read_text())
    assert run["error"]["message"] == "SystemExit: 1, in cell 4 ('y = x + 1')"


def test_an_unknown_line_magic_says_so(run_flow):
    run = run_flow("unknown_magic.ipynb", expect="failed")
    assert run["b"].error["type"] == "UsageError"
    assert run["b"].error["message"] == "Line magic function `%not_a_magic` not found."
    assert run.error["message"] == "UsageError: Line magic function `%not_a_magic` not found, in cell 3 " \
                                   "('%not_a_magic 3')"


def test_a_notebook_kernel_that_is_not_installed_is_named(store):
    proc = cli("run", SCENARIOS / "r_without_irkernel.ipynb", check=2)
    assert one_line_error(proc).startswith(
        "error: the notebook's kernel 'ir-not-installed' (its metadata, language R) is not installed; "
        "installed kernels:")
    assert "kernel: tag" not in proc.stderr and not run_dirs(store)


def test_a_bash_notebook_without_steps_runs_as_papermill_runs_it(bash_kernel, notebook_copy, run_flow):
    path = notebook_copy("bash_no_steps.ipynb")
    run = run_flow(path, parameters={"greeting": "bye"})
    assert (path.parent / "bash_out.txt").read_text() == "bye world\n"
    executed = run["main"].notebook
    assert any("bye world" in "".join(o.get("text", "")) for c in executed.cells for o in c.get("outputs", []))
    run_flow(path)  # never served from cache: we cannot see what it reads
    assert (path.parent / "bash_out.txt").read_text() == "hello world\n"


def test_a_failing_bash_notebook_says_what_failed_and_where(bash_kernel, run_flow):
    run = run_flow("bash_fails.ipynb", expect="failed")
    assert run.error["message"] == "bash: no_such_command_xyz: command not found, in cell 3 ('no_such_command_xyz')"
    assert run["main"].task.record.get("failure") is None  # no Python snapshot code sent to a bash kernel


def test_a_bash_notebook_with_step_tags_is_refused_in_one_line(bash_kernel, store):
    proc = cli("run", SCENARIOS / "bash_with_steps.ipynb", check=2)
    assert one_line_error(proc) == (
        "error: cell 2 ('x=1'): tag 'step:a' needs a Python kernel, but this notebook's kernel 'jf-test-bash' runs "
        "bash; remove its step tags to run it as one step, as papermill does")
    assert not run_dirs(store)


def test_kale_metrics_of_a_parameter_are_recorded_on_the_run(run_flow):
    run = run_flow("kale_metrics_parameter.ipynb")
    assert run.metrics == {"total": 3.0, "alpha": 0.5}
