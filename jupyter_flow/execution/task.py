"""Run ONE task: papermill on its step notebook in a fresh kernel; record what happened.

The task writes its own record (`task.json`), executed notebook and log into the store, so the
store tells the truth even when the runner that scheduled it dies. Each attempt writes its files to a
folder of its own (layout.attempt_key) that its record names (`files_at`), and its record only
through records.write_task: an attempt that wakes up late (a paused or cut-off Dask worker) can
neither overwrite a newer attempt's record nor its files. On an exception in the step it
takes a failure snapshot of the kernel's variables before the kernel is killed.

`python -m jupyter_flow.execution.task SPEC.json` runs one task from a spec file (any executor can launch it);
the local and Dask executors call `run_task` in a process that has papermill imported already.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import queue
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone

from jupyter_flow.execution import files, kernel_pool, secrets
from jupyter_flow.execution.control import TaskControl, register_engine
from jupyter_flow.flow import containment, languages, stepbook
from jupyter_flow.store import layout, open_store, records
from jupyter_flow.store.status import Status

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")




def warm_imports() -> None:
    """Import papermill and compile nbformat's schema validator (about 1 s), while kernels boot."""
    import nbformat  # warming: imported now, while kernels boot, so that the first task does not wait
    import papermill  # noqa: F401

    nbformat.validate(nbformat.v4.new_notebook())


def new_record(spec: dict, **fields) -> dict:
    """The record (task.json) of the task `spec` describes, with `fields` set: the one place its shape is built."""
    return records.TaskRecord(
        run_id=spec["run_id"], flow=spec["flow"], step=spec["step"], index=spec["index"], attempt=spec["attempt"],
        attempts=spec.get("attempts", []), inputs=spec.get("input_meta", {}), executor=spec.get("executor", "local"),
        kernel=spec["kernel"], cache_key=spec.get("cache_key"), foreach=spec.get("foreach"),
        cache_parts=spec.get("cache_parts"), reason=spec.get("reason"),
        continued={k: v for k, v in spec["continued"].items() if k != "files"} if spec.get("continued") else None,
    ).to_dict() | ({"worker": spec["worker"]} if spec.get("worker") else {}) | fields


def run_task(spec: dict, pool: kernel_pool.KernelPool | None = None, control: TaskControl | None = None) -> dict:
    """Execute the task described by `spec`; returns its final record (also written as task.json)."""
    control = control or TaskControl(spec.get("timeout"))
    store = open_store(spec["store"])
    files_at = layout.attempt_key(spec["flow"], spec["run_id"], spec["step"], spec["index"], spec["attempt"],
                                  uuid.uuid4().hex[:6])
    workdir = store.local_dir(files_at) or tempfile.mkdtemp(prefix="jupyter-flow-task-")
    record = new_record(spec, status=Status.RUNNING, started=now(), host=socket.gethostname(), files_at=files_at,
                        notebook=layout.in_task(files_at, layout.TASK_NOTEBOOK))
    records.write_task(store, record)
    t0 = time.monotonic()
    km = None
    warmup = kernel_pool.warmup_code(spec["store"])  # it also starts recording files before the shared cells run
    if getattr(pool, "warmup", "") is None:  # a first task may ask before the executor hinted its store
        pool.warmup = warmup
    reuse = reuse_key(spec) if hasattr(pool, "recycle") else None  # a pool that keeps kernels for reuse (KernelPool)
    reusable = False  # the task ran contained code on plain inputs, and succeeded: its kernel may serve the next
    try:
        if spec.get("pip"):
            km = _own_env_kernel(spec, record, store)
        elif pool is None:
            km = kernel_pool.start_kernel(spec["kernel"], spec["cwd"], warmup=warmup)
        else:  # a kernel kept for this step's tasks if there is one (reuse is asked of a pool that keeps them only)
            kept = {"reuse": reuse} if reuse else {}
            km = pool.acquire(spec["kernel"], spec["cwd"], spec.get("preload", ()), **kept)
        record["kernel_pid"] = kernel_pool.kernel_pid(km)
        records.write_task(store, record)
        python = stepbook.sets_up_kernel(spec["stepbook"])  # a Python step notebook can be snapshot
        control.attach(km, rescue=(lambda k: _snapshot(k, timeout=300, start_within=3)) if python else None)
        files.restore(store, spec.get("files_in"), spec["cwd"])  # what upstream steps wrote, if not here
        languages.give(store, spec, workdir)  # a step in another language: its inputs in the neutral format
        reusable = _execute(spec, km, workdir, record, control) and reuse is not None
    except Exception as e:  # noqa: BLE001 - whatever broke, the task record says so
        record.update(status=control.reason or Status.FAILED,
                      error={"type": e.__class__.__name__, "message": languages.explain(e, spec)})
    finally:
        control.ended()
        reusable = reusable and control.reason is None and record["status"] == Status.SUCCEEDED
        if km is not None and pool is not None and not spec.get("pip"):
            if not (reusable and pool.recycle(km, reuse, spec["store"])):
                pool.release(km)
        elif km is not None:
            kernel_pool.kill_kernel(km)
    record["ended"] = now()
    record["duration"] = round(time.monotonic() - t0, 3)
    found = _secrets(spec)
    record = found.scrub_json(record)  # an error message or traceback may quote a secret
    for name in layout.TASK_FILES:  # nothing to copy when the store is local: they were written in place
        if os.path.exists(os.path.join(workdir, name)):
            found.scrub_file(os.path.join(workdir, name))  # the local copies too, before any is stored
            store.put_file(os.path.join(workdir, name), layout.in_task(files_at, name))
    if store.local_dir(files_at) != workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    records.write_task(store, record)
    return record


