"""Kubeflow Pipelines: compile a flow into a KFP v2 pipeline whose components run our tasks.

The pipeline has one component per step (for a foreach, a ParallelFor over the tasks a `fanout`
component lists once the step's list is known), plus `begin`, which records the run in the store
(the notebook copy and run.json) and hands its run id to every step, and `finish`, the pipeline's
exit handler, which marks the run succeeded or failed whatever happened. A step's component
rebuilds the task spec from the store (the run's notebook copy, its parameters and the upstream
task records) through the runtime's Runner and runs `task.run_task`, so a task on Kubeflow writes
the same records, executed notebooks and values as a local one, and reuses the same cache.

Components receive names and ids as arguments; no user code is pasted into generated code: the
notebook travels as data (compressed, base64) in an argument of `begin`. kfp's SubprocessRunner
(local runs) only runs lightweight Python components, so every component is one: a small function
of this module (`install_kfp_package=False`: the image must have `jupyter-flow[kfp]` installed),
the same on the cluster, in `--image`, and locally. `python -m jupyter_flow.kubeflow.pipeline
begin|fanout|step|finish ...` calls the same functions from a shell.
"""
import argparse
import base64
import inspect
import json
import os
import re
import sys
import tempfile
import threading
import zlib
from datetime import datetime, timezone
from pathlib import Path

import nbformat

from jupyter_flow.errors import FlowError, failure_line
from jupyter_flow.flow.dag import build_flow
from jupyter_flow.flow.params import resolve
from jupyter_flow.store import ENV, default_url, layout, open_store, records
from jupyter_flow.store.status import DONE

try:  # the exit handler's input type; kfp is an optional dependency
    from kfp.dsl import PipelineTaskFinalStatus
except ImportError:
    PipelineTaskFinalStatus = "PipelineTaskFinalStatus"

DEFAULT_IMAGE = "python:3.11"
PARAMETER_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "list": list, "dict": dict}
CANCEL_POLL = 1.0  # seconds between a task's looks at the run's cancel marker
KFP_MISSING = "Kubeflow Pipelines needs the kfp SDK: pip install 'jupyter-flow[kfp]'"


# -- the components: one Python function each, shared by the cluster and kfp's local runner ------------
# kfp runs a lightweight component's source alone in the pod, so each imports what it calls itself.
def jf_begin(store: str, job_id: str, notebook: str, path: str, parameters: dict) -> str:
    """Record the run (its notebook copy and run.json, status running); returns its run id."""
    from jupyter_flow.kubeflow.pipeline import begin  # in the pod: kfp runs this function's source alone

    return begin(store, job_id, path, notebook, parameters)


def jf_fanout(store: str, run_id: str, step: str) -> list:
    """The tasks of a foreach step, [{run_id, index}, ...] (its list's length is known once its producer ran)."""
    from jupyter_flow.kubeflow.pipeline import fan_out  # in the pod: kfp runs this function's source alone

    return fan_out(store, run_id, step)


def jf_step(store: str, run_id: str, step: str, index: int):
    """Run one task of the run; fails (so KFP retries or stops downstream) when the task fails."""
    from jupyter_flow.kubeflow.pipeline import run_step  # in the pod: kfp runs this function's source alone

    run_step(store, run_id, step, index, fail=True)


def jf_finish(store: str, flow: str, job_id: str, status: PipelineTaskFinalStatus):
    """Mark the run's final status (the exit handler: it runs whether the steps succeeded or not)."""
    from jupyter_flow.kubeflow.pipeline import finish  # in the pod: kfp runs this function's source alone

    finish(store, flow, job_id, status.state, status.error_message or "")


# -- compiling -------------------------------------------------------------------------------------------
def _kfp():
    try:  # the optional `kfp` extra
        import kfp  # noqa: F401
        from kfp import dsl
    except ImportError:
        raise FlowError(KFP_MISSING) from None
    return dsl


def check_store_url(url: str | None, allow_local: bool = False) -> str:
    """The store URL a cluster's pods write to: an object store (s3://, gs://, ...), never a local path.
    Only the URL is checked: compiling needs no credentials nor the store's fsspec driver."""
    url = str(url or os.environ.get(ENV) or default_url())
    remote = re.match(r"^[a-z][a-z0-9+.-]*://", url) and not url.startswith(("file://", "local://", "memory://"))
    if remote:
        return url
    if not allow_local:
        raise FlowError(f"store {url} is a local folder, which the pods of a Kubeflow cluster cannot see; "
                        "pass --store s3://bucket/prefix (or gs://, or MinIO through s3:// and AWS_ENDPOINT_URL)")
    return open_store(url).url


