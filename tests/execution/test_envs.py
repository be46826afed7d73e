"""Per-step Python environments (`pip:` tags): real uv, real PyPI, real kernels in the built envs."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from conftest import SCENARIOS, cli, one_line_error, wait_for

from jupyter_flow.errors import FlowError
from jupyter_flow.execution import envs
from jupyter_flow.flow.notebook import read


@pytest.fixture(scope="module")
def env_cache(tmp_path_factory):
    """One environment cache for this file's tests (runner, CLI subprocesses and Dask workers see it)."""
    path = str(tmp_path_factory.mktemp("envs"))
    old = os.environ.get(envs.CACHE_ENV)
    os.environ[envs.CACHE_ENV] = path
    yield path
    if old is None:
        del os.environ[envs.CACHE_ENV]
    else:
        os.environ[envs.CACHE_ENV] = old


def record(run, step: str) -> dict:
    """The task's record, as task.json holds it."""
    return next(t for t in run.tasks if t.step == step).record


def built_envs() -> dict:
    """Each cached environment's folder identity: a rebuild renames a new folder into place."""
    return {e["key"]: os.stat(e["path"]).st_ino for e in envs.list_envs()}


def value(run, step: str, name: str):
    return next(t for t in run.tasks if t.step == step).artifacts[name].value


# -- tags ----------------------------------------------------------------------------------------------
def test_pip_tags_become_the_steps_requirements():
    nb = read(SCENARIOS / "pip_envs.ipynb")
    assert nb.steps["old"].options["pip"] == ["six==1.16.0"]
    assert nb.steps["new"].options["pip"] == ["six==1.17.0"]
    assert "pip" not in nb.steps["plain"].options


def test_bad_pip_spec_is_one_line_naming_the_cell(store):
    proc = cli("run", SCENARIOS / "pip_bad_spec.ipynb", check=2)
    line = one_line_error(proc)
    assert "cell 2 ('x = 1')" in line and "'pip:six=>1.16'" in line and "pip:six==1.16.0" in line
    assert not Path(store).exists() or not list(Path(store).glob("flows/*/runs/*"))


def test_pip_and_kernel_on_one_step_is_an_error(notebook_copy):
    import nbformat

    path = notebook_copy("pip_envs.ipynb")
    nb = nbformat.read(path, 4)
    nb.cells[1].metadata.tags.append("kernel:python3")
    nbformat.write(nb, path)
    with pytest.raises(FlowError, match=r"cell 2 .*step 'old' has both pip: and kernel: tags"):
        read(path)


# -- runs ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_env_is_built_while_upstream_steps_run(env_cache, tmp_path, run_flow):
    import nbformat

    envs.remove([], everything=True)
    nb = nbformat.read(SCENARIOS / "pip_envs.ipynb", 4)
    wait = ("import glob, os, time\ndeadline = time.monotonic() + 240\n"  # until the env of `after` exists
            "while not glob.glob(os.path.join(os.environ['JUPYTER_FLOW_ENVS'], '*', 'jupyter-flow-env.json')):\n"
            "    assert time.monotonic() < deadline, 'the environment of the next step was not built meanwhile'\n"
            "    time.sleep(0.1)\nx = 1")
    nb.cells[1:] = [nbformat.v4.new_code_cell(wait, metadata={"tags": ["step:before"]}),
                    nbformat.v4.new_code_cell("import toolz\ny = x",
                                              metadata={"tags": ["step:after", "pip:toolz==1.0.0"]})]
    nbformat.write(nb, tmp_path / "ahead.ipynb")
    run = run_flow(tmp_path / "ahead.ipynb")
    assert value(run, "after", "y") == 1


@pytest.mark.slow
def test_each_step_sees_its_own_versions_and_envs_are_reused(env_cache, run_flow):
    first = run_flow("pip_envs.ipynb")
    assert value(first, "old", "old_version") == "1.16.0"
    assert value(first, "new", "new_version") == "1.17.0"
    assert value(first, "plain", "plain_prefix") == sys.prefix  # the untagged step: the runner's environment
    old, new = record(first, "old")["env"], record(first, "new")["env"]
    assert old["packages"]["six"] == "1.16.0" and new["packages"]["six"] == "1.17.0"
    assert old["requirements"] == ["six==1.16.0"] and "ipykernel" in old["packages"]
    assert "env" not in record(first, "plain")
    built = built_envs()
    assert {old["key"], new["key"]} <= set(built)

    cached = run_flow("pip_envs.ipynb")  # the resolved versions are part of the cache key: it still matches
    assert {t.step: t.status for t in cached.tasks} == {"old": "cached", "new": "cached", "plain": "cached"}
    assert built_envs() == built  # nothing rebuilt


@pytest.mark.slow
def test_a_value_missing_its_package_names_value_steps_and_package(env_cache, run_flow):
    for requirements in (["toolz==1.0.0"], ["six==1.16.0"]):  # cached already when the tests above ran
        envs.ensure(requirements)
    built = built_envs()
    run = run_flow("pip_missing_module.ipynb", expect="failed")
    assert built_envs() == built  # an earlier run's environments are reused, not rebuilt
    assert record(run, "use")["env"]["key"] in built
    error = next(t for t in run.tasks if t.step == "use").error
    assert error["type"] == "ValueNotLoadable"
    message = error["message"]
    assert "'value' from step 'make'" in message and "in step 'use'" in message and "pip:toolz" in message
    assert "failure" in record(run, "use")  # the failure snapshot was taken in the step's own environment


