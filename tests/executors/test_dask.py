"""The Dask executor against a real cluster: a `dask scheduler` and two `dask worker` processes."""
from __future__ import annotations

import json
import threading

import nbformat
import pytest
from conftest import SCENARIOS as NOTEBOOKS
from conftest import cli, live_log, one_line_error, wait_for
from support.services import dask_cluster, free_port

import jupyter_flow
from jupyter_flow import runtime
from jupyter_flow.errors import FlowError
from jupyter_flow.executors.dask import dask_resources


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    with dask_cluster(tmp_path_factory.mktemp("cluster"), workers=2, nthreads=2) as address:
        yield address


def only_run(store) -> dict:
    result = cli("runs", "--store", store, "--format", "json")
    assert result.returncode == 0, result.stderr
    runs = json.loads(result.stdout)
    assert len(runs) == 1, runs
    return runs[0]


def assert_ran_on_dask(run) -> None:
    assert run.record["executor"] == "dask"
    workers = set()
    for task in run.tasks:
        assert task.record["executor"] == "dask"
        assert task.record["host"]
        assert task.record["worker"].startswith("tcp://127.0.0.1:")
        workers.add(task.record["worker"])
    assert len(workers) <= 2


def check_diamond(run) -> None:
    assert run.status == "succeeded", run.error
    assert run["d"].data.total == 31
    assert_ran_on_dask(run)


def check_foreach(run) -> None:
    assert run.status == "succeeded", run.error
    assert len(run["double"].tasks) == 3 and len(run["measure"].tasks) == 4
    assert run["double"].data.doubled == [2, 4, 6]
    assert run["measure"].data.length == [1, 2, 3, 4]
    assert run["combine"].data.result == 22
    assert_ran_on_dask(run)


@pytest.mark.slow
@pytest.mark.parametrize("name, check", [("diamond", check_diamond), ("foreach", check_foreach)])
def test_cli_runs_on_dask(scheduler, tmp_path, name, check):
    store = tmp_path / "store"
    result = cli("run", NOTEBOOKS / f"{name}.ipynb", "--executor", "dask", "--scheduler", scheduler,
                     "--store", store, "--quiet")
    assert result.returncode == 0, result.stdout + result.stderr
    check(jupyter_flow.Run(only_run(store)["id"], store=store))


@pytest.mark.slow
@pytest.mark.parametrize("name, check", [("diamond", check_diamond), ("foreach", check_foreach)])
def test_api_runs_on_dask(scheduler, tmp_path, name, check):
    check(jupyter_flow.run(NOTEBOOKS / f"{name}.ipynb", store=tmp_path / "store", executor="dask",
                           scheduler=scheduler))


@pytest.mark.slow
def test_unreachable_scheduler_is_one_line_and_writes_nothing(tmp_path):
    store = tmp_path / "store"
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    result = cli("run", NOTEBOOKS / "diamond.ipynb", "--executor", "dask", "--scheduler", address,
                     "--store", store, env={"JUPYTER_FLOW_DASK_TIMEOUT": "2"})
    assert result.returncode == 2
    line = one_line_error(result)
    assert address in line and "dask scheduler" in line and "--scheduler" in line
    assert not list(store.glob("flows/*/runs/*"))


def test_dask_without_scheduler_says_how(tmp_path):
    with pytest.raises(FlowError, match="--scheduler"):
        runtime.prepare(NOTEBOOKS / "diamond.ipynb", executor="dask", store=tmp_path / "store")


@pytest.mark.slow
def test_failed_step_leaves_its_snapshot(scheduler, tmp_path):
    store = tmp_path / "store"
    result = cli("run", NOTEBOOKS / "error_notebook.ipynb", "--executor", "dask", "--scheduler", scheduler,
                     "--store", store, "--quiet")
    assert result.returncode == 1
    run = jupyter_flow.Run(only_run(store)["id"], store=store)
    assert run.status == "failed"
    assert run["first"].status == "succeeded"
    second = run["second"].task.record
    assert second["status"] == "failed" and second["error"]["type"] == "ZeroDivisionError"
    assert {"a", "b"} <= set(second["failure"]["variables"])
    assert second["executor"] == "dask"
    namespace: dict = {}
    jupyter_flow.load(run.id, "second", store=store, into=namespace, quiet=True)
    assert namespace["a"] == 2 and namespace["b"] == 0 and namespace["x"] == 1
    with pytest.raises(Exception, match="did not run"):
        run["third"]


@pytest.mark.slow
def test_timeout_is_enforced_on_the_worker(scheduler, tmp_path):
    run = jupyter_flow.run(NOTEBOOKS / "timeout.ipynb", store=tmp_path / "store", executor="dask",
                           scheduler=scheduler)
    assert run.status == "failed"
    assert run["slow"].status == "timed_out"
    assert run["slow"].duration < 30  # stopped before its 30 s sleep would have ended
    assert "x" in run["slow"].task.record["failure"]["variables"]


