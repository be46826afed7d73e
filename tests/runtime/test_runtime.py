"""Scheduling decisions that must stay cheap however the DAG is shaped."""
import nbformat

from jupyter_flow.executors.base import Executor
from jupyter_flow.flow.dag import build_flow
from jupyter_flow.runtime import Runner, Task
from jupyter_flow.runtime.readiness import Readiness
from jupyter_flow.store import open_store


class CountingExecutor(Executor):
    name = "local"

    def __init__(self):
        self.demand = {}

    def want_kernels(self, kernel, cwd, count, **hints):
        self.demand[kernel] = count


def ladder(path, n=30):
    """Each step reads the two before it: a naive "is this step doomed?" takes fib(n) visits."""
    nb = nbformat.v4.new_notebook()
    cells = [("x0 = 1", "s0"), ("x1 = x0", "s1")] + [(f"x{i} = x{i - 1} + x{i - 2}", f"s{i}") for i in range(2, n)]
    nb.cells = [nbformat.v4.new_code_cell(src, metadata={"tags": [f"step:{name}"]}) for src, name in cells]
    nbformat.write(nb, str(path))
    return build_flow(path)


def test_kernels_are_wanted_for_every_step_not_started(tmp_path):
    executor = CountingExecutor()
    runner = Runner(ladder(tmp_path / "ladder.ipynb"), {}, open_store(str(tmp_path / "store")), executor)
    runner._update_demand()
    assert executor.demand["python3"] == 30


def test_a_failed_first_step_of_a_ladder_dooms_the_rest(tmp_path):
    executor = CountingExecutor()
    runner = Runner(ladder(tmp_path / "ladder.ipynb"), {}, open_store(str(tmp_path / "store")), executor)
    runner.readiness.add_tasks(runner.readiness.ready.popleft(), [Task("s0", 0, status="failed")])
    runner._update_demand()
    assert executor.demand["python3"] == 0  # every later step is doomed: no kernel is booted for it
    assert runner.readiness.doomed == {f"s{i}" for i in range(1, 30)}
    assert not runner.readiness.ready


def test_a_step_is_ready_once_its_last_upstream_step_is_done(tmp_path):
    ready = Readiness(ladder(tmp_path / "ladder.ipynb", n=4))
    assert list(ready.ready) == ["s0"]
    for name in ("s0", "s1", "s2"):
        assert ready.ready.popleft() == name
        ready.add_tasks(name, [Task(name, 0)])
        task = ready.next_task()
        task.status = "succeeded"
        ready.task_ended(task)
    assert list(ready.ready) == ["s3"]
    assert ready.waiting() == {"python3": 1}