@pytest.mark.slow
def test_a_package_that_does_not_exist_fails_the_step_with_uvs_reason(env_cache, tmp_path, run_flow):
    import nbformat

    nb = nbformat.read(SCENARIOS / "pip_bad_spec.ipynb", 4)
    nb.cells[1].metadata.tags = ["step:a", "pip:jupyter-flow-no-such-package==1.0"]
    nbformat.write(nb, tmp_path / "nowhere.ipynb")
    run = run_flow(tmp_path / "nowhere.ipynb", expect="failed")
    message = run.tasks[0].error["message"]
    assert message.startswith("cannot build the environment for pip:jupyter-flow-no-such-package==1.0: uv pip")
    assert "jupyter-flow-no-such-package" in message.split("failed:", 1)[1]
    assert not envs.list_envs() or all("jupyter-flow-no-such-package" not in " ".join(e["requirements"])
                                       for e in envs.list_envs())


# -- the cache -----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_build_killed_midway_is_never_used_and_concurrent_builds_share_one(env_cache):
    requirements = ["six==1.16.0", "toolz==1.0.0"]
    key = envs.env_key(requirements)
    code = f"from jupyter_flow.execution import envs; print(envs.ensure({requirements!r}).path)"
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True, stdout=subprocess.DEVNULL)
    try:
        wait_for(lambda: any(n.startswith(f".build-{key}-") for n in os.listdir(env_cache)) or proc.poll() is not None,
                 what="the build to start")
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    if not os.path.exists(os.path.join(env_cache, key)):  # killed in time (else it finished: nothing to see)
        assert key not in {e["key"] for e in envs.list_envs()}
    # Two processes at once: one builds, the other waits for it (without the lock, one rename would fail).
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    paths = {proc.communicate()[0].strip() for proc in procs}
    assert [proc.returncode for proc in procs] == [0, 0]
    assert paths == {os.path.join(env_cache, key)}
    assert envs.ensure(requirements).packages["toolz"] == "1.0.0"
    assert not [n for n in os.listdir(env_cache) if n.startswith(f".build-{key}-")]


@pytest.mark.slow
def test_envs_cli_lists_and_removes(env_cache):
    env = envs.ensure(["six==1.16.0"])
    listing = cli("envs", check=0).stdout
    assert env.key[:12] in listing and "six==1.16.0" in listing and "MB" in listing
    listed = json.loads(cli("envs", "--format", "json", check=0).stdout)
    assert {e["key"] for e in listed} >= {env.key}
    assert one_line_error(cli("envs", "rm", check=2)).startswith("error: say which environments to remove")
    assert "no cached environment with key 'zzz'" in one_line_error(cli("envs", "rm", "zzz", check=2))
    assert f"removed 1 environment: {env.key[:12]}" in cli("envs", "rm", env.key[:8], check=0).stdout
    assert env.key not in {e["key"] for e in envs.list_envs()}
    cli("envs", "rm", "--all", check=0)
    assert envs.list_envs() == [] and "no cached environments" in cli("envs", check=0).stdout


# -- Dask: the worker builds the environment ----------------------------------------------------------------
@pytest.mark.slow
def test_dask_workers_build_the_env_where_the_task_runs(env_cache, tmp_path, run_flow):
    from support.services import dask_cluster

    for e in envs.list_envs():  # the worker must build it, not find the runner's
        envs.remove([e["key"]])
    with dask_cluster(tmp_path / "cluster", workers=1, nthreads=2) as address:
        run = run_flow("pip_envs.ipynb", executor="dask", scheduler=address)
    assert value(run, "old", "old_version") == "1.16.0" and value(run, "new", "new_version") == "1.17.0"
    assert {e["requirements"][0] for e in envs.list_envs()} == {"six==1.16.0", "six==1.17.0"}


def test_the_runner_resolves_versions_of_envs_that_workers_build(env_cache):
    # a Dask run's cache key covers the versions its requirements resolve to, though workers build them
    before = envs.list_envs()
    resolved = envs.resolve(["six==1.16.0"]).packages
    assert resolved["six"] == "1.16.0" and resolved["ipykernel"] == metadata.version("ipykernel")
    assert envs.list_envs() == before  # resolved, not built


def test_concurrent_builds_find_uv_however_the_threads_interleave():
    """Two `pip:` steps of one worker build at once; each looks up uv's executable through sysconfig,
    whose first call is not thread-safe before Python 3.13. Replayed 500 times in a fresh interpreter,
    sysconfig reset each time and threads switched as often as Python allows."""
    code = (
        "import sys, sysconfig, threading\n"
        "from jupyter_flow.execution import envs\n"
        "sys.setswitchinterval(1e-6)\n"
        "found, errors = set(), []\n"
        "def look(barrier):\n"
        "    barrier.wait()\n"
        "    try:\n"
        "        found.add(envs._uv_bin())\n"
        "    except Exception as e:\n"
        "        errors.append(repr(e))\n"
        "for _ in range(500):\n"
        "    sysconfig._CONFIG_VARS = None\n"
        "    barrier = threading.Barrier(4)\n"
        "    threads = [threading.Thread(target=look, args=(barrier,)) for _ in range(4)]\n"
        "    [t.start() for t in threads]\n"
        "    [t.join() for t in threads]\n"
        "print(len(found), errors[:3])\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1 []"
