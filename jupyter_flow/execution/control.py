"""Stopping a running task cleanly: interrupt the kernel, let the task take its failure snapshot,
and only then kill the kernel.

An interrupt is a SIGINT to the kernel, and where it lands matters. ipykernel ignores one that
arrives while no cell executes (before the kernel is ready, between two cells), and one that lands
in the kernel's own bookkeeping around a cell aborts the request without a reply, so the cell never
ends for papermill. So:

- papermill runs the step notebook through the `jupyter_flow` engine, which asks the control before
  every cell; a stopped task runs no further cell (the cell gets a KeyboardInterrupt error);
- a cell of the step itself is interrupted at once, and again 1, 3 and 7 s later while that same cell
  still runs (the first interrupt may have been ignored);
- the set-up cells (parameters, shared cells, loading inputs) are short: they are left to finish
  (the next cell is then refused) and only interrupted if they still run `grace` seconds on;
- a cell still running `grace` seconds after the first interrupt (code that swallows
  KeyboardInterrupt, a C call that never checks signals, an aborted request) is given up on: the
  task's `rescue` callback snapshots the kernel from outside if it still answers, then it is killed.

Once the step's execution has ended (`ended()`), nothing more is sent to the kernel: the task takes
the snapshot in peace and then releases the kernel.
"""
from __future__ import annotations

import logging
import signal
import threading
import time

STOPPED_BEFORE_CELL = "stopped before this cell ran"
STEP_ROLES = ("step", "finish")  # the cells of the user's step (see stepbook); the rest is set-up


class TaskControl:
    """Shared between the thread that runs a task and whoever may stop it (the runtime, a timer)."""

    def __init__(self, timeout: float | None = None, grace: float = 10.0):
        self.timeout = timeout
        self.grace = grace
        self.reason: str | None = None
        self.km = None
        self.rescue = None  # called (kernel) when a cell will not stop: snapshot from outside
        self._lock = threading.Lock()
        self._cell: int | None = None  # the index of the cell executing now
        self._role: str | None = None
        self._cell_ended = threading.Condition(self._lock)
        self._ended = False
        self._stopper: threading.Thread | None = None
        self._timer: threading.Timer | None = None

    # -- the task's side -------------------------------------------------------------------------
    def attach(self, km, rescue=None) -> None:
        """The task's kernel is ready and about to run the step notebook."""
        with self._lock:
            self.km, self.rescue = km, rescue
            stopped = self.reason is not None
        if stopped:
            self._start_stopper()
        elif self.timeout:
            self._timer = threading.Timer(self.timeout, self.stop, args=("timed_out",))
            self._timer.daemon = True
            self._timer.start()

    def cell_starting(self, index: int, role: str | None) -> bool:
        """Called before each cell; False: the task is stopping, do not run it."""
        with self._lock:
            if self.reason is not None:
                return False
            self._cell, self._role = index, role
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
        asked = time.monotonic()
        first = None  # when the first interrupt went out
        delay = 1.0
        with self._lock:
            while not self._ended and self._cell is not None:
                cell, now = self._cell, time.monotonic()
                if self._role in STEP_ROLES or now - asked >= self.grace:
                    if first is not None and now - first >= self.grace:
                        break
                    try:
                        self.km.interrupt_kernel()
                    except Exception:  # noqa: BLE001 - the kernel is gone already
                        return
                    first = first or now
                    wait, delay = min(delay, first + self.grace - now), delay * 2
                else:  # a set-up cell: let it finish, the next one is refused
                    wait = asked + self.grace - now
                self._cell_ended.wait(max(wait, 0.01))
                if self._ended or self._cell != cell:
                    return  # that cell ended: cell_starting refuses the next one
            else:
                return  # no cell is running: the next one will not start
            km, rescue = self.km, self.rescue
        if rescue is not None:
            rescue(km)
        _hard_kill(km)


def _hard_kill(km) -> None:
    """SIGKILL the kernel; the task's papermill notices it died, and the pool cleans up after."""
    try:
        km.signal_kernel(signal.SIGKILL)
    except Exception:  # noqa: BLE001 - it is gone either way
        pass


# -- the papermill engine that asks the control before each cell ------------------------------------
ENGINE = "jupyter_flow"


def register_engine() -> str:
    """Register (once) papermill's nbclient engine, with a stop check before every cell and the
    kernel's ready client handed to nbclient (it would otherwise connect and wait for the kernel again)."""
    from papermill.clientwrap import PapermillNotebookClient  # lazy: papermill costs 0.4 s; a cache hit runs no step
    from papermill.engines import NBClientEngine, papermill_engines
    from papermill.exceptions import PapermillException

    try:
        papermill_engines.get_engine(ENGINE)
        return ENGINE
    except PapermillException:
        pass

    class StoppableEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, control: TaskControl | None = None, km=None,
                                     log_output=False, stdout_file=None, stderr_file=None, start_timeout=60,
                                     execution_timeout=None, **kwargs):
            if control is not None:
                _watch_cells(nb_man, control)
            client = PapermillNotebookClient(
                nb_man, km=km, kernel_name=kernel_name, timeout=execution_timeout, startup_timeout=start_timeout,
                log=logging.getLogger("papermill"), log_output=log_output, stdout_file=stdout_file,
                stderr_file=stderr_file)
            client.kc = getattr(km, "ready_client", None)  # None: nbclient makes its own
            return client.execute()

    papermill_engines.register(ENGINE, StoppableEngine)
    return ENGINE


def _watch_cells(nb_man, control: TaskControl) -> None:
    from nbclient.exceptions import CellExecutionError  # lazy: nbclient comes with papermill; a cache hit loads neither
    from nbformat.v4 import new_output

    start, complete = nb_man.cell_start, nb_man.cell_complete

    def cell_start(cell, cell_index=None, **kwargs):
        start(cell, cell_index, **kwargs)
        if not control.cell_starting(cell_index, cell.get("metadata", {}).get("jupyter_flow", {}).get("role")):
            cell.outputs = [new_output("error", ename="KeyboardInterrupt", evalue=STOPPED_BEFORE_CELL, traceback=[])]
            raise CellExecutionError("", "KeyboardInterrupt", STOPPED_BEFORE_CELL)

    def cell_complete(cell, cell_index=None, **kwargs):
        control.cell_ended()
        complete(cell, cell_index, **kwargs)

    nb_man.cell_start, nb_man.cell_complete = cell_start, cell_complete
