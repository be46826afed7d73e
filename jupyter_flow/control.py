"""Stopping a running task cleanly: interrupt the kernel, let the task take its failure snapshot,
and only then kill the kernel.

A kernel ignores an interrupt that arrives while no cell is executing (ipykernel ignores SIGINT when
idle), so one interrupt is not enough: it is lost if it lands before the kernel is ready, between two
cells, or in the instant between papermill asking for a cell and the kernel starting it. So:

- papermill runs the step notebook through the `jupyter_flow` engine, which asks the control before
  every cell; a stopped task runs no further cell (the cell gets a KeyboardInterrupt error);
- while a cell is executing, the control interrupts the kernel, and again (1 s, 2 s, 4 s later) for
  as long as that same cell has not ended;
- only if the cell still runs `grace` seconds after the first interrupt (code that swallows
  KeyboardInterrupt, or a C call that never checks signals) is the kernel killed, without a snapshot.

Once the step's execution has ended (`ended()`), nothing more is sent to the kernel: the task takes
the snapshot in peace and then releases the kernel.
"""
from __future__ import annotations

import signal
import threading
import time

STOPPED_BEFORE_CELL = "stopped before this cell ran"


class TaskControl:
    """Shared between the thread that runs a task and whoever may stop it (the runtime, a timer)."""

    def __init__(self, timeout: float | None = None, grace: float = 10.0):
        self.timeout = timeout
        self.grace = grace
        self.reason: str | None = None
        self.km = None
        self._lock = threading.Lock()
        self._cell: int | None = None  # the index of the cell executing now
        self._cell_ended = threading.Condition(self._lock)
        self._ended = False
        self._stopper: threading.Thread | None = None
        self._timer: threading.Timer | None = None

    # -- the task's side -------------------------------------------------------------------------
    def attach(self, km) -> None:
        """The task's kernel is ready and about to run the step notebook."""
        with self._lock:
            self.km = km
            stopped = self.reason is not None
        if stopped:
            self._start_stopper()
        elif self.timeout:
            self._timer = threading.Timer(self.timeout, self.stop, args=("timed_out",))
            self._timer.daemon = True
            self._timer.start()

    def cell_starting(self, index: int) -> bool:
        """Called before each cell; False: the task is stopping, do not run it."""
        with self._lock:
            if self.reason is not None:
                return False
            self._cell = index
            return True

    def cell_ended(self) -> None:
        with self._lock:
            self._cell = None
            self._cell_ended.notify_all()

    def ended(self) -> None:
        """The step's execution is over (finished, raised, or the kernel died): stop interrupting."""
        with self._lock:
            self._ended = True
            self._cell_ended.notify_all()
        if self._timer:
            self._timer.cancel()

    # -- whoever stops it ------------------------------------------------------------------------
    def stop(self, reason: str) -> None:
        """Ask the task to stop (idempotent; returns at once)."""
        with self._lock:
            if self.reason is None:
                self.reason = reason
            attached = self.km is not None
        if attached:
            self._start_stopper()

    def _start_stopper(self) -> None:
        with self._lock:
            if self._stopper is not None or self._ended:
                return
            self._stopper = threading.Thread(target=self._interrupt_until_stopped, daemon=True,
                                             name="jupyter-flow-stop")
        self._stopper.start()

    def _interrupt_until_stopped(self) -> None:
        deadline = time.monotonic() + self.grace
        wait = 1.0
        with self._lock:
            while not self._ended and self._cell is not None:
                cell = self._cell
                try:
                    self.km.interrupt_kernel()
                except Exception:  # noqa: BLE001 - the kernel is gone already
                    return
                self._cell_ended.wait(min(wait, max(deadline - time.monotonic(), 0)))
                wait *= 2
                if self._ended or self._cell != cell:
                    return  # that cell ended: cell_starting refuses the next one
                if time.monotonic() >= deadline:
                    break
            else:
                return  # no cell is running: the next one will not start
        _hard_kill(self.km)


def _hard_kill(km) -> None:
    """SIGKILL the kernel; the task's papermill notices it died, and the pool cleans up after."""
    try:
        km.signal_kernel(signal.SIGKILL)
    except Exception:  # noqa: BLE001 - it is gone either way
        pass


# -- the papermill engine that asks the control before each cell ------------------------------------
ENGINE = "jupyter_flow"


def register_engine() -> str:
    """Register (once) papermill's nbclient engine with a stop check before every cell."""
    from papermill.engines import NBClientEngine, papermill_engines
    from papermill.exceptions import PapermillException

    try:
        papermill_engines.get_engine(ENGINE)
        return ENGINE
    except PapermillException:
        pass

    class StoppableEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, control: TaskControl | None = None, **kwargs):
            if control is not None:
                _watch_cells(nb_man, control)
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)

    papermill_engines.register(ENGINE, StoppableEngine)
    return ENGINE


def _watch_cells(nb_man, control: TaskControl) -> None:
    from nbclient.exceptions import CellExecutionError
    from nbformat.v4 import new_output

    start, complete = nb_man.cell_start, nb_man.cell_complete

    def cell_start(cell, cell_index=None, **kwargs):
        start(cell, cell_index, **kwargs)
        if not control.cell_starting(cell_index):
            cell.outputs = [new_output("error", ename="KeyboardInterrupt", evalue=STOPPED_BEFORE_CELL, traceback=[])]
            raise CellExecutionError("", "KeyboardInterrupt", STOPPED_BEFORE_CELL)

    def cell_complete(cell, cell_index=None, **kwargs):
        control.cell_ended()
        complete(cell, cell_index, **kwargs)

    nb_man.cell_start, nb_man.cell_complete = cell_start, cell_complete