def pipeline_parameters(flow) -> dict[str, tuple[type, object]]:
    """{name: (type, default)} of the parameters cell values KFP can type (int, float, str, bool, list,
    dict); a None or an expression default is not a pipeline parameter (the notebook's value is used)."""
    return {n: (PARAMETER_TYPES[p.type], p.value) for n, p in flow.parameters.items() if p.type in PARAMETER_TYPES}


def pipeline(notebook, store: str | None = None, image: str = DEFAULT_IMAGE, allow_local_store: bool = False):
    """The KFP pipeline function of `notebook`: compile it with kfp.compiler.Compiler, run it with
    kfp.local, or submit it with kfp.Client.create_run_from_pipeline_func."""
    dsl = _kfp()
    flow = build_flow(notebook)
    local = [n for n, s in flow.steps.items() if s.options.get("executor") == "local"]
    if local:
        raise FlowError(f"step {local[0]!r} is tagged executor:local, which a Kubeflow run cannot honour (no step "
                        "runs on this machine); remove the tag, or run the notebook here with `jupyter flow run`")
    store_url = check_store_url(store, allow_local_store)
    nb = nbformat.read(str(flow.path), as_version=4)
    for cell in nb.cells:  # outputs are no part of the flow; keep the pipeline small
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    # Compressed and base64-encoded: smaller, and no runner can rewrite it on its way (kfp's local runner
    # replaces "python3" in every argument, which would rename the notebook's kernel).
    encoded = base64.b64encode(zlib.compress(nbformat.writes(nb).encode())).decode()
    params = pipeline_parameters(flow)
    component = _components(dsl, image)

    def body(*args):
        values = dict(zip(params, args))
        job = dsl.PIPELINE_JOB_ID_PLACEHOLDER
        final = component["finish"](store=store_url, flow=flow.name, job_id=job)
        _configure(final, "finish")
        with dsl.ExitHandler(final, name="jupyter-flow"):
            begin = component["begin"](store=store_url, job_id=job, notebook=encoded, path=str(flow.path),
                                       parameters=values)
            _configure(begin, "begin")
            tasks = {}
            for name, step in flow.steps.items():
                upstream = [tasks[u] for u in sorted(set(step.prev) | set(step.inputs.values()))]
                tasks[name] = _step_task(dsl, component, store_url, begin.output, name, step, upstream or [begin])
        return None

    body.__name__ = re.sub(r"[^a-z0-9]+", "_", flow.name.lower()).strip("_") or "flow"
    body.__signature__ = inspect.Signature([
        inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=d, annotation=t)
        for n, (t, d) in params.items()])
    body.__annotations__ = {n: t for n, (t, _) in params.items()}
    name = re.sub(r"[^a-z0-9]+", "-", flow.name.lower()).strip("-") or "flow"
    return dsl.pipeline(name=name, description=f"jupyter_flow pipeline of {flow.path.name}")(body)


def _components(dsl, image: str) -> dict:
    make = lambda f: dsl.component(f, base_image=image, install_kfp_package=False)  # noqa: E731
    return {"begin": make(jf_begin), "fanout": make(jf_fanout), "step": make(jf_step), "finish": make(jf_finish)}


def _configure(task, name: str) -> None:
    task.set_display_name(name)
    task.set_caching_options(False)  # our own cache decides what is reused


def _step_task(dsl, component: dict, store: str, run_id, name: str, step, upstream: list):
    if step.foreach:
        fan = component["fanout"](store=store, run_id=run_id, step=name).after(*upstream)
        _configure(fan, f"{name}-items")
        # Each item carries the run id: inside a loop, kfp's local runner misreads outputs of tasks outside it.
        with dsl.ParallelFor(fan.output) as item:
            task = component["step"](store=store, run_id=item.run_id, step=name, index=item.index)
    else:
        task = component["step"](store=store, run_id=run_id, step=name, index=0).after(*upstream)
    _configure(task, name)
    limits = step.options.get("limit", {})
    if "cpu" in limits:
        task.set_cpu_request(str(limits["cpu"])).set_cpu_limit(str(limits["cpu"]))
    if "memory" in limits:
        task.set_memory_request(str(int(limits["memory"]))).set_memory_limit(str(int(limits["memory"])))
    if "gpu" in limits:
        task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(int(limits["gpu"]))
    if step.options.get("retry"):
        task.set_retry(num_retries=step.options["retry"])
    return task


def export(notebook, output: str, store: str | None = None, image: str = DEFAULT_IMAGE,
           allow_local_store: bool = False) -> str:
    """Compile `notebook` into a KFP pipeline YAML at `output`; returns the store URL it writes to."""
    if not str(output).endswith((".yaml", ".yml", ".json")):
        raise FlowError(f"-o {output}: the pipeline file must end in .yaml (or .json)")
    if not Path(output).resolve().parent.is_dir():
        raise FlowError(f"-o {output}: folder {Path(output).resolve().parent} does not exist; create it first")
    url = check_store_url(store, allow_local_store)
    func = pipeline(notebook, store=url, image=image, allow_local_store=True)
    from kfp import compiler  # the optional `kfp` extra, there since pipeline()

    compiler.Compiler().compile(func, str(output))
    return url


