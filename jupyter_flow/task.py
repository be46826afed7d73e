"""Run ONE task: papermill on its step notebook in a fresh kernel; record what happened.

The task writes its own record (`task.json`), executed notebook and log into the store, so the
store tells the truth even when the runner that scheduled it dies. On an exception in the step it
takes a failure snapshot of the kernel's variables before the kernel is killed.

`python -m jupyter_flow.task SPEC.json` runs one task from a spec file (any executor can launch it);
the local and Dask executors call `run_task` in a process that has papermill imported already.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone

from . import kernels, stepbook
from .store import open_store, records
from .store.layout import task_key

ATTEMPT_FILES = ("output.ipynb", "log.txt", "failure.json")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class TaskControl:
    """Stops a running task from another thread: interrupt first (so a snapshot can be taken),
    then kill the kernel if it does not stop within `grace` seconds."""

    def __init__(self, timeout: float | None = None, grace: float = 5.0):
        self.timeout = timeout
        self.grace = grace
        self.reason: str | None = None
        self.km = None
        self._timer: threading.Timer | None = None

    def attach(self, km) -> None:
        self.km = km
        if self.reason:
            self.stop(self.reason)
        elif self.timeout:
            self._timer = threading.Timer(self.timeout, self.stop, args=("timed_out",))
            self._timer.daemon = True
            self._timer.start()

    def stop(self, reason: str) -> None:
        self.reason = self.reason or reason
        km = self.km
        if km is None:
            return
        try:
            km.interrupt_kernel()
        except Exception:  # noqa: BLE001 - then kill straight away
            kernels.kill_kernel(km)
            return
        killer = threading.Timer(self.grace, kernels.kill_kernel, args=(km,))
        killer.daemon = True
        killer.start()

    def done(self) -> None:
        if self._timer:
            self._timer.cancel()


def warm_imports() -> None:
    """Import papermill and compile nbformat's schema validator (about 1 s), while kernels boot."""
    from ._imports import fast_notebook_imports

    fast_notebook_imports()
    import nbformat
    import papermill  # noqa: F401

    nbformat.validate(nbformat.v4.new_notebook())


def new_record(spec: dict, **fields) -> dict:
    """The record (task.json) of the task `spec` describes, with `fields` set: the one place its shape is built."""
    return records.TaskRecord(
        run_id=spec["run_id"], flow=spec["flow"], step=spec["step"], index=spec["index"], attempt=spec["attempt"],
        attempts=spec.get("attempts", []), inputs=spec.get("input_meta", {}), executor=spec.get("executor", "local"),
        kernel=spec["kernel"], cache_key=spec.get("cache_key"), foreach=spec.get("foreach"),
    ).to_dict() | fields


def run_task(spec: dict, pool: kernels.KernelPool | None = None, control: TaskControl | None = None) -> dict:
    """Execute the task described by `spec`; returns its final record (also written as task.json)."""
    from ._imports import fast_notebook_imports

    fast_notebook_imports()
    control = control or TaskControl(spec.get("timeout"))
    store = open_store(spec["store"])
    key = task_key(spec["flow"], spec["run_id"], spec["step"], spec["index"])
    workdir = store.local_dir(key) or tempfile.mkdtemp(prefix="jupyter-flow-task-")
    if spec["attempt"] > 1:
        _archive_attempt(store, key, spec["attempt"] - 1)
    for name in ("result.json", "failure.json"):
        if os.path.exists(os.path.join(workdir, name)):
            os.remove(os.path.join(workdir, name))
    record = new_record(spec, status="running", started=now(), host=socket.gethostname(),
                        notebook=f"{key}/output.ipynb")
    records.write_task(store, record)
    t0 = time.monotonic()
    km = None
    try:
        km = pool.acquire(spec["kernel"], spec["cwd"]) if pool else kernels.start_kernel(spec["kernel"], spec["cwd"])
        record["kernel_pid"] = kernels.kernel_pid(km)
        records.write_task(store, record)
        control.attach(km)
        _execute(spec, km, workdir, record, control)
    except Exception as e:  # noqa: BLE001 - whatever broke, the task record says so
        record.update(status=control.reason or "failed",
                      error={"type": e.__class__.__name__, "message": str(e).strip() or repr(e)})
    finally:
        control.done()
        if km is not None and pool is not None:
            pool.release(km)
        elif km is not None:
            kernels.kill_kernel(km)
    record["ended"] = now()
    record["duration"] = round(time.monotonic() - t0, 3)
    for name in ATTEMPT_FILES:  # nothing to copy when the store is local: they were written in place
        if os.path.exists(os.path.join(workdir, name)):
            store.put_file(os.path.join(workdir, name), f"{key}/{name}")
    if store.local_dir(key) != workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    records.write_task(store, record)
    return record


