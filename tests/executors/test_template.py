"""The executor template (`base.Executor.submit`): what every executor gets right the same way, driven by
small executors that only say how a task is launched, against a real store folder (no kernels needed)."""
from __future__ import annotations

import threading
from concurrent.futures import Future

import pytest

from jupyter_flow.errors import FlowError
from jupyter_flow.execution.control import TaskControl
from jupyter_flow.execution.task import new_record, now
from jupyter_flow.executors.base import NEVER_STARTED, Executor
from jupyter_flow.store import layout, open_store, records


@pytest.fixture
def spec(tmp_path) -> dict:
    return {"store": str(tmp_path / "store"), "flow": "flow", "run_id": "20261207T120000.000-abcdef", "step": "a",
            "index": 0, "attempt": 1, "kernel": "python3"}


def stored(spec: dict) -> dict:
    return open_store(spec["store"]).read_json(layout.task_json(spec["flow"], spec["run_id"], spec["step"], 0))


class Refusing(Executor):
    def __init__(self, error: Exception, **options):
        super().__init__(**options)
        self.error, self.launched = error, 0

    def launch(self, spec, control):
        self.launched += 1
        raise self.error


class Elsewhere(Executor):
    """Runs each task 'on another machine': a thread that writes the task's records itself. Told to stop
    (its future cancelled), it writes its own `cancelled` record with a failure snapshot, as a Dask
    worker does, once `snapshot_taken` is set."""

    def __init__(self, **options):
        super().__init__(**options)
        self.snapshot_taken = threading.Event()

    def launch(self, spec, control):
        launched: Future = Future()
        store = open_store(spec["store"])
        records.write_task(store, new_record(spec, status="running", started=now()))

        def remote():
            self.snapshot_taken.wait(60)
            records.write_task(store, new_record(spec, status="cancelled", ended=now(),
                                                 error={"type": "cancelled", "message": "cancelled"},
                                                 failure={"variables": {"x": "ref"}}))

        launched.add_done_callback(lambda f: threading.Thread(target=remote, daemon=True).start())
        return launched


def test_a_task_stopped_before_it_was_handed_over_never_starts(spec):
    executor = Refusing(RuntimeError("must not be called"))
    control = TaskControl()
    control.stop("cancelled")
    record = executor.submit(spec, control).result(timeout=30)
    assert executor.launched == 0
    assert (record["status"], record["error"]["message"]) == ("cancelled", NEVER_STARTED)
    assert stored(spec)["status"] == "cancelled"  # the store says so too, not only the runtime


@pytest.mark.parametrize("error, status, kind, message", [
    (FlowError("step 'a' needs gpu=1 but no worker offers it"), "failed", "FlowError",
     "step 'a' needs gpu=1 but no worker offers it"),
    (ConnectionError("scheduler gone"), "failed", "ConnectionError",
     "the executor failed to run the task: scheduler gone"),
])
def test_a_refused_or_crashed_launch_ends_with_a_record_saying_why(spec, error, status, kind, message):
    record = Refusing(error).submit(spec, TaskControl()).result(timeout=30)
    assert (record["status"], record["error"]["type"], record["error"]["message"]) == (status, kind, message)
    assert stored(spec)["error"]["message"] == message


def test_a_task_that_failed_where_it_ran_is_a_crash_with_its_error(spec):
    class Failing(Executor):
        def launch(self, spec, control):
            launched: Future = Future()
            launched.set_exception(OSError("worker lost its disk"))
            return launched

    record = Failing().submit(spec, TaskControl()).result(timeout=30)
    assert record["status"] == "failed" and record["error"]["type"] == "OSError"
    assert record["error"]["message"] == "the executor failed to run the task: worker lost its disk"


def test_cancel_stops_a_task_running_elsewhere_and_its_own_record_stands(spec):
    executor = Elsewhere()
    control = TaskControl(grace=5)
    result = executor.submit(spec, control)
    control.stop("cancelled")  # the runtime (or a timeout) stops the task: the template calls off its launch
    assert not result.done() or result.result()["failure"]  # it waits for the task's own record...
    executor.snapshot_taken.set()
    record = result.result(timeout=60)
    assert record["status"] == "cancelled" and record["failure"] == {"variables": {"x": "ref"}}  # ...which stands
    assert stored(spec)["failure"] == {"variables": {"x": "ref"}}
    executor.close()