# -- what the components do -------------------------------------------------------------------------------
class _Names:
    """What a Runner needs of an executor to build task specs: its name."""
    name = "kfp"


def _runner(store_url: str, run_id: str, workdir: str):
    """A Runner over the run as the store has it: its notebook copy, parameters and task records."""
    from jupyter_flow.runtime import Runner, Task  # start-up time: `export` compiles without the runtime (1.5 s)

    store = open_store(store_url)
    run = records.find_run(store, run_id).to_dict()
    path = Path(workdir) / Path(run["notebook"]).name
    path.write_bytes(store.read_bytes(layout.run_file(run["flow"], run_id, layout.RUN_NOTEBOOK)))
    runner = Runner(build_flow(path), run["parameters"], store, _Names(), run_id=run_id)
    runner.record = run
    here = Path(run["notebook"]).parent
    # the notebook's folder when it is on this machine
    runner.cwd = runner.cache.cwd = str(here if here.is_dir() else workdir)
    by_step: dict[str, list] = {}
    for t in records.list_tasks(store, records.RunRecord.from_dict(run)):
        by_step.setdefault(t.step, []).append(Task(t.step, t.index, status=str(t.status), record=t.to_dict()))
    for step, tasks in by_step.items():
        if step in runner.tasks:
            runner.tasks[step] = sorted(tasks, key=lambda t: t.index)
    return runner


def begin(store_url: str, job_id: str, path: str, notebook: str, parameters: dict) -> str:
    """Record the run (its notebook copy and run.json); `notebook` is the notebook as `pipeline` encodes it.
    The run id starts with the time, as every run id does (listings show the newest first), and ends
    with the KFP job id (`finish` finds the run by it)."""
    from jupyter_flow.runtime import Runner  # start-up time, as in _runner

    with tempfile.TemporaryDirectory(prefix="jupyter-flow-kfp-") as workdir:
        copy = Path(workdir) / Path(path).name
        copy.write_bytes(zlib.decompress(base64.b64decode(notebook)))
        flow = build_flow(copy)
        values = resolve(flow, {n: _from_kfp(flow.parameters[n], v) for n, v in parameters.items()})
        run_id = layout.time_id(f"kfp-{job_id}")
        runner = Runner(flow, values, open_store(store_url), _Names(), run_id=run_id)
        # No process of ours lives as long as the run, so there is no pid or heartbeat to watch: the
        # exit handler (finish) marks the end, whatever happens to the steps.
        runner.record.update(notebook=path, pid=None, heartbeat_interval=None, kfp_job_id=job_id)
        runner.begin()
        runner.record["heartbeat"] = None
        records.write_run(runner.store, runner.record)
    return run_id


def _from_kfp(param, value):
    """A parameter value as the notebook typed it. KFP hands the parameters over as one struct, where
    every number is a float, and a list or dict pipeline input arrives as its JSON text."""
    kind = param.type
    if isinstance(value, str) and kind in ("list", "dict", "int", "float", "bool"):
        value = json.loads(value) if kind != "bool" else value.lower() == "true"
    if kind == "int" and isinstance(value, float) and value.is_integer():
        return int(value)
    if kind == "list" and isinstance(value, list) and all(type(v) is int for v in param.value):
        return [int(v) if isinstance(v, float) and v.is_integer() else v for v in value]
    return value


def fan_out(store_url: str, run_id: str, step: str) -> list:
    with tempfile.TemporaryDirectory(prefix="jupyter-flow-kfp-") as workdir:
        return [{"run_id": run_id, "index": i} for i in range(_runner(store_url, run_id, workdir)._fan_out(step))]


def run_step(store_url: str, run_id: str, step: str, index: int, fail: bool = False) -> dict:
    """Run task `index` of `step` (or reuse an identical earlier one); returns its final record. With
    `fail`, a failed task raises SystemExit (KFP then retries the component, or skips what depends on
    it) unless its step is tagged catch: then the run goes on, as it does locally."""
    from jupyter_flow.runtime import Task, reuse  # start-up time, as in _runner

    with tempfile.TemporaryDirectory(prefix="jupyter-flow-kfp-") as workdir:
        runner = _runner(store_url, run_id, workdir)
        runner.flow.step(step)
        earlier = next((t for t in runner.tasks[step] or [] if t.index == index), None)
        task = Task(step, index)
        if earlier is not None and earlier.status not in DONE:  # KFP retries the component: the next attempt
            old = earlier.record
            task.attempt = old.get("attempt") or 0
            task.attempts = (old.get("attempts") or []) + [
                {k: old.get(k) for k in ("attempt", "status", "error", "started", "ended", "duration")}]
        refs, meta, parts, cache_key, decision = runner.decide(task)
        record = None
        if task.attempt == 0 and decision.old:
            record = runner.cache.take(run_id, step, index, decision, parts, cache_key)
        if not record:
            task.attempt += 1
            record = _run_cancellable(runner, runner.task_spec(task, refs, meta, parts, cache_key, decision.reason))
        if record["status"] == "succeeded" and cache_key:
            reuse.remember(runner.store, runner.flow.name, run_id, step, index, cache_key)
    if fail and record["status"] not in DONE and not runner.flow.steps[step].options.get("catch"):
        error = failure_line(record["error"]) if record.get("error") else ""
        raise SystemExit(f"step {step!r}[{index}] {record['status']}: {error}")
    return record