def _secrets(spec: dict) -> secrets.Secrets:
    """The secrets of this environment and those the notebook names (see secrets.py)."""
    return secrets.current(spec.get("kernel_spec", {}).get("secrets", ()))


def _own_env_kernel(spec: dict, record: dict, store):
    """A kernel in the step's own environment (`pip:` tags), built here if no one built it yet."""
    from jupyter_flow.execution import envs  # lazy: it loads importlib.metadata (40 ms); only pip: tags need it

    env = envs.ensure(spec["pip"])
    record["env"] = env.describe()  # the resolved package versions
    records.write_task(store, record)
    return kernel_pool.start_kernel(spec["kernel"], spec["cwd"], warmup=kernel_pool.warmup_code(spec["store"]),
                                python=env.python, env=env.kernel_environ())


def reuse_key(spec: dict) -> tuple | None:
    """The key under which this task's kernel may serve the next task of its step (KernelPool.recycle), or None:
    its step notebook is contained (flow/containment.py: every cell but our begin and finish), it is Python, in
    the runner's environment (no pip: tags), not continued from a failure, and JUPYTER_FLOW_REUSE_KERNELS is
    not 0. Tasks with the same key have the same kernelspec, folder, store, secrets and environment."""
    if os.environ.get("JUPYTER_FLOW_REUSE_KERNELS", "1") == "0" or spec.get("pip") or spec.get("continued") \
            or spec["kernel_spec"].get("snapshot") or stepbook.language(spec["stepbook"]).lower() != "python":
        return None
    sources = tuple("".join(c["source"]) for c in spec["stepbook"]["cells"]
                    if c["metadata"]["jupyter_flow"]["role"] not in ("begin", "finish"))
    if _not_contained(sources):
        return None
    return (spec["kernel"], spec["cwd"], spec["store"], spec["run_id"], spec["step"], spec.get("attempt"),
            json.dumps(spec["kernel_spec"].get("secrets"), sort_keys=True))


@functools.lru_cache(maxsize=64)
def _not_contained(sources: tuple) -> str:
    """Why a step notebook's code is not contained ("" if it is), once per step notebook."""
    why = containment.not_contained(list(sources))
    if why:
        logging.getLogger(__name__).debug("a fresh kernel per task: the step's code is not contained (%s)", why)
    return why


