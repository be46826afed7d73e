"""Fast units for stopping a task (execution/control.py), without a kernel or papermill: a fake kernel
manager records what TaskControl sends it (interrupt_kernel, signal_kernel), and the tests wait for
states (Events, polled predicates), never for a duration.

The schedule of interrupts (again 1, 2 and 4 s later; `grace` s before giving up) is checked on a
fast clock: control.py's `time.monotonic` and its condition's waits run FAST times faster, so ten
seconds of its schedule take half a second.
"""
from __future__ import annotations

import signal
import threading
import time
import types

import pytest
from conftest import wait_for
from nbclient.exceptions import CellExecutionError
from nbformat.v4 import new_code_cell

from jupyter_flow.execution import control
from jupyter_flow.execution.control import STOPPED_BEFORE_CELL, TaskControl

FAST = 20  # the fast clock: 1 s of control.py's time is 50 ms
WAIT = 5.0  # only turns a hang into a failure (real seconds)


class FakeKernel:
    """A kernel manager that records what it is sent, with the (control.py) time it was sent at."""

    def __init__(self, gone: bool = False):
        self.calls: list[tuple[str, float]] = []
        self.gone = gone
        self.interrupted = threading.Event()
        self.killed = threading.Event()
        self._lock = threading.Lock()

    def _record(self, what: str) -> None:
        with self._lock:
            self.calls.append((what, control.time.monotonic()))

    def interrupt_kernel(self) -> None:
        if self.gone:
            raise RuntimeError("no such kernel")
        self._record("interrupt")
        self.interrupted.set()

    def signal_kernel(self, signum) -> None:
        self._record("kill" if signum == signal.SIGKILL else f"signal {signum}")
        if signum == signal.SIGKILL:
            self.killed.set()

    def shutdown_kernel(self, *args, **kwargs) -> None:  # never expected: the pool releases kernels
        self._record("shutdown")

    def sent(self) -> list[str]:
        with self._lock:
            return [what for what, _ in self.calls]

    def times(self, what: str) -> list[float]:
        with self._lock:
            return [t for w, t in self.calls if w == what]


class Rescue:
    """The task's `rescue` callback: records that it was called, with which kernel, before the kill or not."""

    def __init__(self, km: FakeKernel):
        self.km, self.called = km, threading.Event()
        self.kernel = None
        self.killed_before = None

    def __call__(self, kernel) -> None:
        self.kernel, self.killed_before = kernel, self.km.killed.is_set()
        self.km._record("rescue")
        self.called.set()


def attached(rescued: bool = False, **options) -> tuple[FakeKernel, Rescue | None, TaskControl]:
    """A TaskControl(**options) attached to a fresh fake kernel, with a Rescue callback if `rescued`."""
    km = FakeKernel()
    rescue = Rescue(km) if rescued else None
    ctl = TaskControl(**options)
    ctl.attach(km, rescue)
    return km, rescue, ctl


def stopper_done(ctl: TaskControl) -> None:
    """Wait for the thread that interrupts (if one started) to give up or return."""
    if ctl._stopper is not None:
        ctl._stopper.join(WAIT)
        assert not ctl._stopper.is_alive(), "the stopper thread still runs"


@pytest.fixture
def fast_clock(monkeypatch):
    """control.py's clock and its waits, FAST times faster (its Timer, the timeout, stays in real time);
    the waits are recorded, so a test knows when the stopper is waiting."""

    waits = types.SimpleNamespace(timeouts=[], started=threading.Event())

    class FastCondition:
        def __init__(self, lock):
            self._cond = threading.Condition(lock)

        def wait(self, timeout=None):
            waits.timeouts.append(timeout)
            waits.started.set()
            return self._cond.wait(None if timeout is None else timeout / FAST)

        def notify_all(self):
            self._cond.notify_all()

    monkeypatch.setattr(control, "time", types.SimpleNamespace(monotonic=lambda: time.monotonic() * FAST))
    monkeypatch.setattr(control, "threading", types.SimpleNamespace(
        Lock=threading.Lock, Thread=threading.Thread, Timer=threading.Timer, Condition=FastCondition))
    return waits  # the stopper's waits (control.py seconds), and an Event set when it first waits


