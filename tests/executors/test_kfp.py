"""Kubeflow Pipelines: the compiled pipeline, runs through kfp's local runner landing in our store,
and the request `--executor kfp` sends to a cluster's API (a real HTTP server on loopback)."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest
import yaml
from conftest import SCENARIOS, cli, live_log, one_line_error, run_dirs, wait_for

kfp = pytest.importorskip("kfp")


def main_error(capsys, *args) -> str:
    """The one-line error of `jupyter flow ARGS` (exit code 2), run in this process: bad input is
    refused before kfp is asked anything, so no subprocess is needed to see it."""
    from jupyter_flow.cli.main import main

    capsys.readouterr()
    assert main([str(a) for a in args]) == 2
    return one_line_error(SimpleNamespace(stderr=capsys.readouterr().err))


def compiled(path) -> dict:
    return yaml.safe_load(path.read_text())


def tasks_of(spec: dict) -> dict:
    """Every task of the pipeline spec, by display name, whatever DAG (exit handler, loop) holds it; its
    `after` lists the display names of the tasks it waits for (a loop: the step it runs)."""
    tasks = {}
    for component in [spec["root"], *spec["components"].values()]:
        tasks.update(component.get("dag", {}).get("tasks", {}))
    loops = {key: t for key, t in tasks.items() if "parameterIterator" in t}
    names = {key: t["taskInfo"]["name"] for key, t in tasks.items()}
    for key, loop in loops.items():  # the step inside the loop's DAG
        inner = spec["components"][loop["componentRef"]["name"]]["dag"]["tasks"]
        names[key] = next(t["taskInfo"]["name"] for t in inner.values())
    return {t["taskInfo"]["name"]: dict(t, after=sorted(names[d] for d in t.get("dependentTasks", [])))
            for key, t in tasks.items() if key not in loops}


def test_export_compiles_steps_parameters_foreach_limits_and_retries(tmp_path):
    from jupyter_flow.kubeflow.pipeline import export

    out = tmp_path / "foreach.yaml"
    cli("export", SCENARIOS / "foreach.ipynb", "--to", "kfp", "-o", out, "--store", "s3://bucket/flows",
        "--image", "registry.example/flow:1", check=0)
    spec = compiled(out)
    assert spec["pipelineInfo"]["name"] == "foreach"
    assert spec["root"]["inputDefinitions"]["parameters"]["numbers"] == {
        "defaultValue": [1, 2, 3], "isOptional": True, "parameterType": "LIST"}
    tasks = tasks_of(spec)
    assert {"begin", "finish", "double", "sum_doubled", "make_words", "measure", "sum_lengths", "combine"} <= set(tasks)
    iterators = [t for c in [spec["root"], *spec["components"].values()]
                 for t in c.get("dag", {}).get("tasks", {}).values() if "parameterIterator" in t]
    assert len(iterators) == 2  # each foreach step is a ParallelFor over the items its fan-out component lists
    assert {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()} == {
        "registry.example/flow:1"}
    stores = {t["inputs"]["parameters"]["store"]["runtimeValue"]["constant"] for t in tasks.values()
              if "store" in t.get("inputs", {}).get("parameters", {})}
    assert stores == {"s3://bucket/flows"}
    assert tasks["combine"]["after"] == ["begin", "measure", "sum_doubled", "sum_lengths"]  # begin: the run id
    assert tasks["make_words"]["after"] == tasks["double-items"]["after"] == ["begin"]  # parallel branches
    assert tasks["measure-items"]["after"] == ["begin", "make_words"]

    out = tmp_path / "limits.yaml"
    export(SCENARIOS / "kale_limits.ipynb", out, store="gs://bucket/flows")
    resources = [e["container"].get("resources", {}) for e in compiled(out)["deploymentSpec"]["executors"].values()]
    assert {"cpuLimit": 0.5, "cpuRequest": 0.5, "memoryLimit": 2 ** 31 / 1e9, "memoryRequest": 2 ** 31 / 1e9} in [
        {k: r.get(k) for k in ("cpuLimit", "cpuRequest", "memoryLimit", "memoryRequest")} for r in resources]
    assert any(r.get("accelerator", {}).get("resourceType") == "nvidia.com/gpu" for r in resources)

    out = tmp_path / "retry.yaml"
    export(SCENARIOS / "retry.ipynb", out, store="s3://b/p")
    assert [t["retryPolicy"]["maxRetryCount"] for t in tasks_of(compiled(out)).values() if "retryPolicy" in t] == [2]


@pytest.mark.parametrize("notebook, output, store, message", [
    ("foreach.ipynb", "p.yaml", "{tmp}/store", "is a local folder, which the pods of a Kubeflow cluster cannot see"),
    ("foreach.ipynb", "pipeline.txt", "s3://b/p", "must end in .yaml"),
    ("foreach.ipynb", "nowhere/p.yaml", "s3://b/p", "does not exist"),
    ("cycle.ipynb", "p.yaml", "s3://b/p", "cycle among steps"),
])
def test_export_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, notebook, output, store, message):
    error = main_error(capsys, "export", SCENARIOS / notebook, "--to", "kfp", "-o", tmp_path / output,
                       "--store", store.format(tmp=tmp_path))
    assert message in error
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_a_step_kubeflow_cannot_place(notebook_copy, capsys, tmp_path):
    path = notebook_copy("kfp_branches.ipynb")
    nb = json.loads(path.read_text())
    next(c for c in nb["cells"] if "step:base" in c["metadata"].get("tags", []))["metadata"]["tags"].append(
        "executor:local")
    path.write_text(json.dumps(nb))
    error = main_error(capsys, "export", path, "--to", "kfp", "-o", tmp_path / "p.yaml", "--store", "s3://b/p")
    assert "step 'base' is tagged executor:local" in error and not (tmp_path / "p.yaml").exists()


@pytest.fixture
def local_kfp(tmp_path):
    import kfp.local

    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp-root"),
                   raise_on_error=False)


@pytest.mark.slow
def test_local_runner_runs_branches_foreach_and_retries_into_our_store(store, local_kfp, tmp_path):
    from jupyter_flow.kubeflow.pipeline import pipeline
    from jupyter_flow.readers import client

    counter = tmp_path / "counter.txt"
    pipeline(SCENARIOS / "kfp_branches.ipynb", store=store, allow_local_store=True)(
        items=[3, 4, 5], counter_path=str(counter))

    [run_dir] = run_dirs(store)
    run = client.Run(run_dir.name, store)
    assert run.status == "succeeded", client.get_run(store, run.id)
    assert run.parameters == {"items": [3, 4, 5], "counter_path": str(counter)}
    assert run["scale"].data.scaled == [30, 40, 50]
    assert run["total"].data.total == 120 + 11
    flaky = run["flaky"].task  # KFP's retry is the task's next attempt, the first one kept beside it
    assert flaky.attempt == 2 and [a["status"] for a in flaky.record["attempts"]] == ["failed"]
    assert list((run_dir / "flaky" / "0" / "attempts").glob("1-*/output.ipynb"))  # attempt 1's own folder
    assert counter.read_text() == "2"
    executed = run["total"].task.notebook
    assert any("total = sum(scaled) + offset" in "".join(c["source"]) for c in executed["cells"])
    listed = cli("runs", "--format", "json", check=0)
    assert [(r["id"], r["status"]) for r in json.loads(listed.stdout)] == [(run.id, "succeeded")]


@pytest.mark.slow
def test_failed_kubeflow_run_is_recorded_loads_into_a_kernel_and_resumes_locally(store, local_kfp, notebook_copy):
    from jupyter_flow.kubeflow.pipeline import pipeline
    from jupyter_flow.readers import client, into_kernel

    path = notebook_copy("error_notebook.ipynb")
    pipeline(path, store=store, allow_local_store=True)()

    [run_dir] = run_dirs(store)
    run = client.get_run(store, run_dir.name)
    assert run["status"] == "failed"
    assert run["error"]["step"] == "second" and "ZeroDivisionError" in run["error"]["message"]
    assert {t["step"]: t["status"] for t in run["tasks"]} == {"first": "succeeded", "second": "failed"}

    into: dict = {}
    into_kernel.load(run["id"], "second", store=store, into=into)
    assert (into["a"], into["b"]) == (2, 0)

    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if "".join(cell["source"]).startswith("a = x + 1"):
            cell["source"] = "a = x + 1\nb = 1\nc = a / b"
    path.write_text(json.dumps(nb))
    resumed = cli("resume", run["id"], "--quiet", check=0)
    newest = client.list_runs(store, limit=1)[0]
    assert newest["origin_run"] == run["id"] and newest["status"] == "succeeded", resumed.stdout
    assert run["id"].endswith(f"-kfp-{run['kfp_job_id']}") and run["id"] < newest["id"]  # listed in time order
    tasks = {t["step"]: t["status"] for t in client.get_run(store, newest["id"])["tasks"]}
    assert tasks == {"first": "reused", "second": "succeeded", "third": "succeeded"}


@pytest.mark.slow
def test_jupyter_flow_cancel_stops_a_kubeflow_run(store, local_kfp):
    from jupyter_flow.kubeflow.pipeline import pipeline
    from jupyter_flow.readers import client

    func = pipeline(SCENARIOS / "slow.ipynb", store=store, allow_local_store=True)
    runner = threading.Thread(target=func, kwargs={"sleep_s": 600}, daemon=True)
    runner.start()

    def sleeping():
        runs = run_dirs(store)
        return runs[0].name if runs and "sleepy: started" in live_log(runs[0], "sleepy") else None

    run_id = wait_for(sleeping, timeout=300, what="step sleepy to start")
    cli("cancel", run_id, check=0)
    runner.join(timeout=300)
    assert not runner.is_alive()
    run = client.get_run(store, run_id)
    assert run["status"] == "cancelled"
    assert {t["step"]: t["status"] for t in run["tasks"]} == {"start": "succeeded", "sleepy": "cancelled"}
    assert "x" in client.task_artifacts(store, run_id, "sleepy")["failure"]["variables"]  # its snapshot


class _FakeKfpApi(BaseHTTPRequestHandler):
    """The three calls kfp.Client makes to start a run: health, the experiment, the run itself."""
    requests: list = []

    def log_message(self, *args):
        pass

    def _answer(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.requests.append(("GET", self.path, None))
        if "/experiments" in self.path:
            return self._answer({"experiments": [{"experiment_id": "exp-1", "display_name": "Default"}]})
        return self._answer({"multi_user": False})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append(("POST", self.path, body))
        self._answer({"run_id": "4f1c-run", "display_name": body.get("display_name")})


@pytest.fixture
def kfp_api():
    _FakeKfpApi.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeKfpApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _FakeKfpApi.requests
    server.shutdown()
    server.server_close()


def test_executor_kfp_sends_the_compiled_pipeline_and_parameters_to_the_api(kfp_api, tmp_path):
    host, requests = kfp_api
    proc = cli("run", SCENARIOS / "foreach.ipynb", "--executor", "kfp", "--kfp-host", host, "--store",
               "s3://bucket/flows", "--image", "registry.example/flow:1", "-y", "numbers: [4, 5]", check=0)  # -p: text
    assert "run 4f1c-run" in proc.stdout and "--flow foreach --store s3://bucket/flows" in proc.stdout
    assert "-kfp-4f1c-run" in proc.stdout
    [(_, path, body)] = [r for r in requests if r[0] == "POST"]
    assert path == "/apis/v2beta1/runs"
    assert body["experiment_id"] == "exp-1"
    assert body["runtime_config"]["parameters"] == {"numbers": [4, 5]}
    spec = body["pipeline_spec"]
    assert spec["pipelineInfo"]["name"] == "foreach"
    assert {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()} == {
        "registry.example/flow:1"}
    assert not (tmp_path / "store").exists()


def test_executor_kfp_bad_input(kfp_api, capsys, store):
    host, requests = kfp_api
    notebook = SCENARIOS / "foreach.ipynb"
    assert "needs --kfp-host" in main_error(capsys, "run", notebook, "--executor", "kfp", "--store", "s3://b/p")
    assert "local folder" in main_error(capsys, "run", notebook, "--executor", "kfp", "--kfp-host", host)
    assert "nothing answers at --kfp-host" in main_error(
        capsys, "run", notebook, "--executor", "kfp", "--kfp-host", "http://127.0.0.1:9", "--store", "s3://b/p")
    assert "are for --executor kfp" in main_error(capsys, "run", notebook, "--kfp-host", host)
    assert "has no parameter 'nope'" in main_error(
        capsys, "run", notebook, "--executor", "kfp", "--kfp-host", host, "--store", "s3://b/p", "-p", "nope", "1")
    assert not [r for r in requests if r[0] == "POST"] and not run_dirs(store)



def test_kfp_takes_whole_runs_only_and_says_how_in_one_line(store, capsys, tmp_path):
    """Kubeflow runs whole pipelines: asked for the tasks of a run scheduled here (the Python API, batch,
    resume), it is refused before anything is written, with the command that does run a notebook there."""
    import jupyter_flow
    from jupyter_flow.errors import FlowError
    from jupyter_flow.executors import make_executor, names, runs_whole_runs

    assert "kfp" in names() and runs_whole_runs("kfp") and not runs_whole_runs("local")
    usage = "jupyter flow run NOTEBOOK --executor kfp --kfp-host URL --store s3://BUCKET/PREFIX"
    with pytest.raises(FlowError, match="--executor kfp runs whole pipelines, not the tasks of a run") as raised:
        jupyter_flow.run(SCENARIOS / "linear.ipynb", executor="kfp", store=store)
    assert usage in str(raised.value) and "\n" not in str(raised.value)
    with pytest.raises(FlowError, match="runs whole pipelines"):
        make_executor("kfp", host="http://127.0.0.1:9")
    (tmp_path / "grid.yaml").write_text("lr: [0.5]\n")
    error = main_error(capsys, "batch", SCENARIOS / "grid.ipynb", "-f", tmp_path / "grid.yaml", "--executor", "kfp")
    assert "parameter set 1: --executor kfp runs whole pipelines" in error and usage in error
    assert not run_dirs(store) and not (tmp_path / "store" / "batches").exists()