def _execute(spec: dict, km, workdir: str, record: dict, control: TaskControl) -> bool:
    """Run the step notebook; True if it succeeded on plain inputs (in_kernel.plain): its kernel may be reused."""
    import nbformat  # lazy: papermill and nbformat cost 0.4 s; a cache hit runs no step
    import papermill
    from papermill.exceptions import PapermillExecutionError

    logging.getLogger("papermill").setLevel(logging.CRITICAL)  # the task record tells what happened

    kernel_spec = dict(spec["kernel_spec"], workdir=workdir, cwd=spec["cwd"])
    nb = nbformat.from_dict(stepbook.with_begin(spec["stepbook"], kernel_spec))
    output = os.path.join(workdir, layout.TASK_NOTEBOOK)
    found = _secrets(spec)  # printed secrets never reach the log, and leave the notebook as it is written
    with secrets.ScrubbingWriter(open(os.path.join(workdir, layout.TASK_LOG), "w", buffering=1), found) as log:
        try:
            try:
                papermill.execute_notebook(
                    nb, output, parameters=spec["parameters"], km=km, kernel_name=spec["kernel"],
                    engine_name=register_engine(), control=control, progress_bar=False, log_output=False,
                    stdout_file=log, stderr_file=log, request_save_on_cell_execute=False)
            finally:
                found.scrub_file(output)
        except PapermillExecutionError as e:
            control.ended()  # from here on nothing interrupts the kernel: the snapshot runs in peace
            _record_failure(e, spec, km, output, workdir, record, control)
        except Exception as e:  # noqa: BLE001 - the kernel died, or nbclient gave up
            control.ended()
            exit_code = kernel_pool.kernel_exit(km)
            said = kernel_pool.kernel_output(km) if exit_code is not None else ""
            record.update(status=control.reason or Status.FAILED, error=_kernel_death(e, exit_code, control, said))
            languages.collect(spec, workdir)
            _read_failure(workdir, record)  # a stuck cell's kernel was snapshot from outside before it was killed
        if record["error"]:  # the log ends with what went wrong, as the terminal would have shown it
            error = record["error"]
            log.write(f"\n{error.get('traceback') or error['type'] + ': ' + error['message']}\n")
            return False
    control.ended()
    languages.collect(spec, workdir)  # a step in another language: store what it wrote
    result_path = os.path.join(workdir, layout.TASK_RESULT)
    if not os.path.exists(result_path) and stepbook.sets_up_kernel(spec["stepbook"]):
        error = _stopped_early(spec, _read_json(output) or {})
        if error.pop("ended_notebook", False):  # papermill's own case: the notebook ends there, successfully
            record.update(status=Status.SUCCEEDED, warnings=[error["message"]])
        else:
            record.update(status=Status.FAILED, error=error)
        return False
    result = _read_json(result_path) or {}
    if os.path.exists(result_path):
        os.remove(result_path)  # its content lives on in task.json
    record.update(status=Status.SUCCEEDED, outputs=result.get("outputs", {}), warnings=result.get("warnings", []),
                  metrics=result.get("metrics", {}), files=_with_earlier(spec, result.get("files", {})),
                  packages=result.get("packages", {}))
    return bool(result.get("plain_inputs"))


def _with_earlier(spec: dict, used: dict) -> dict:
    """The files a continued step used: those its failed run's earlier cells wrote, then its own."""
    earlier = (spec.get("continued") or {}).get("files")
    if not earlier:
        return used
    written = {path: meta for path, meta in (earlier.get("written") or {}).items()
               if path not in (used.get("removed") or [])}
    return dict(used, read={**(earlier.get("read") or {}), **(used.get("read") or {})},
                written={**written, **(used.get("written") or {})})


def _record_failure(e, spec: dict, km, output: str, workdir: str, record: dict, control: TaskControl) -> None:
    executed = _read_json(output) or {}
    where = stepbook.failing_cell(executed) or {}
    started = where.get("role") in ("step", "finish")  # else it stopped before the step's first cell
    record["status"] = control.reason or Status.FAILED
    ename, message = _exception(e, executed, where)
    if control.reason == Status.TIMED_OUT:
        message = f"timed out after {control.timeout:g} s (timeout: tag); stopped in the middle of the step"
    elif control.reason == Status.CANCELLED:
        message = "cancelled" if started else "cancelled before the step's first cell ran"
    missing = re.fullmatch(r"name '(\w+)' is not defined", message or "")
    ref = spec["kernel_spec"]["inputs"].get(missing.group(1), {}) if missing else {}
    if "missing" in ref:
        message = f"{missing.group(1)!r} is missing: {ref['missing']}"
    record["error"] = {
        "type": ename, "message": message, "cell": where.get("cell"), "source_cell": where.get("source_cell"),
        "role": where.get("role"), "where": where.get("where"),
        "traceback": _ANSI.sub("", "\n".join(e.traceback or [])),
    }
    if kernel_pool.kernel_exit(km) is None and stepbook.sets_up_kernel(executed):  # a Python step notebook
        # Before the step started, the snapshot still holds what the step was given: its parameters and inputs.
        given = {} if started else {"spec": dict(spec["kernel_spec"], workdir=workdir, cwd=spec["cwd"]),
                                    "parameters": spec["parameters"]}
        _snapshot(km, timeout=300, **given)
    languages.collect(spec, workdir)
    stepbook.label_frames(os.path.join(workdir, layout.TASK_FAILURE), executed)
    _read_failure(workdir, record)


def _snapshot(km, timeout: float, start_within: float | None = None, **given) -> None:
    """Take the failure snapshot in the kernel (see in_kernel.snapshot); it writes failure.json."""
    _run_in_kernel(km, languages.snapshot_code(km.kernel_spec.language, given), timeout, start_within)


def _read_failure(workdir: str, record: dict) -> None:
    failure = _read_json(os.path.join(workdir, layout.TASK_FAILURE))
    if failure is not None:
        record["failure"] = {"variables": sorted(failure["variables"]), "unpicklable": failure["unpicklable"],
                             "withheld": failure.get("withheld", {}),
                             "frames": [stepbook.frame_summary(f) for f in failure.get("frames") or []]}
        record.update(metrics=failure.get("metrics", {}), files=failure.get("files", {}),
                      packages=failure.get("packages", {}))