# -- timeout and reasons -------------------------------------------------------------------------------
def test_a_timeout_stops_the_running_step_cell_as_timed_out():
    km, _, ctl = attached(timeout=0.05, grace=5)
    assert ctl.cell_starting(3, "step")
    assert km.interrupted.wait(WAIT), "the timeout sent no interrupt"
    assert ctl.reason == "timed_out"
    ctl.cell_ended()  # the interrupted cell ends
    assert ctl.cell_starting(4, "step") is False  # and the next one does not run
    ctl.ended()
    stopper_done(ctl)
    assert km.sent() == ["interrupt"]


def test_a_task_that_ends_before_its_timeout_is_not_stopped():
    km, _, ctl = attached(timeout=5.0)
    assert ctl.cell_starting(0, "step")
    ctl.cell_ended()
    ctl.ended()
    ctl._timer.join(WAIT)  # cancelled: its thread ends without calling stop
    assert not ctl._timer.is_alive()
    assert ctl.reason is None
    assert km.sent() == []


def test_the_first_reason_stands():
    ctl = TaskControl()
    ctl.stop("cancelled")
    ctl.stop("timed_out")
    assert ctl.reason == "cancelled"


def test_a_task_stopped_before_its_kernel_is_ready_runs_no_cell_and_sends_nothing():
    km = FakeKernel()
    ctl = TaskControl(timeout=0.05, grace=5)
    ctl.stop("cancelled")  # nothing to interrupt yet: returns at once
    assert ctl._stopper is None
    ctl.attach(km)  # the kernel is ready: no cell runs, so nothing is sent ...
    stopper_done(ctl)
    assert ctl.cell_starting(0, "parameters") is False  # ... and the first cell is refused
    assert km.sent() == []
    assert ctl.reason == "cancelled"  # the timeout timer was never started over the cancel
    assert ctl._timer is None


def test_a_stopped_task_runs_no_further_cell_through_the_engine():
    """The papermill engine's hook: a refused cell gets a KeyboardInterrupt error output and raises."""
    started, completed = [], []
    nb_man = types.SimpleNamespace(cell_start=lambda cell, index, **kw: started.append(index),
                                   cell_complete=lambda cell, index, **kw: completed.append(index))
    ctl = TaskControl(grace=5)
    control._watch_cells(nb_man, ctl)
    first = new_code_cell("x = 1", metadata={"jupyter_flow": {"role": "step"}})
    nb_man.cell_start(first, cell_index=0)
    nb_man.cell_complete(first, cell_index=0)
    assert completed == [0]

    ctl.stop("cancelled")
    second = new_code_cell("y = 2", metadata={"jupyter_flow": {"role": "step"}})
    with pytest.raises(CellExecutionError):
        nb_man.cell_start(second, cell_index=1)
    assert [(o.output_type, o.ename, o.evalue) for o in second.outputs] == [
        ("error", "KeyboardInterrupt", STOPPED_BEFORE_CELL)]
    assert first.get("outputs", []) == []


# -- interrupts to a step cell -----------------------------------------------------------------------
def test_a_running_step_cell_is_interrupted_at_once_then_again_then_rescued_and_killed(fast_clock):
    km = FakeKernel()
    rescue = Rescue(km)
    grace = 10.0  # control.py seconds: half a second here
    ctl = TaskControl(grace=grace)
    ctl.attach(km, rescue)
    assert ctl.cell_starting(5, "step")
    asked = control.time.monotonic()
    ctl.stop("cancelled")
    assert km.killed.wait(WAIT), "the cell that never ends was not killed"
    stopper_done(ctl)

    interrupts = km.times("interrupt")
    assert interrupts[0] - asked < 1.0  # at once
    gaps = [b - a for a, b in zip(interrupts, interrupts[1:])]
    assert len(gaps) >= 2 and gaps[0] >= 1.0 and gaps[1] >= 2.0 and gaps[1] > gaps[0], gaps  # 1, 2, 4 s later
    assert all(t - interrupts[0] < grace for t in interrupts)
    # given up `grace` after the first interrupt: the rescue snapshot first, then the kill
    assert km.sent()[-2:] == ["rescue", "kill"]
    assert km.times("kill")[0] - interrupts[0] >= grace
    assert rescue.kernel is km and rescue.killed_before is False