def _execute(spec: dict, km, workdir: str, record: dict, control: TaskControl) -> None:
    import nbformat
    import papermill
    from papermill.exceptions import PapermillExecutionError

    logging.getLogger("papermill").setLevel(logging.CRITICAL)  # the task record tells what happened

    kernel_spec = dict(spec["kernel_spec"], workdir=workdir)
    nb = nbformat.from_dict(stepbook.with_begin(spec["stepbook"], kernel_spec))
    output = os.path.join(workdir, "output.ipynb")
    with open(os.path.join(workdir, "log.txt"), "w", buffering=1) as log:
        try:
            papermill.execute_notebook(
                nb, output, parameters=spec["parameters"], km=km, kernel_name=spec["kernel"],
                progress_bar=False, log_output=False, stdout_file=log, stderr_file=log,
                request_save_on_cell_execute=False)
        except PapermillExecutionError as e:
            _record_failure(e, spec, km, output, workdir, record, control)
            return
        except Exception as e:  # noqa: BLE001 - the kernel died, or nbclient gave up
            exit_code = kernels.kernel_exit(km)
            record.update(status=control.reason or "failed", error=_kernel_death(e, exit_code, control))
            return
    result_path = os.path.join(workdir, "result.json")
    result = _read_json(result_path) or {}
    if os.path.exists(result_path):
        os.remove(result_path)  # its content lives on in task.json
    record.update(status="succeeded", outputs=result.get("outputs", {}), warnings=result.get("warnings", []),
                  metrics=result.get("metrics", {}))


def _record_failure(e, spec: dict, km, output: str, workdir: str, record: dict, control: TaskControl) -> None:
    executed = _read_json(output) or {}
    where = stepbook.failing_cell(executed) or {}
    record["status"] = control.reason or "failed"
    message = e.evalue
    if control.reason == "timed_out":
        message = f"timed out after {control.timeout:g} s (timeout: tag); stopped in the middle of the step"
    elif control.reason == "cancelled":
        message = "cancelled"
    missing = re.fullmatch(r"name '(\w+)' is not defined", message or "")
    ref = spec["kernel_spec"]["inputs"].get(missing.group(1), {}) if missing else {}
    if "missing" in ref:
        message = f"{missing.group(1)!r} is missing: {ref['missing']}"
    record["error"] = {
        "type": e.ename, "message": message, "cell": where.get("cell"), "source_cell": where.get("source_cell"),
        "role": where.get("role"), "traceback": _ANSI.sub("", "\n".join(e.traceback or [])),
    }
    if kernels.kernel_exit(km) is None and where.get("role") != "begin":
        _run_in_kernel(km, "_jf.snapshot()", timeout=300)
    failure = _read_json(os.path.join(workdir, "failure.json"))
    if failure is not None:
        record["failure"] = {"variables": sorted(failure["variables"]), "unpicklable": failure["unpicklable"]}
        record["metrics"] = failure.get("metrics", {})


def _kernel_death(e: Exception, exit_code: int | None, control: TaskControl) -> dict:
    if control.reason == "timed_out":
        message = f"timed out after {control.timeout:g} s (timeout: tag); the kernel was killed"
    elif control.reason == "cancelled":
        message = "cancelled; the kernel was killed"
    elif exit_code is not None and exit_code < 0:
        name = signal.Signals(-exit_code).name
        message = (f"the kernel process was killed by {name}"
                   + (" (out of memory, or kill -9 from outside)" if name == "SIGKILL" else ""))
    else:
        message = f"the kernel died ({e.__class__.__name__}: {str(e).strip() or 'no message'})"
    return {"type": "KernelDied" if not control.reason else control.reason, "message": message,
            "exit_code": exit_code}


def _run_in_kernel(km, code: str, timeout: float) -> None:
    kc = kernels.blocking_client(km)
    try:
        kc.execute_interactive(code, timeout=timeout, output_hook=lambda msg: None, stop_on_error=True)
    except Exception:  # noqa: BLE001 - no snapshot is better than no failure record
        pass
    finally:
        kc.stop_channels()


def _archive_attempt(store, key: str, attempt: int) -> None:
    """Keep the files of an earlier attempt beside the new one, numbered."""
    for name in ATTEMPT_FILES:
        stem, ext = os.path.splitext(name)
        store.move(f"{key}/{name}", f"{key}/{stem}.attempt-{attempt}{ext}")


def _read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print("usage: python -m jupyter_flow.task SPEC.json\nRun one task of a run from its spec file "
              "(written by the runtime); prints the final task record as JSON.")
        return 2
    with open(argv[0]) as f:
        spec = json.load(f)
    record = run_task(spec)
    print(json.dumps(record, indent=1))
    return 0 if record["status"] == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
