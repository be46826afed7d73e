"""Scheduling decisions that must stay cheap however the DAG is shaped."""
import nbformat

from jupyter_flow.dag import build_flow
from jupyter_flow.runtime import Runner, Task
from jupyter_flow.store import open_store


class CountingExecutor:
    name = "local"

    def __init__(self):
        self.demand = {}

    def set_demand(self, kernel, cwd, count):
        self.demand[kernel] = count


def ladder(path, n=30):
    """Each step reads the two before it: without memoising, "is this step doomed?" takes fib(n) visits."""
    nb = nbformat.v4.new_notebook()
    cells = [("x0 = 1", "s0"), ("x1 = x0", "s1")] + [(f"x{i} = x{i - 1} + x{i - 2}", f"s{i}") for i in range(2, n)]
    nb.cells = [nbformat.v4.new_code_cell(src, metadata={"tags": [f"step:{name}"]}) for src, name in cells]
    nbformat.write(nb, str(path))
    return build_flow(path)


def counting_runner(tmp_path):
    executor = CountingExecutor()
    runner = Runner(ladder(tmp_path / "ladder.ipynb"), {}, open_store(str(tmp_path / "store")), executor)
    runner.visits = 0
    state = runner._step_state

    def counted(name):
        runner.visits += 1
        assert runner.visits < 20_000, "the doomed check revisits ancestors exponentially"
        return state(name)

    runner._step_state = counted
    return runner, executor


def test_one_scheduling_pass_of_a_ladder_visits_each_step_a_few_times(tmp_path):
    """Item 13: nothing failed, so every step's ancestors are all explored (fib(30) visits unmemoised)."""
    runner, executor = counting_runner(tmp_path)
    runner._update_demand()
    assert executor.demand["python3"] == 30
    assert runner.visits < 30 * 30 * 2


def test_a_failed_first_step_of_a_ladder_dooms_the_rest(tmp_path):
    runner, executor = counting_runner(tmp_path)
    runner.tasks["s0"] = [Task("s0", 0, status="failed")]
    runner._update_demand()
    assert executor.demand["python3"] == 0  # every later step is doomed: no kernel is booted for it