def wait_until_running(store, run_id: str, step: str) -> None:
    """Until the step's own code runs on the worker (it prints `sleepy: started` into its live log)."""
    wait_for(lambda: any("sleepy: started" in live_log(d, step) for d in store.glob(f"flows/*/runs/{run_id}")),
             what=f"step {step} to run")


@pytest.mark.slow
@pytest.mark.parametrize("how", ["cancel marker", "runner stops"])
def test_cancel_stops_the_kernel_on_the_worker(scheduler, tmp_path, how):
    store = tmp_path / "store"
    handle = runtime.start_run(NOTEBOOKS / "slow.ipynb", parameters={"sleep_s": 600}, store=store, executor="dask",
                               scheduler=scheduler)
    wait_until_running(store, handle.run_id, "sleepy")
    if how == "cancel marker":  # `jupyter flow cancel` from another process writes the marker
        result = cli("cancel", handle.run_id, "--store", store)
        assert result.returncode == 0, result.stderr
    else:  # Ctrl-C in the CLI, or the server's cancel button: the runner stops its task controls
        handle.cancel()
    assert handle.wait(240) == "cancelled"
    run = jupyter_flow.Run(handle.run_id, store=store)
    assert run.status == "cancelled"
    sleepy = run["sleepy"].task.record
    assert sleepy["status"] == "cancelled", sleepy
    record = next(store.glob(f"flows/slow/runs/{run.id}/sleepy/0/task.json"))
    final = wait_for(lambda: (lambda r: r if r["status"] != "running" else None)(json.loads(record.read_text())),
                     what="the worker's own final record")  # written a moment after the runner's
    assert final["status"] == "cancelled"
    assert {"x", "sleep_s"} <= set(final["failure"]["variables"])  # interrupted on the worker, then snapshot


@pytest.mark.slow
def test_limits_do_not_block_a_cluster_without_resources(scheduler, tmp_path):
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["step:a", "limit:cpu:2", "limit:memory:1Gi"]}),
        nbformat.v4.new_code_cell("y = x + 1", metadata={"tags": ["step:b", "limit:gpu:1"]}),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "limits.ipynb"
    nbformat.write(nb, path)
    done = {}
    thread = threading.Thread(target=lambda: done.setdefault("run", jupyter_flow.run(
        path, store=tmp_path / "store", executor="dask", scheduler=scheduler)), daemon=True)
    thread.start()
    thread.join(120)
    assert "run" in done, "a task with limit: tags never got a worker"
    assert done["run"].status == "succeeded" and done["run"]["b"].data.y == 2


# -- the limit: -> resources= rule (no cluster needed) ------------------------------------------------
def test_resources_only_for_names_the_cluster_declares():
    limit = {"cpu": 2, "memory": 4 * 2**30, "gpu": 1}  # as the tag parser gives them
    assert dask_resources(limit, [{}, {}]) == {}
    assert dask_resources(limit, [{"memory": 8 * 2**30}, {}]) == {"memory": 4 * 2**30}
    assert dask_resources(limit, [{"cpu": 4, "gpu": 1}]) == {"cpu": 2.0, "gpu": 1.0}
    assert dask_resources(limit, [{"GPU": 1}, {}]) == {"GPU": 1.0}  # `dask worker --resources GPU=1`
    with pytest.raises(FlowError, match="gpu=1.*largest: 0"):
        dask_resources({"gpu": 1}, [{"gpu": 0}])


@pytest.mark.slow
def test_each_worker_keeps_its_kernel_pool_in_a_plugin_across_runs(scheduler, tmp_path):
    """The WorkerPlugin is registered once per cluster; a second run finds it (and its warm pool) as the
    first left it, and no task of a finished run is still registered as running anywhere."""
    from distributed import Client

    def plugin_state(dask_worker) -> dict:  # run in each worker process (defined here: sent by value)
        from jupyter_flow.executors.dask_worker import PLUGIN

        kernels = dask_worker.plugins.get(PLUGIN)
        return {"plugged": kernels is not None, "pool": getattr(kernels, "pool", None) is not None,
                "spares": getattr(kernels, "spares", None), "running": len(getattr(kernels, "controls", {}))}

    for _ in range(2):
        run = jupyter_flow.run(NOTEBOOKS / "linear.ipynb", store=tmp_path / "store", executor="dask",
                               scheduler=scheduler)
        assert run.status == "succeeded"
    used = {t.record["worker"] for t in run.tasks}
    with Client(scheduler, timeout=30, set_as_default=False) as client:
        states = client.run(plugin_state)
    assert set(states) >= used
    assert all(s["plugged"] and s["spares"] == 2 and s["running"] == 0 for s in states.values()), states
    assert all(states[w]["pool"] for w in used), states  # papermill imported and kernels kept warm there