def _exception(e, executed: dict, where: dict) -> tuple[str, str]:
    """(type, message) of the exception. Some errors come with no type: IPython reports an unknown
    magic's UsageError only on stderr (papermill then says "CellExecutionError"), and other kernels
    give only an exit status (bash); the cell's last line of output says what happened."""
    if e.ename not in ("", "CellExecutionError") or where.get("cell") is None:
        return e.ename, e.evalue
    streams = [o for o in executed["cells"][where["cell"]].get("outputs", []) if o.get("output_type") == "stream"]
    text = "".join("".join(o.get("text", "")) for o in ([o for o in streams if o.get("name") == "stderr"] or streams))
    last = text.strip().splitlines()[-1] if text.strip() else ""
    kind, colon, message = last.partition(": ")
    if colon and kind.isidentifier():
        return kind, message
    return e.ename, last or e.evalue or "the cell failed (no message)"


def _stopped_early(spec: dict, executed: dict) -> dict:
    """The step ended without reaching its last cell and without an error: `sys.exit(0)`, which
    papermill takes as the end of the whole notebook. That is fine in the notebook's last step
    (`ended_notebook`); before other steps a pipeline cannot end them, so the step fails."""
    for i, cell in enumerate(executed.get("cells", [])):
        exits = [o for o in cell.get("outputs", []) if o.get("ename") == "SystemExit"]
        if exits:
            where = cell.get("metadata", {}).get("jupyter_flow", {})
            code = exits[0].get("evalue") or "0"
            at = f"cell {(where.get('source_cell') or 0) + 1}"
            if spec.get("ends_notebook") and code == "0":
                return {"ended_notebook": True, "message": f"step {spec['step']!r} called sys.exit(0) in {at}: as "
                        "papermill does, the notebook ends there; nothing it assigned was stored"}
            return {"type": "SystemExit", "cell": i, "source_cell": where.get("source_cell"), "role": where.get("role"),
                    "message": f"step {spec['step']!r} called sys.exit({code}) in {at}: papermill ends the whole "
                               "notebook there, which a pipeline cannot do for the steps after it. Raise an exception "
                               "to fail the step, or put the rest of the step under an if"}
    return {"type": "StoppedEarly", "message": f"step {spec['step']!r} stopped before its last cell ran"}


def _kernel_death(e: Exception, exit_code: int | None, control: TaskControl, said: str = "") -> dict:
    """The error of a task whose kernel died; `said`: the end of what the kernel process itself wrote
    (a forked kernel's stderr is kept for this), its last line added to the message."""
    if control.reason == Status.TIMED_OUT:
        message = f"timed out after {control.timeout:g} s (timeout: tag); the kernel was killed"
    elif control.reason == Status.CANCELLED:
        message = "cancelled; the kernel was killed"
    elif exit_code is not None and exit_code < 0:
        name = signal.Signals(-exit_code).name
        message = (f"the kernel process was killed by {name}"
                   + (" (out of memory, or kill -9 from outside)" if name == "SIGKILL" else ""))
    else:
        message = f"the kernel died ({e.__class__.__name__}: {str(e).strip() or 'no message'})"
        if exit_code:
            message += f", exit status {exit_code}"
    last = next((line.strip() for line in reversed(said.splitlines()) if line.strip()), "")
    if last and not control.reason:
        message += f"; it said last: {last[:300]}"
    return {"type": "KernelDied" if not control.reason else control.reason, "message": message,
            "exit_code": exit_code}


def _run_in_kernel(km, code: str, timeout: float, start_within: float | None = None) -> None:
    """Run `code` in the kernel through a client of our own. With start_within, give up unless the
    kernel starts on it within that many seconds (a kernel still stuck in a cell never will)."""
    kc = kernel_pool.blocking_client(km)
    try:
        msg_id = kc.execute(code, silent=True, store_history=False, stop_on_error=True)
        deadline = time.monotonic() + (start_within or timeout)
        state = None
        while state != "idle":
            if state == "busy" and start_within:
                deadline, start_within = time.monotonic() + timeout, None  # it started: let it finish
            msg = kc.get_iopub_msg(timeout=max(deadline - time.monotonic(), 0.01))
            if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "status":
                state = msg["content"]["execution_state"]
    except (queue.Empty, Exception):  # noqa: BLE001, S110 - no snapshot is better than no failure record
        pass
    finally:
        kc.stop_channels()


def _read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print("usage: python -m jupyter_flow.execution.task SPEC.json\nRun one task of a run from its spec file "
              "(written by the runtime); prints the final task record as JSON.")
        return 2
    with open(argv[0]) as f:
        spec = json.load(f)
    record = run_task(spec)
    print(json.dumps(record, indent=1))
    return 0 if record["status"] == Status.SUCCEEDED else 1


if __name__ == "__main__":
    sys.exit(main())