def test_a_step_cell_that_ends_after_the_first_interrupt_is_not_interrupted_again(fast_clock):
    km, rescue, ctl = attached(rescued=True, grace=10.0)
    assert ctl.cell_starting(5, "finish")  # the step's last cell is the step's too
    ctl.stop("cancelled")
    assert km.interrupted.wait(WAIT)
    ctl.cell_ended()
    stopper_done(ctl)
    assert ctl.cell_starting(6, "step") is False
    assert km.sent() == ["interrupt"]
    assert not rescue.called.is_set()


def test_the_interrupts_are_repeated_only_while_the_same_cell_runs(fast_clock):
    """A new cell cannot start once stopped, so the cell index the stopper watches never changes under it;
    ending the cell is what ends the interrupts, whatever the wait it is in."""
    km, _, ctl = attached(grace=10.0)
    assert ctl.cell_starting(2, "step")
    ctl.stop("cancelled")
    wait_for(lambda: len(km.times("interrupt")) >= 2, WAIT, "a second interrupt")
    ctl.cell_ended()
    stopper_done(ctl)
    assert km.sent() == ["interrupt", "interrupt"]


# -- set-up cells ----------------------------------------------------------------------------------
def test_a_set_up_cell_is_left_to_finish_within_grace(fast_clock):
    km, rescue, ctl = attached(rescued=True, grace=10.0)
    assert ctl.cell_starting(0, "parameters")
    ctl.stop("cancelled")
    assert fast_clock.started.wait(WAIT)  # the stopper waits for the set-up cell, without interrupting it,
    assert fast_clock.timeouts[0] > 9.0  # for the rest of `grace`
    assert km.sent() == []
    ctl.cell_ended()  # it finished by itself
    stopper_done(ctl)
    assert ctl.cell_starting(1, "step") is False  # the next one is refused
    assert km.sent() == []
    assert not rescue.called.is_set()


def test_a_set_up_cell_still_running_after_grace_is_interrupted_then_rescued_and_killed(fast_clock):
    km = FakeKernel()
    rescue = Rescue(km)
    grace = 2.0
    ctl = TaskControl(grace=grace)
    ctl.attach(km, rescue)
    assert ctl.cell_starting(1, None)  # a shared cell (no role of the step's)
    asked = control.time.monotonic()
    ctl.stop("cancelled")
    assert km.killed.wait(WAIT)
    stopper_done(ctl)
    interrupts = km.times("interrupt")
    assert interrupts and interrupts[0] - asked >= grace  # not before `grace`
    assert km.sent()[-2:] == ["rescue", "kill"]
    assert km.times("kill")[0] - interrupts[0] >= grace
    assert rescue.kernel is km


def test_without_a_rescue_callback_the_cell_that_never_ends_is_still_killed(fast_clock):
    km, _, ctl = attached(grace=1.0)
    assert ctl.cell_starting(4, "step")
    ctl.stop("timed_out")
    assert km.killed.wait(WAIT)
    stopper_done(ctl)
    assert km.sent()[0] == "interrupt" and km.sent()[-1] == "kill"
    assert "shutdown" not in km.sent()


# -- after the step's execution ended ------------------------------------------------------------------
def test_nothing_is_sent_after_ended_even_while_a_cell_was_being_interrupted(fast_clock):
    km, rescue, ctl = attached(rescued=True, grace=10.0)
    assert ctl.cell_starting(5, "step")
    ctl.stop("cancelled")
    assert km.interrupted.wait(WAIT)
    ctl.ended()  # e.g. the kernel died, or papermill raised: the task takes its snapshot in peace
    stopper_done(ctl)
    ctl.stop("cancelled")  # asked again: still nothing
    assert km.sent() == ["interrupt"]
    assert not rescue.called.is_set()


def test_a_stop_after_ended_sends_nothing():
    km, _, ctl = attached(grace=0.1)
    assert ctl.cell_starting(5, "step")  # papermill's bookkeeping may leave a cell "running" at the end
    ctl.ended()
    ctl.stop("cancelled")
    assert ctl._stopper is None  # no thread was started to interrupt
    assert km.sent() == []
    assert ctl.reason == "cancelled"


def test_a_kernel_gone_already_is_neither_rescued_nor_killed(fast_clock):
    km = FakeKernel(gone=True)
    rescue = Rescue(km)
    ctl = TaskControl(grace=1.0)
    ctl.attach(km, rescue)
    assert ctl.cell_starting(5, "step")
    ctl.stop("cancelled")
    stopper_done(ctl)
    assert km.sent() == []
    assert not rescue.called.is_set()