def _run_cancellable(runner, spec: dict) -> dict:
    """run_task, stopped (its failure snapshot taken) when `jupyter flow cancel` marks the run: no
    process of ours oversees a Kubeflow run, so each task watches the marker itself."""
    from jupyter_flow.execution.task import TaskControl, run_task  # start-up time, as in _runner

    control = TaskControl(spec.get("timeout"))
    done = threading.Event()
    marker = layout.run_file(runner.flow.name, runner.run_id, layout.CANCEL)

    def watch():
        while not runner.store.exists(marker):
            if done.wait(CANCEL_POLL):
                return
        control.stop("cancelled")

    threading.Thread(target=watch, daemon=True, name="jupyter-flow-kfp-cancel").start()
    try:
        return run_task(spec, control=control)
    finally:
        done.set()


def finish(store_url: str, flow: str, job_id: str, kfp_state: str, kfp_error: str = "") -> str | None:
    """Mark the run of KFP job `job_id` ended: succeeded when KFP says so, else failed with the first
    failed task's error. None when `begin` recorded no run (it failed: KFP shows why)."""
    from jupyter_flow.execution.task import now  # start-up time, as in _runner

    found = open_store(store_url).glob(layout.run_json(flow, f"*-kfp-{job_id}"))
    if not found:
        return None
    run_id = layout.parse_run_json(found[0])[1]
    with tempfile.TemporaryDirectory(prefix="jupyter-flow-kfp-") as workdir:
        runner = _runner(store_url, run_id, workdir)
    record = runner.record
    tasks = [t for ts in runner.tasks.values() for t in ts or []]
    for t in tasks:
        record["metrics"].update(t.record.get("metrics") or {})
    failed = [t for t in tasks if t.status not in DONE and not runner.flow.steps[t.step].options.get("catch")]
    done = all(runner.tasks[s] and (all(t.status in DONE for t in runner.tasks[s])
                                    or runner.flow.steps[s].options.get("catch")) for s in runner.flow.steps)
    status = "succeeded" if kfp_state == "SUCCEEDED" and done and not failed else "failed"
    if runner.store.exists(f"{runner.key}/cancel"):
        status = "cancelled"
    if status == "failed" and not record.get("error"):
        first = failed[0] if failed else None
        record["error"] = ({"step": first.step, "index": first.index, "message": failure_line(first.record["error"])
                            if first.record.get("error") else first.status} if first else
                           {"step": None, "index": None, "message": kfp_error or f"the Kubeflow run ended {kfp_state}"})
    record.update(status=status, ended=now())
    start = datetime.fromisoformat(record["created"])
    record["duration"] = round((datetime.now(timezone.utc) - start).total_seconds(), 3)
    records.write_run(runner.store, record)
    return status


# -- `python -m jupyter_flow.kubeflow.pipeline ...`: the entry of every component -------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jupyter_flow.kubeflow.pipeline",
                                     description="The components of a jupyter_flow pipeline on Kubeflow Pipelines.")
    sub = parser.add_subparsers(dest="command", required=True)
    commands = {"begin": ("job_id", "path", "notebook", "parameters"), "fanout": ("run_id", "step"),
                "step": ("run_id", "step", "index"), "finish": ("flow", "job_id", "kfp_state", "kfp_error")}
    for name, options in commands.items():
        p = sub.add_parser(name)
        for option in ("store", *options):
            p.add_argument(f"--{option.replace('_', '-')}", required=option not in ("index", "kfp_error"),
                           type=int if option == "index" else json.loads if option == "parameters" else str,
                           default=0 if option == "index" else "")
    args = vars(parser.parse_args(argv))
    command = args.pop("command")
    args["store_url"] = args.pop("store")
    if command == "begin":
        print(begin(**args))
    elif command == "fanout":
        print(json.dumps(fan_out(**args)))
    elif command == "finish":
        print(finish(**args))
    else:
        run_step(**args, fail=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
